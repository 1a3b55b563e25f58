"""dunning-svc benchmarks on PostgreSQL, each beside its raw baseline in the same run.

1. Projection ingest (events/s): the service's consumer (inbox, projection, case evaluation, timeline, one
   transaction per poll) reading invoice events from the broker, beside a raw aiokafka consume + asyncpg
   batched insert of the same records. Target: >= 50% of the baseline. The two alternate INGEST_ROUNDS times
   (default 3) and the figures are the medians: the raw loop's rate swings by half from one run to the next
   on this 2-core machine (it waits on the broker, which shares the cores), the service's much less. Each round
   also runs the plumbing's floor: the consumer runner with handlers that do nothing (decode, validate, inbox).
2. Scheduler (steps/s): BENCH_DUNNING_CASES cases (default 1,000,000) bulk-loaded with COPY, of which
   BENCH_DUNNING_DUE (default 100,000) are due: time to claim every due case and execute its step (domain
   decision, case update, timeline, outbox row) beside a raw claim-and-update loop over the same table
   (``FOR UPDATE SKIP LOCKED`` + ``UPDATE``, no domain, no outbox). Target: >= 20,000 steps/s. Also the
   database floor of a step: the same loop plus one outbox row and one timeline row per case by COPY (the
   bytes of a reminder the service wrote), with no decision: no scheduler can beat it on this database.
3. Idle scheduler: with nothing due, EXPLAIN of the due query (it must use ix_dunning_case_next_action) and
   the cost of one poll.

    uv run python -m bench dunning        (or: uv run python -m bench.dunning)
Environment: BENCH_DUNNING_EVENTS (default 50000), BENCH_DUNNING_INGEST_ROUNDS (3), BENCH_DUNNING_CASES, BENCH_DUNNING_DUE, BENCH_DUNNING_QUICK=1
(10,000 events, 200,000 cases, 20,000 due: for iterating), DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS (else local PostgreSQL on 127.0.0.1:5432 and the embedded broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from ar_events.broker import EmbeddedBroker
from ar_events.clock import ManualClock
from ar_events.consumer import ConsumerRunner
from ar_events.db import make_engine, make_sessionmaker
from ar_events.envelope import encode, new_event
from ar_events.events import ClientRegistered, DunningState, InvoiceIssued, InvoicePaymentApplied
from ar_events.kafka import ensure_topics, make_producer
from ar_events.money import Money
from ar_events.settings import ConsumerSettings, DatabaseSettings, KafkaSettings
from ar_events.testing import asyncpg_dsn, create_database, drop_database, local_postgres_url
from ar_events.topics import Topic
from bench.procstat import cpu_seconds
from dunning_svc import repository as repo
from dunning_svc.__main__ import migrate
from dunning_svc.bootstrap import CONSUMER, build
from dunning_svc.domain import BlockingTask, DunningCase  # noqa: F401  (documented shape of the bodies)
from dunning_svc.domain.model import case_id_for
from dunning_svc.handlers import INVOICE_TYPES
from dunning_svc.settings import SchedulerSettings, Settings

#: BENCH_DUNNING_QUICK=1: a smaller run for iterating (10,000 events; 200,000 cases of which 20,000 due);
#: the figures to report come from the default (the issue's) sizes
_QUICK = os.environ.get("BENCH_DUNNING_QUICK", "") not in ("", "0")
N_EVENTS = int(os.environ.get("BENCH_DUNNING_EVENTS", "10000" if _QUICK else "50000"))
N_CASES = int(os.environ.get("BENCH_DUNNING_CASES", "200000" if _QUICK else "1000000"))
N_DUE = int(os.environ.get("BENCH_DUNNING_DUE", "20000" if _QUICK else "100000"))
BATCH = 1000
INGEST_ROUNDS = int(os.environ.get("BENCH_DUNNING_INGEST_ROUNDS", "3"))
NOW = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)  # a Monday


# ------------------------------------------------------------------------------------------ CPU per item


class PgCpu:
    """CPU seconds used by the PostgreSQL backends serving one database (local server, /proc): sampled at
    ``start`` and ``stop``; backends that connect in between count from zero."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.before: dict[int, float] = {}
        self.seconds: float | None = None

    async def _sample(self) -> dict[int, float]:
        conn = await asyncpg.connect(self.dsn)
        try:
            pids = [r[0] for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )]  # fmt: skip
        finally:
            await conn.close()
        out: dict[int, float] = {}
        for pid in pids:
            with contextlib.suppress(OSError):  # not local, or gone
                out[pid] = cpu_seconds(pid)
        return out

    async def start(self) -> None:
        self.before = await self._sample()

    async def stop(self) -> None:
        after = await self._sample()
        self.seconds = sum(v - self.before.get(pid, 0.0) for pid, v in after.items()) if after else None


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _per_item_us(seconds: float | None, n: int) -> str:
    return "n/a" if seconds is None or not n else f"{seconds / n * 1e6:,.0f}"


