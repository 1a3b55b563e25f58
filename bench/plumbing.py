"""Plumbing throughput on PostgreSQL: outbox -> relay -> broker -> consumer -> inbox, beside two raw baselines.

Baselines, on the same encoded payloads in the same run:
  * produce: aiokafka producer (acks=all, same producer settings) sending every record;
  * consume+insert: aiokafka consumer ``getmany`` + asyncpg ``executemany`` of (consumer, event id) per batch.
The plumbing figure is measured with the relay and the consumer each in its own process (as in production,
where they belong to different services), from the moment the relay starts until the last inbox row exists.

    uv run python -m bench plumbing          (or: uv run python bench/plumbing.py)
Environment: BENCH_EVENTS (default 100000), DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS (else local PostgreSQL on
127.0.0.1:5432 and the embedded broker).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import resource
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select, text

from ar_events.broker import EmbeddedBroker
from ar_events.consumer import ConsumerRunner
from ar_events.db import make_engine, make_sessionmaker
from ar_events.envelope import Envelope, encode, new_event
from ar_events.events import PaymentReceived
from ar_events.kafka import ensure_topics, make_producer
from ar_events.migrations import create_plumbing_tables
from ar_events.outbox import enqueue
from ar_events.relay import OutboxRelay
from ar_events.settings import ConsumerSettings, KafkaSettings, OutboxSettings
from ar_events.tables import TABLES
from ar_events.testing import asyncpg_dsn, create_database, drop_database, local_postgres_url
from bench.procstat import cpu_seconds

N = int(os.environ.get("BENCH_EVENTS", "100000"))
KEYS = 1000
RELAY_BATCH = 1000
CONSUMER_BATCH = 1000
TOPIC = str(PaymentReceived.TOPIC)


def _events(n: int) -> list[Envelope[PaymentReceived]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        payload = PaymentReceived.model_validate(
            {
                "client_id": f"cli_{i % KEYS:05d}",
                "payment_id": f"pay_{i}",
                "amount": {"amount_minor": 1000 + i, "currency": "EUR"},
                "method": "card",
                "processor": "stripe",
                "reference": f"pi_{i:08d}",
                "invoice_ids": [f"inv_{i}"],
                "received_at": "2026-03-02T09:30:00Z",
            }
        )
        out.append(new_event(payload, source="bench", time=now))
    return out


# ------------------------------------------------------------------------------------------ baselines


async def _raw_produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = make_producer(kafka)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _raw_consume_insert(kafka: KafkaSettings, topic: str, db_url: str, n: int) -> float:
    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    await conn.execute(
        "CREATE TABLE raw_inbox (consumer text NOT NULL, event_id text NOT NULL, PRIMARY KEY (consumer, event_id))"
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        done = 0
        while done < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=CONSUMER_BATCH)
            rows = [("raw", json.loads(r.value)["id"]) for recs in batch.values() for r in recs]
            if rows:
                async with conn.transaction():
                    await conn.executemany("INSERT INTO raw_inbox VALUES ($1, $2)", rows)
                done += len(rows)
        return time.perf_counter() - started
    finally:
        await consumer.stop()
        await conn.close()


# ------------------------------------------------------------------------------------------ plumbing


def _child(role: str, db_url: str, kafka_json: str, ready: Any, go: Any, stop: Any, cpu: Any) -> None:
    kafka = KafkaSettings.model_validate_json(kafka_json)
    asyncio.run(_child_main(role, db_url, kafka, ready, go, stop, cpu))


def _wait_go(go: Any, stop: Any) -> None:
    while not go.wait(0.2) and not stop.is_set():
        pass


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a local process so far, from /proc; None if unreadable (diagnostic)."""
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