# ------------------------------------------------------------------------------------------ 1. projection


def _ingest_events(n: int) -> list[Any]:
    """Per client: registered, then invoices issued (not yet due) and partly paid: a realistic invoice stream."""
    per_client = 25
    clients = max(1, n // per_client)
    out: list[Any] = []
    for c in range(clients):
        cid = f"cli_{c:06d}"
        out.append(ClientRegistered.model_validate({
            "client_id": cid, "external_id": f"E{c}", "name": f"Client {c}", "segment": "smb",
            "contacts": [{"name": "Paul", "email": "paul@example.com"}], "time_zone": "Europe/Paris", "country": "FR",
        }))  # fmt: skip
        for i in range(12):
            m = Money(amount_minor=10_000 + i, currency="EUR")
            iid = f"inv_{c}_{i}"
            out.append(InvoiceIssued(client_id=cid, invoice_id=iid, number=f"F{c}-{i}", currency="EUR",
                                     issue_date=date(2026, 3, 1), due_date=date(2026, 4, 30), subtotal=m,
                                     tax=Money.zero("EUR"), total=m, amount_due=m))  # fmt: skip
            out.append(InvoicePaymentApplied(client_id=cid, payment_id=f"p{c}-{i}", invoice_id=iid,
                                             amount=Money(amount_minor=5_000, currency="EUR"),
                                             amount_due_after=Money(amount_minor=5_000 + i, currency="EUR"),
                                             applied_at=NOW))  # fmt: skip
    return [new_event(p, source="bench", time=NOW) for p in out[:n]]


async def _produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _raw_consume_insert(
    kafka: KafkaSettings, topic: str, dsn: str, n: int
) -> tuple[float, float, float | None]:
    """Wall seconds, this process's CPU seconds and the database backends' CPU seconds."""
    conn = await asyncpg.connect(dsn)
    pg = PgCpu(dsn)
    await conn.execute(
        "DROP TABLE IF EXISTS raw_event;"
        " CREATE TABLE raw_event (event_id text PRIMARY KEY, client_id text NOT NULL, type text NOT NULL)"
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await pg.start()
        started, cpu0 = time.perf_counter(), time.process_time()
        done = 0
        while done < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
            rows = []
            for recs in batch.values():
                for r in recs:
                    env = json.loads(r.value)
                    rows.append((env["id"], env["subject"], env["type"]))
            if rows:
                async with conn.transaction():
                    await conn.executemany("INSERT INTO raw_event VALUES ($1, $2, $3)", rows)
                done += len(rows)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        await pg.stop()
        return elapsed, cpu, pg.seconds
    finally:
        await consumer.stop()
        await conn.close()


async def _consume_all(runner: ConsumerRunner, db_url: str, n: int) -> tuple[float, float, float | None]:
    """Once ``runner`` has its partitions: wall seconds until it has taken ``n`` events, this process's CPU
    seconds and the database backends' CPU seconds over that time."""
    await asyncio.wait_for(runner.ready.wait(), 60)
    pg = PgCpu(asyncpg_dsn(db_url))
    await pg.start()
    started, cpu0 = time.perf_counter(), time.process_time()
    while runner.stats.processed + runner.stats.duplicates < n:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    await pg.stop()
    return elapsed, cpu, pg.seconds


async def _service_ingest(
    kafka: KafkaSettings, db_url: str, n: int
) -> tuple[float, float, float | None, dict[str, int]]:
    settings = Settings(database=DatabaseSettings(url=db_url), kafka=kafka,
                        consumer=ConsumerSettings(batch_max_records=BATCH))  # fmt: skip
    await asyncio.to_thread(migrate, settings)
    runtime = build(settings, clock=ManualClock(NOW))
    await runtime.load_policies()
    await runtime.start((CONSUMER,))
    try:
        assert runtime.runner is not None
        elapsed, cpu, pg_seconds = await _consume_all(runtime.runner, db_url, n)
        stats = runtime.runner.stats
        return elapsed, cpu, pg_seconds, {"processed": stats.processed, "batches": stats.batches}
    finally:
        await runtime.close()


async def _plumbing_floor(kafka: KafkaSettings, db_url: str, n: int) -> tuple[float, float, float | None]:
    """The consumer runner with handlers that do nothing: every event decoded, validated against the contract and
    recorded in the inbox, one transaction per poll. Any consumer on this plumbing costs at least this."""
    await asyncio.to_thread(migrate, Settings(database=DatabaseSettings(url=db_url)))
    engine = make_engine(db_url)

    async def nothing(session: Any, envelope: Any) -> None:
        return None

    runner = ConsumerRunner(
        "bench-floor", [Topic.INVOICE_EVENTS.value], make_sessionmaker(engine),
        dict.fromkeys(INVOICE_TYPES, nothing), kafka, ConsumerSettings(batch_max_records=BATCH),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        return await _consume_all(runner, db_url, n)
    finally:
        stop.set()
        await task
        await engine.dispose()


# ------------------------------------------------------------------------------------------ 2. scheduler


def _due_case_body(cid: str) -> str:
    """A case 9 days into the smb ladder: step 1 (overdue-1) sent, step 2 (overdue-2, at 8d) now due."""
    case = DunningCase(
        case_id=case_id_for(cid), client_id=cid, state=DunningState.REMINDING, stage=DunningState.REMINDING, cycle=1, level=1,
        reached_step=1, fired_steps=(1,), policy_name="smb", policy_version=1,
        opened_at=NOW - timedelta(days=8), last_message_at=NOW - timedelta(days=8),
    )  # fmt: skip
    return repo.dump_case(case)


async def _load_cases(dsn: str, n_cases: int, n_due: int) -> float:
    """COPY the cases (and the due clients' projection rows) into the migrated database."""
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        profile = ClientRegistered.model_validate({
            "client_id": "X", "external_id": "E", "name": "Client", "segment": "smb",
            "contacts": [{"name": "Paul", "email": "paul@example.com"}], "time_zone": "Europe/Paris", "country": "FR",
        }).model_dump_json()  # fmt: skip
        due_template = _due_case_body("cli_TEMPLATE")
        due_case_id = case_id_for("cli_TEMPLATE")
        idle_template = repo.dump_case(DunningCase.new("cli_TEMPLATE"))
        chunk = 100_000
        for start in range(0, n_cases, chunk):
            rows: list[tuple[Any, ...]] = []
            for i in range(start, min(n_cases, start + chunk)):
                cid = f"cli_{i:07d}"
                case_id = f"case_{i:020d}"
                if i < n_due:
                    body = due_template.replace("cli_TEMPLATE", cid).replace(due_case_id, case_id)
                    rows.append((case_id, cid, "reminding", "reminding", 1, 1, "smb", 1,
                                 NOW - timedelta(seconds=i % 3600), body, NOW))  # fmt: skip
                else:
                    body = idle_template.replace("cli_TEMPLATE", cid).replace(
                        case_id_for("cli_TEMPLATE"), case_id
                    )
                    rows.append((case_id, cid, "current", "current", 0, 0, None, None,
                                 NOW + timedelta(days=1 + i % 60, seconds=i % 3600), body, NOW))  # fmt: skip
            await conn.copy_records_to_table(
                "dunning_case", records=rows,
                columns=["case_id", "client_id", "state", "stage", "cycle", "level", "policy_name", "policy_version",
                         "next_action_at", "body", "updated_at"],
            )  # fmt: skip
        clients = [
            (f"cli_{i:07d}", profile.replace('"X"', f'"cli_{i:07d}"'), 0, 0, NOW) for i in range(n_due)
        ]
        await conn.copy_records_to_table("dunning_client", records=clients,
                                         columns=["client_id", "profile", "late_days_sum", "paid_count", "updated_at"])  # fmt: skip
        invoices = [(f"inv_{i}", f"cli_{i:07d}", f"F-{i}", "EUR", date(2026, 2, 1), date(2026, 3, 7), 250_000,
                     250_000, "open", "[]", None, NOW) for i in range(n_due)]  # fmt: skip
        await conn.copy_records_to_table("dunning_invoice", records=invoices,
                                         columns=["invoice_id", "client_id", "number", "currency", "issue_date",
                                                  "due_date", "total", "amount_due", "status", "disputes",
                                                  "pay_link", "updated_at"])  # fmt: skip
        await conn.execute("ANALYZE dunning_case; ANALYZE dunning_client; ANALYZE dunning_invoice")
    finally:
        await conn.close()
    return time.perf_counter() - started


_RAW_CLAIM = """
WITH due AS (
  SELECT case_id FROM dunning_case WHERE next_action_at IS NOT NULL AND next_action_at <= $1
  ORDER BY next_action_at LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE dunning_case c SET next_action_at = c.next_action_at + interval '3650 days', level = c.level + 1000
FROM due WHERE c.case_id = due.case_id
"""


async def _raw_claim_update(dsn: str) -> tuple[float, int, float | None]:
    conn = await asyncpg.connect(dsn)
    pg = PgCpu(dsn)
    try:
        done = 0
        await pg.start()
        started = time.perf_counter()
        while True:
            async with conn.transaction():
                status = await conn.execute(_RAW_CLAIM, NOW, BATCH)
            n = int(status.split()[-1])
            if n == 0:
                break
            done += n
        elapsed = time.perf_counter() - started
        await pg.stop()
        # put the timers back for the service run
        await conn.execute("UPDATE dunning_case SET next_action_at = next_action_at - interval '3650 days', "
                           "level = level - 1000 WHERE level >= 1000")  # fmt: skip
        await conn.execute("VACUUM ANALYZE dunning_case")
        return elapsed, done, pg.seconds
    finally:
        await conn.close()


_FLOOR_CLAIM = """
WITH due AS (
  SELECT case_id FROM dunning_case WHERE next_action_at IS NOT NULL AND next_action_at <= $1
  ORDER BY next_action_at LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE dunning_case c SET next_action_at = c.next_action_at + interval '3650 days', level = c.level + 1000,
  body = c.body, updated_at = $1
FROM due WHERE c.case_id = due.case_id RETURNING c.case_id, c.client_id
"""


async def _database_floor(dsn: str, n_due: int) -> tuple[float, int, float | None]:
    """The database's share of a step with no decision at all: the raw claim-and-update, plus one outbox row
    (the bytes of a reminder the service wrote) and one timeline row per case, both by binary COPY (the
    cheapest insert there is). Runs after the service: its first n_due timers are put back first."""
    conn = await asyncpg.connect(dsn)
    pg = PgCpu(dsn)
    try:
        topic, typ, value, headers = await conn.fetchrow(
            "SELECT topic, type, value, headers FROM outbox ORDER BY id LIMIT 1"
        )
        kind, tl_type, data = await conn.fetchrow(
            "SELECT kind, type, data FROM dunning_timeline WHERE kind = 'decision_out' ORDER BY id LIMIT 1"
        )
        await conn.execute("DELETE FROM outbox; DELETE FROM dunning_timeline")
        await conn.execute(
            "UPDATE dunning_case SET next_action_at = $1::timestamptz - make_interval(secs => (substr(case_id, 6)::bigint % 3600))"
            " WHERE case_id < $2",
            NOW, f"case_{n_due:020d}",
        )  # fmt: skip
        await conn.execute("VACUUM ANALYZE dunning_case")
        out_cols = ["event_id", "topic", "key", "type", "value", "headers", "created_at"]
        tl_cols = ["client_id", "case_id", "cycle", "at", "kind", "type", "event_id", "data"]
        done = 0
        await pg.start()
        started = time.perf_counter()
        while True:
            async with conn.transaction():
                rows = await conn.fetch(_FLOOR_CLAIM, NOW, BATCH)
                if rows:
                    ids = [uuid.uuid4().hex for _ in rows]
                    await conn.copy_records_to_table("outbox", columns=out_cols, records=[
                        (i, topic, r[1], typ, value, headers, NOW) for i, r in zip(ids, rows, strict=True)
                    ])  # fmt: skip
                    await conn.copy_records_to_table("dunning_timeline", columns=tl_cols, records=[
                        (r[1], r[0], 1, NOW, kind, tl_type, i, data) for i, r in zip(ids, rows, strict=True)
                    ])  # fmt: skip
            if not rows:
                break
            done += len(rows)
        elapsed = time.perf_counter() - started
        await pg.stop()
        return elapsed, done, pg.seconds
    finally:
        await conn.close()


async def _service_scheduler(db_url: str) -> tuple[float, int, int, float, float, float | None]:
    """Wall seconds, steps, outbox rows, idle poll ms, this process's CPU seconds, the backends' CPU seconds."""
    settings = Settings(database=DatabaseSettings(url=db_url), scheduler=SchedulerSettings(batch_size=BATCH))
    runtime = build(settings, clock=ManualClock(NOW))
    await runtime.load_policies()
    assert runtime.scheduler is not None
    sched = runtime.scheduler
    pg = PgCpu(asyncpg_dsn(db_url))
    try:
        await pg.start()
        started, cpu0 = time.perf_counter(), time.process_time()
        while await sched.run_once():
            pass
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        await pg.stop()
        async with runtime.sessionmaker() as session:
            from sqlalchemy import func, select

            from ar_events.tables import TABLES

            outbox = (await session.execute(select(func.count()).select_from(TABLES.outbox))).scalar_one()
        # 3. idle: nothing is due any more (after the autovacuum a production table gets)
        async with runtime.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE dunning_case")
        polls = 50
        t = time.perf_counter()
        for _ in range(polls):
            assert await sched.run_once() == 0
        poll_ms = (time.perf_counter() - t) / polls * 1000
        return elapsed, sched.steps_fired, int(outbox), poll_ms, cpu, pg.seconds
    finally:
        await runtime.close()


async def _explain(dsn: str) -> str:
    """EXPLAIN of the scheduler's claim as it runs (the SKIP LOCKED due query joined to the projection)."""
    sql = repo.PG_CLAIM_WITH_PROJECTION_SQL.replace(":now", "$1").replace(":limit", "$2")
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, NOW, BATCH)
        return "\n".join(r[0] for r in rows)
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------ main


async def main() -> dict[str, Any]:
    server = os.environ.get("DATABASE_URL") or local_postgres_url()
    broker: EmbeddedBroker | None = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = EmbeddedBroker(0)
        await asyncio.to_thread(broker.start)
        bootstrap = broker.bootstrap_servers
    db_raw = await create_database(server, prefix="bench_dun_raw")
    db_sched = await create_database(server, prefix="bench_dun_sched")
    try:
        # 1. projection ingest: raw and service alternate; each service round reads its own copy of the topic
        # into a fresh database (the raw loop re-reads its topic from the start into a fresh table)
        events = _ingest_events(N_EVENTS)
        records = [(e.key, encode(e)) for e in events]
        raw_k = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bd{uuid.uuid4().hex[:8]}.")
        await ensure_topics(raw_k)
        await _produce(raw_k, raw_k.topic(Topic.INVOICE_EVENTS), records)
        raws: list[tuple[float, float, float | None]] = []
        svcs: list[tuple[float, float, float | None, dict[str, int]]] = []
        floors: list[tuple[float, float, float | None]] = []
        for _ in range(INGEST_ROUNDS):
            svc_k = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bd{uuid.uuid4().hex[:8]}.")
            await ensure_topics(svc_k)
            await _produce(svc_k, svc_k.topic(Topic.INVOICE_EVENTS), records)
            raws.append(await _raw_consume_insert(
                raw_k, raw_k.topic(Topic.INVOICE_EVENTS), asyncpg_dsn(db_raw), N_EVENTS
            ))  # fmt: skip
            db_ingest = await create_database(server, prefix="bench_dun_ingest")
            try:
                svcs.append(await _service_ingest(svc_k, db_ingest, N_EVENTS))
            finally:
                await drop_database(db_ingest)
            floor_k = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bd{uuid.uuid4().hex[:8]}.")
            await ensure_topics(floor_k)
            await _produce(floor_k, floor_k.topic(Topic.INVOICE_EVENTS), records)
            db_floor = await create_database(server, prefix="bench_dun_floor")
            try:
                floors.append(await _plumbing_floor(floor_k, db_floor, N_EVENTS))
            finally:
                await drop_database(db_floor)
        raw_rates = [N_EVENTS / r[0] for r in raws]
        svc_rates = [N_EVENTS / r[0] for r in svcs]
        raw_rate, ingest_rate = statistics.median(raw_rates), statistics.median(svc_rates)
        raw_cpu = statistics.median(r[1] for r in raws)
        raw_pg = _median_or_none([r[2] for r in raws])
        ingest_cpu = statistics.median(r[1] for r in svcs)
        ingest_pg = _median_or_none([r[2] for r in svcs])
        ingest_stats = svcs[-1][3]
        floor_rates = [N_EVENTS / r[0] for r in floors]
        floor_rate = statistics.median(floor_rates)
        floor_cpu = statistics.median(r[1] for r in floors)
        floor_pg = _median_or_none([r[2] for r in floors])
        print(
            f"dunning projection ingest, {N_EVENTS:,} invoice events ({len(records[1][1])} bytes), PostgreSQL;"
            f" medians of {INGEST_ROUNDS} alternating rounds"
        )
        print(f"  baseline aiokafka consume + asyncpg batched insert {raw_rate:>10,.0f} events/s"
              f"  CPU/event: Python {_per_item_us(raw_cpu, N_EVENTS)} us, PostgreSQL {_per_item_us(raw_pg, N_EVENTS)} us")  # fmt: skip
        print(f"  dunning-svc consumer (inbox+projection+cases)      {ingest_rate:>10,.0f} events/s"
              f"  CPU/event: Python {_per_item_us(ingest_cpu, N_EVENTS)} us, PostgreSQL {_per_item_us(ingest_pg, N_EVENTS)} us"
              f"  ratio {ingest_rate / raw_rate:.0%} (target >= 50%)")  # fmt: skip
        print(f"  plumbing floor: runner, handlers that do nothing   {floor_rate:>10,.0f} events/s"
              f"  CPU/event: Python {_per_item_us(floor_cpu, N_EVENTS)} us, PostgreSQL {_per_item_us(floor_pg, N_EVENTS)} us"
              f"  ratio {floor_rate / raw_rate:.0%}; the service is {ingest_rate / floor_rate:.0%} of it")  # fmt: skip
        print("    rounds (raw / service / floor events/s): " + ", ".join(
            f"{r:,.0f} / {v:,.0f} / {f:,.0f}" for r, v, f in zip(raw_rates, svc_rates, floor_rates, strict=True)))  # fmt: skip

        # 2. scheduler
        await asyncio.to_thread(migrate, Settings(database=DatabaseSettings(url=db_sched)))
        dsn = asyncpg_dsn(db_sched)
        load_s = await _load_cases(dsn, N_CASES, N_DUE)
        raw_claim_s, raw_done, raw_claim_pg = await _raw_claim_update(dsn)
        sched_s, steps, outbox_rows, poll_ms, sched_cpu, sched_pg = await _service_scheduler(db_sched)
        plan = await _explain(dsn)
        floor_s, floor_done, floor_pg = await _database_floor(dsn, N_DUE)
        floor_rate = floor_done / floor_s
        raw_claim_rate, step_rate = raw_done / raw_claim_s, steps / sched_s
        uses_index = "ix_dunning_case_next_action" in plan
        print(f"dunning scheduler, {N_CASES:,} cases ({N_DUE:,} due) loaded with COPY in {load_s:.1f} s")
        print(
            f"  baseline raw claim-and-update loop (SKIP LOCKED)   {raw_claim_rate:>10,.0f} cases/s ({raw_done:,})"
            f"  CPU/case: PostgreSQL {_per_item_us(raw_claim_pg, raw_done)} us"
        )
        print(f"  scheduler: claim + decide + update + outbox        {step_rate:>10,.0f} steps/s"
              f" ({steps:,} steps, {outbox_rows:,} outbox rows, {sched_s:.1f} s) target >= 20,000/s")  # fmt: skip
        print(
            f"    CPU/step: Python {_per_item_us(sched_cpu, steps)} us, PostgreSQL {_per_item_us(sched_pg, steps)} us"
        )
        print(
            f"  database floor: claim + update + outbox + timeline rows by COPY, no decision {floor_rate:>8,.0f} steps/s"
            f" ({floor_done:,})  CPU/step: PostgreSQL {_per_item_us(floor_pg, floor_done)} us"
        )
        print(
            f"  idle poll with nothing due: {poll_ms:.2f} ms per poll; due query uses the index: {uses_index}"
        )
        print("  " + plan.replace("\n", "\n  "))
        load = os.getloadavg()
        print(
            f"  load average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores"
        )
    finally:
        for db in (db_raw, db_sched):
            await drop_database(db)
        if broker is not None:
            await asyncio.to_thread(broker.stop)
    return {
        "events": N_EVENTS,
        "cases": N_CASES,
        "due": N_DUE,
        "figures": [
            {
                "name": "projection ingest",
                "value": round(ingest_rate),
                "unit": "events/s",
                "baseline_name": "aiokafka consume + asyncpg batched insert",
                "baseline": round(raw_rate),
                "ratio": round(ingest_rate / raw_rate, 3),
                "target": 0.5,
            },
            {
                "name": "scheduler steps",
                "value": round(step_rate),
                "unit": "steps/s",
                "baseline_name": "raw claim-and-update loop",
                "baseline": round(raw_claim_rate),
                "ratio": round(step_rate / raw_claim_rate, 3),
                "target": None,
            },
        ],
        "scheduler_target_steps_per_s": 20000,
        "database_floor_steps_per_s": round(floor_rate),
        "ingest_stats": ingest_stats,
        "ingest_plumbing_floor_events_per_s": round(floor_rate),
        "ingest_rounds": {
            "raw_events_per_s": [round(r) for r in raw_rates],
            "service_events_per_s": [round(r) for r in svc_rates],
            "plumbing_floor_events_per_s": [round(r) for r in floor_rates],
        },
        "cpu_us": {
            "ingest_python_per_event": _per_item_us(ingest_cpu, N_EVENTS),
            "ingest_postgres_per_event": _per_item_us(ingest_pg, N_EVENTS),
            "raw_ingest_python_per_event": _per_item_us(raw_cpu, N_EVENTS),
            "raw_ingest_postgres_per_event": _per_item_us(raw_pg, N_EVENTS),
            "scheduler_python_per_step": _per_item_us(sched_cpu, steps),
            "scheduler_postgres_per_step": _per_item_us(sched_pg, steps),
            "raw_claim_postgres_per_case": _per_item_us(raw_claim_pg, raw_done),
            "database_floor_postgres_per_step": _per_item_us(floor_pg, floor_done),
        },
        "load_seconds": round(load_s, 1),
        "outbox_rows": outbox_rows,
        "idle_poll_ms": round(poll_ms, 3),
        "due_query_uses_index": uses_index,
        "due_query_plan": plan,
        "load_average": list(os.getloadavg()),
    }


if __name__ == "__main__":
    asyncio.run(main())