async def _child_main(
    role: str, db_url: str, kafka: KafkaSettings, ready: Any, go: Any, stop: Any, cpu: Any
) -> None:
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    halt = asyncio.Event()

    async def watch() -> None:
        await asyncio.to_thread(_wait_go, go, stop)
        cpu.value = -_cpu_s()  # diagnostic: this process's CPU from go until the parent stops it
        await asyncio.to_thread(stop.wait)
        cpu.value += _cpu_s()
        halt.set()

    watcher = asyncio.create_task(watch())
    try:
        if role == "relay":
            producer = make_producer(kafka)
            await producer.start()
            relay = OutboxRelay(sessions, kafka, OutboxSettings(batch_size=RELAY_BATCH), producer=producer)
            ready.set()
            await asyncio.to_thread(go.wait)
            await relay.run(halt)
            await producer.stop()
        else:

            async def nothing(session: Any, envelope: Any) -> None:
                """The inbox row is the effect measured."""

            runner = ConsumerRunner(
                "bench",
                [TOPIC],
                sessions,
                {PaymentReceived.TYPE: nothing},
                kafka,
                ConsumerSettings(batch_max_records=CONSUMER_BATCH),
            )

            async def signal_ready() -> None:
                await runner.ready.wait()
                ready.set()

            flag = asyncio.create_task(signal_ready())
            await runner.run(halt)
            flag.cancel()
    finally:
        watcher.cancel()
        await engine.dispose()


async def _plumbing(
    kafka: KafkaSettings, db_url: str, events: list[Envelope[Any]], broker_pid: int | None = None
) -> dict[str, Any]:
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: create_plumbing_tables(_op(c)))
    started = time.perf_counter()
    for i in range(0, len(events), 500):
        async with sessions() as session, session.begin():
            await enqueue(session, *events[i : i + 500])
    enqueue_s = time.perf_counter() - started

    ctx = mp.get_context("spawn")
    consumer_ready, relay_ready, go, stop = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    consumer_cpu, relay_cpu = ctx.Value("d", 0.0), ctx.Value("d", 0.0)
    kafka_json = kafka.model_dump_json()
    consumer = ctx.Process(
        target=_child, args=("consumer", db_url, kafka_json, consumer_ready, go, stop, consumer_cpu)
    )
    relay = ctx.Process(target=_child, args=("relay", db_url, kafka_json, relay_ready, go, stop, relay_cpu))
    cpu: dict[str, float | None] = {}
    consumer.start()
    relay.start()
    try:
        for flag in (consumer_ready, relay_ready):
            if not await asyncio.to_thread(flag.wait, 120):
                raise TimeoutError("benchmark child did not start")
        backends_q = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        async with sessions() as session:
            backends_before = {pid: _proc_cpu_s(pid) for pid in (await session.execute(backends_q)).scalars()}
        broker_cpu = _proc_cpu_s(broker_pid) if broker_pid else None
        started = time.perf_counter()
        go.set()
        count_q = select(func.count()).select_from(TABLES.inbox)
        backlog_q = (
            select(func.count()).select_from(TABLES.outbox).where(TABLES.outbox.c.published_at.is_(None))
        )
        relay_s = None
        while True:
            async with sessions() as session:
                if relay_s is None and (await session.execute(backlog_q)).scalar_one() == 0:
                    relay_s = time.perf_counter() - started
                if (await session.execute(count_q)).scalar_one() >= len(events):
                    break
            await asyncio.sleep(0.05)
        pipeline_s = time.perf_counter() - started
        # Diagnostics only (after the measurement): CPU of the broker and of this database's PostgreSQL
        # backends (their growth since go; local server only).
        after = _proc_cpu_s(broker_pid) if broker_pid else None
        cpu["broker"] = after - broker_cpu if after is not None and broker_cpu is not None else None
        async with sessions() as session:
            pids = list((await session.execute(backends_q)).scalars())
        # The backends that existed before go are this process's (enqueue, then the polling below).
        now_cpu = {pid: _proc_cpu_s(pid) for pid in pids}
        children = [c for pid, c in now_cpu.items() if pid not in backends_before and c is not None]
        ours = [
            c - (backends_before[pid] or 0.0) for pid, c in now_cpu.items() if pid in backends_before and c
        ]
        cpu["postgres"] = sum(children) if children else None
        cpu["postgres (progress polling)"] = sum(ours) if ours else None
    finally:
        stop.set()
        for proc in (relay, consumer):
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    cpu["relay"], cpu["consumer"] = relay_cpu.value, consumer_cpu.value
    try:
        latencies = await _latency(kafka, sessions)
    finally:
        await engine.dispose()
    return {
        "enqueue_s": enqueue_s,
        "pipeline_s": pipeline_s,
        "relay_s": relay_s or pipeline_s,
        "latency_ms": latencies,
        "cpu_s": cpu,
    }


async def _latency(kafka: KafkaSettings, sessions: Any, samples: int = 40) -> list[float]:
    """Commit -> acked publish without wake() (LISTEN/NOTIFY, polling as backstop), one at a time, in ms."""
    stop = asyncio.Event()
    relay = OutboxRelay(sessions, kafka, name="latency")
    task = asyncio.create_task(relay.run(stop))
    out = []
    try:
        while not relay.holds_lease:  # noqa: ASYNC110 - polling the relay's state is the measurement
            await asyncio.sleep(0.01)
        for i in range(samples):
            before = relay.published
            async with sessions() as session, session.begin():
                await enqueue(session, _events(1)[0])
            started = time.perf_counter()
            while relay.published == before:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            out.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01 * (i % 7))  # land at different points of the poll cycle
    finally:
        stop.set()
        await task
    return sorted(out)


async def _stages(kafka: KafkaSettings, db_url: str, events: list[Envelope[Any]]) -> dict[str, float]:
    """Each stage alone, in this process: the relay drains a full outbox, then the consumer a full topic."""
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: create_plumbing_tables(_op(c)))
        for i in range(0, len(events), 500):
            async with sessions() as session, session.begin():
                await enqueue(session, *events[i : i + 500])
        producer = make_producer(kafka)
        await producer.start()
        try:
            relay = OutboxRelay(sessions, kafka, OutboxSettings(batch_size=RELAY_BATCH), producer=producer)
            started = time.perf_counter()
            await relay.publish_pending()
            relay_s = time.perf_counter() - started
        finally:
            await producer.stop()

        async def nothing(session: Any, envelope: Any) -> None:
            """The inbox row is the effect measured."""

        stop = asyncio.Event()
        runner = ConsumerRunner(
            "bench-stage",
            [TOPIC],
            sessions,
            {PaymentReceived.TYPE: nothing},
            kafka,
            ConsumerSettings(batch_max_records=CONSUMER_BATCH),
        )
        task = asyncio.create_task(runner.run(stop))
        await runner.ready.wait()
        started = time.perf_counter()
        while runner.stats.processed < len(events):  # noqa: ASYNC110 - polling the counter is the measurement
            await asyncio.sleep(0.01)
        consumer_s = time.perf_counter() - started
        stop.set()
        await task
    finally:
        await engine.dispose()
    return {"relay_alone_s": relay_s, "consumer_alone_s": consumer_s}


def _op(conn: Any) -> Any:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    return Operations(MigrationContext.configure(conn))


# ------------------------------------------------------------------------------------------ main


async def main() -> dict[str, Any]:
    """Run the three measurements on fresh topics and a fresh database; print and return the figures."""
    server = os.environ.get("DATABASE_URL") or local_postgres_url()
    broker: EmbeddedBroker | None = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = EmbeddedBroker(0)
        await asyncio.to_thread(broker.start)
        bootstrap = broker.bootstrap_servers
    db_raw = await create_database(server, prefix="bench_raw")
    db_plumbing = await create_database(server, prefix="bench_plumbing")
    db_stages = await create_database(server, prefix="bench_stages")
    try:
        events = _events(N)
        records = [(e.key, encode(e)) for e in events]
        raw = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
        plumbing = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
        await ensure_topics(raw)
        await ensure_topics(plumbing)
        topic = raw.topic(TOPIC)
        produce_s = await _raw_produce(raw, topic, records)
        consume_s = await _raw_consume_insert(raw, topic, db_raw, N)
        result = await _plumbing(plumbing, db_plumbing, events, broker.pid if broker is not None else None)
        staged = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
        await ensure_topics(staged)
        stages = await _stages(staged, db_stages, events)
    finally:
        await drop_database(db_raw)
        await drop_database(db_plumbing)
        await drop_database(db_stages)
        if broker is not None:
            await asyncio.to_thread(broker.stop)
    produce = N / produce_s
    consume = N / consume_s
    pipeline = N / result["pipeline_s"]
    slower_name, slower = min((("aiokafka produce", produce), ("aiokafka consume + asyncpg insert", consume)),
                              key=lambda kv: kv[1])  # fmt: skip
    ratio = pipeline / slower
    print(f"plumbing benchmark, {N:,} events of {sum(len(v) for _, v in records) // N} bytes, PostgreSQL")
    print(f"  baseline aiokafka produce (acks=all)          {produce:>10,.0f} events/s")
    print(f"  baseline aiokafka consume + asyncpg insert    {consume:>10,.0f} events/s")
    print(f"  outbox -> relay -> broker -> consumer -> inbox {pipeline:>9,.0f} events/s")
    print(f"  ratio to the slower baseline ({slower_name}): {ratio:.0%} (target >= 50%)")
    print(f"  (enqueue into the outbox, 500 per transaction: {N / result['enqueue_s']:,.0f} events/s;")
    print(
        f"   the relay had published everything after {result['relay_s']:.1f} s of {result['pipeline_s']:.1f} s;"
    )
    print(f"   load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    relay_alone, consumer_alone = N / stages["relay_alone_s"], N / stages["consumer_alone_s"]
    print(
        f"  each stage alone: relay (outbox -> broker) {relay_alone:,.0f} events/s = {relay_alone / produce:.0%}"
    )
    print(
        f"  of the produce baseline; consumer (broker -> inbox) {consumer_alone:,.0f} events/s ="
        f" {consumer_alone / consume:.0%} of the consume + insert baseline"
    )
    cpu = result["cpu_s"]
    print(
        "  CPU during the pipeline, microseconds per event: "
        + ", ".join(
            f"{name} {cpu[name] / N * 1e6:.0f}" if cpu.get(name) is not None else f"{name} n/a"
            for name in ("relay", "consumer", "broker", "postgres", "postgres (progress polling)")
        )
        + f" (wall {result['pipeline_s'] / N * 1e6:.0f} on {os.cpu_count()} CPUs)"
    )
    lat = result["latency_ms"]
    print(
        f"  relay latency commit -> acked publish, no wake() (NOTIFY + 50 ms polling): p50 {lat[len(lat) // 2]:.0f} ms,"
        f" p95 {lat[int(len(lat) * 0.95)]:.0f} ms, max {lat[-1]:.0f} ms"
    )
    return {
        "events": N,
        "figures": [
            {
                "name": "outbox->relay->consumer->inbox",
                "value": round(pipeline),
                "unit": "events/s",
                "baseline_name": slower_name,
                "baseline": round(slower),
                "ratio": round(ratio, 3),
                "target": 0.5,
            }
        ],
        "baselines": {"aiokafka_produce": round(produce), "aiokafka_consume_asyncpg_insert": round(consume)},
        "enqueue_events_per_s": round(N / result["enqueue_s"]),
        "relay_events_per_s": round(N / result["relay_s"]),
        "relay_alone_events_per_s": round(relay_alone),
        "consumer_alone_events_per_s": round(consumer_alone),
        "load_average": round(os.getloadavg()[0], 1),
        "pipeline_cpu_us_per_event": {
            name: round(value / N * 1e6, 1) for name, value in cpu.items() if value is not None
        },
        "relay_latency_ms": {
            "p50": round(result["latency_ms"][len(result["latency_ms"]) // 2], 1),
            "p95": round(result["latency_ms"][int(len(result["latency_ms"]) * 0.95)], 1),
            "max": round(result["latency_ms"][-1], 1),
        },
    }


if __name__ == "__main__":
    asyncio.run(main())
