"""invoice-svc: invoices issued per second through REST, and the aging report over 100,000 invoices.

1. Throughput. One real uvicorn worker (``python -m invoice_svc api``: API plus outbox relay) on a free port,
   on PostgreSQL, with the embedded broker receiving the events. 32 concurrent HTTP/1.1 keep-alive clients in
   this process issue invoices (``POST /v1/invoices``, 2 lines, 200 clients round-robin, each invoice with an
   ``Idempotency-Key``) for 15 s; the baseline is the same server's trivial JSON endpoint (``GET /healthz``)
   measured the same way in the same run, before and after (the mean of the two). p50/p99 are per request.
   The server's CPU time per request (/proc) is printed too: on a shared machine it is the steadier figure.
   The load goes through ``bench.rawhttp.RawHttp`` (tens of microseconds per request), so both rates are the
   server's; the load generator's own CPU per request is printed to show it. Then the stack's floor: a bare
   FastAPI app (``bench.floor_app``: validated body, one INSERT per request) beside its own /healthz, driven the
   same way, which bounds the ratio any write endpoint on this stack can reach.
2. Aging. 100,000 invoices (and their ledger: issue, payments for ~65% of them) for 1,000 clients, bulk
   loaded; ``GET /v1/reports/aging`` timed through REST (median of 5), plus EXPLAIN (ANALYZE, BUFFERS) of its
   query.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy import insert, select, text
from sqlalchemy.dialects import postgresql

from ar_events.broker import EmbeddedBroker, free_port
from ar_events.db import make_engine
from bench.procstat import cpu_seconds
from bench.rawhttp import Broken, RawHttp

PG_SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
KEY = "ar_benchbenchbenchbenchbenchbenchbenchbenchbenc"
CONCURRENCY = 32
PHASE_S = float(os.environ.get("BENCH_PHASE_S", "15"))
WARMUP_S = 3.0
AGING_INVOICES = 100_000
AGING_CLIENTS = 1_000
ROOT = Path(__file__).resolve().parents[1]


def _env(db_url: str, port: int, kafka: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_")}
    env.update(
        INVOICE_DATABASE__URL=db_url,
        INVOICE_DATABASE__POOL_SIZE="20",
        INVOICE_HTTP__PORT=str(port),
        INVOICE_KAFKA__BOOTSTRAP_SERVERS=kafka,
        INVOICE_LOG_LEVEL="WARNING",
    )
    return env


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "invoice_svc", *args], env=env, check=True, capture_output=True,
                   timeout=180)  # fmt: skip


def _start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "invoice_svc", "api"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


async def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("invoice-svc exited")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("invoice-svc did not start")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


_cpu_seconds = cpu_seconds  # the server's CPU per request


SERVER_PID = 0


async def _load(client: RawHttp, seconds: float, make: Any, pid: int | None = None) -> dict[str, float]:
    """Run ``make(client, n)`` from CONCURRENCY workers for ``seconds``; rate, latency percentiles, CPU of the
    server and of this process (the load generator) per request."""
    latencies: list[float] = []
    retried: list[int] = []
    pid = SERVER_PID if pid is None else pid  # the server whose CPU is counted (the service by default)
    cpu0 = _cpu_seconds(pid) if pid else 0.0
    own0 = time.process_time()
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            started = time.perf_counter()
            try:
                status, content = await make(client, n)
            except Broken:
                # A keep-alive connection the server closed just as it was reused (uvicorn drops connections
                # idle for 5 s). Every request here is safe to repeat: GETs, and POSTs with an Idempotency-Key.
                retried.append(n)
                status, content = await make(client, n)
            latencies.append(time.perf_counter() - started)
            if status >= 300:
                raise RuntimeError(f"{status}: {content[:300]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu0 if pid else 0.0
    own = time.process_time() - own0
    total = len(latencies)
    return {
        "requests": total,
        "retried": len(retried),
        "per_s": total / elapsed,
        "server_cpu_ms": 1000 * cpu / total,
        "loadgen_cpu_ms": 1000 * own / total,
        "loadgen_busy": own / elapsed,
        "p50_ms": 1000 * _pct(latencies, 0.50),
        "p99_ms": 1000 * _pct(latencies, 0.99),
    }


def _invoice_body(client_id: str, n: int, run: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "number": f"B-{run}-{n}",
        "currency": "EUR",
        "lines": [
            {"description": "Subscription", "quantity": 1, "unit_price": {"amount_minor": 49_900, "currency": "EUR"},
             "tax_rate_bp": 2000},
            {"description": "Seats", "quantity": 7, "unit_price": {"amount_minor": 1_250, "currency": "EUR"},
             "tax_rate_bp": 2000},
        ],
    }  # fmt: skip


async def _throughput(base: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:
        clients = []
        for n in range(200):
            r = await client.post("/v1/clients", json={
                "external_id": f"BENCH-{n}", "name": f"Bench client {n}", "segment": "smb",
                "contacts": [{"name": "AP", "email": f"ap{n}@example.com", "role": "billing"}],
            })  # fmt: skip
            r.raise_for_status()
            clients.append(r.json()["id"])
        run = uuid.uuid4().hex[:6]

    # The load itself goes through RawHttp: with httpx the load generator, not the server, set both rates.
    raw = RawHttp(base, headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})

    def body(prefix: str, n: int) -> bytes:
        return json.dumps(_invoice_body(clients[n % len(clients)], n, prefix)).encode()

    async def ping(c: RawHttp, n: int) -> tuple[int, bytes]:
        return await c.get("/healthz")

    async def issue(c: RawHttp, n: int) -> tuple[int, bytes]:
        return await c.post("/v1/invoices", body(run, n), {"Idempotency-Key": f"{run}-{n}"})

    async def warm(c: RawHttp, n: int) -> tuple[int, bytes]:
        return await c.post("/v1/invoices", body("warm" + run, n), {"Idempotency-Key": f"warm{run}-{n}"})

    try:
        await _load(raw, WARMUP_S, ping)
        await _load(raw, WARMUP_S, warm)
        before = await _load(raw, PHASE_S, ping)
        issued = await _load(raw, PHASE_S, issue)
        after = await _load(raw, PHASE_S, ping)
    finally:
        await raw.aclose()
    baseline = {k: (before[k] + after[k]) / 2 for k in before}
    return {"invoices": issued, "trivial": baseline, "trivial_before": before, "trivial_after": after}


async def _floor(dsn: str) -> dict[str, Any]:
    """bench/floor_app on its own port and the same database: a bare FastAPI write endpoint (validated body, one
    INSERT in a transaction) beside its own /healthz, driven like the service. The stack's ceiling for the ratio."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.floor_app", str(port), dsn], cwd=ROOT,  # noqa: ASYNC220
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    raw = RawHttp(f"http://127.0.0.1:{port}", headers={"Content-Type": "application/json"})
    run = uuid.uuid4().hex[:6]

    async def ping(c: RawHttp, n: int) -> tuple[int, bytes]:
        return await c.get("/healthz")

    async def write(c: RawHttp, n: int) -> tuple[int, bytes]:
        return await c.post("/v1/things", json.dumps(_invoice_body("cli", n, run)).encode())

    try:
        await _wait_ready(port, proc)
        await _load(raw, WARMUP_S, write, proc.pid)
        trivial = await _load(raw, PHASE_S / 2, ping, proc.pid)
        writes = await _load(raw, PHASE_S / 2, write, proc.pid)
    finally:
        await raw.aclose()
        _stop_server(proc)
    return {"writes": writes, "trivial": trivial}


async def _load_aging(db_url: str) -> None:
    from invoice_svc.repository import client as client_t
    from invoice_svc.repository import invoice as invoice_t
    from invoice_svc.repository import ledger_entry as ledger_t

    rng = random.Random(42)
    engine = make_engine(db_url)
    now = datetime(2026, 6, 30, tzinfo=UTC)
    managers = [("Claire", "claire@example.com"), ("Bob", "bob@example.com"), ("Ana", "ana@example.com"),
                ("Kim", "kim@example.com")]  # fmt: skip
    clients = []
    for n in range(AGING_CLIENTS):
        am = managers[n % len(managers)]
        clients.append({
            "id": f"cli_aging{n:05d}", "external_id": f"AGING-{n}", "name": f"Aging client {n}",
            "segment": ("smb", "enterprise", "high_risk")[n % 3], "tags": [], "account_manager_name": am[0],
            "account_manager_email": am[1], "contacts": [{"name": "AP", "email": "ap@example.com", "role": "billing"}],
            "language": "en", "time_zone": "UTC", "country": "US", "payment_terms_days": 30,
            "credit_limit_minor": None, "credit_limit_currency": None, "preferences": {}, "created_at": now,
            "updated_at": now,
        })  # fmt: skip
    invoices, ledger = [], []
    for n in range(AGING_INVOICES):
        issued = date(2025, 7, 1) + timedelta(days=rng.randrange(365))
        due = issued + timedelta(days=30)
        total = rng.randrange(1_000, 500_000)
        cur = "EUR" if rng.random() < 0.8 else "USD"
        inv_id = f"inv_aging{n:07d}"
        roll = rng.random()
        paid = total if roll < 0.55 else total // 2 if roll < 0.65 else 0
        paid_on = min(due + timedelta(days=rng.randrange(-20, 60)), date(2026, 6, 30))
        paid_on = max(paid_on, issued)
        cid = clients[rng.randrange(AGING_CLIENTS)]["id"]
        invoices.append({
            "id": inv_id, "client_id": cid, "number": f"A-{n}", "currency": cur, "issue_date": issued,
            "due_date": due, "subtotal": total, "tax": 0, "total": total, "amount_due": total - paid,
            "paid_amount": paid, "credited_amount": 0, "credit_applied": 0,
            "status": "paid" if paid == total else "open", "disputed": False, "discount_rate_bp": None,
            "discount_days": None, "discount_until": None, "discount_amount": None, "paid_at": None,
            "voided_at": None, "void_reason": None, "created_at": now,
        })  # fmt: skip
        ledger.append({"invoice_id": inv_id, "client_id": cid, "currency": cur, "due_date": due,
                       "entry_date": issued, "kind": "issue", "amount": total})  # fmt: skip
        if paid:
            ledger.append({"invoice_id": inv_id, "client_id": cid, "currency": cur, "due_date": due,
                           "entry_date": paid_on, "kind": "payment", "amount": -paid})  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(client_t), clients)
        for i in range(0, len(invoices), 10_000):
            await conn.execute(insert(invoice_t), invoices[i : i + 10_000])
        for i in range(0, len(ledger), 10_000):
            await conn.execute(insert(ledger_t), ledger[i : i + 10_000])
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE"))
    await engine.dispose()


async def _explain(db_url: str, as_of: date) -> list[str]:
    from invoice_svc.repository import ReportRepository

    stmt = ReportRepository(None).aging_statement(as_of, "client")  # type: ignore[arg-type]
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    engine = make_engine(db_url)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))).all()
    await engine.dispose()
    return [r[0] for r in rows]


async def _aging(base: str, db_url: str) -> dict[str, Any]:
    started = time.perf_counter()
    await _load_aging(db_url)
    load_s = time.perf_counter() - started
    headers = {"Authorization": f"Bearer {KEY}"}
    timings: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        for group_by in ("client", "segment"):
            for _ in range(6):
                t0 = time.perf_counter()
                r = await client.get(
                    "/v1/reports/aging", params={"as_of": "2026-06-30", "group_by": group_by}
                )
                r.raise_for_status()
                timings.setdefault(group_by, []).append(time.perf_counter() - t0)
            body = r.json()
        groups = sum(len(c["groups"]) for c in body["currencies"])
    plan = await _explain(db_url, date(2026, 6, 30))
    return {
        "load_s": load_s,
        "ms": {k: 1000 * statistics.median(v[1:]) for k, v in timings.items()},
        "segment_groups": groups,
        "plan": plan,
    }


CONSUMER_PAYMENTS = 2_000
CONSUMER_BATCH = 500


async def _consumer(db_url: str) -> dict[str, float]:
    """Diagnostic: PaymentReceived applied by invoice-svc's consumer handler, as the ConsumerRunner applies a
    poll: CONSUMER_BATCH records per transaction (no broker, no inbox rows). Each payment of 600.00 EUR goes to
    its client's open invoices (those issued by the throughput phase), oldest first."""
    from ar_events import events as ev
    from ar_events.envelope import new_event
    from ar_events.settings import DatabaseSettings
    from invoice_svc.bootstrap import build, consumer_handlers
    from invoice_svc.repository import client as client_t
    from invoice_svc.settings import Settings

    runtime = build(Settings(database=DatabaseSettings(url=db_url, pool_size=2)))
    handle = consumer_handlers(runtime.clock)[ev.PaymentReceived.TYPE]
    try:
        async with runtime.sessionmaker() as session:
            ids = list(
                (await session.execute(select(client_t.c.id).where(client_t.c.external_id.like("BENCH-%"))))
                .scalars()
                .all()
            )
        now = datetime.now(UTC)
        envelopes = [
            new_event(
                ev.PaymentReceived(
                    client_id=ids[n % len(ids)], payment_id=f"pay_bench_{uuid.uuid4().hex}",
                    amount={"amount_minor": 60_000, "currency": "EUR"}, method=ev.PaymentMethod.TRANSFER,
                    processor="bench", received_at=now,
                ),
                source="payment-svc", time=now,
            )
            for n in range(CONSUMER_PAYMENTS)
        ]  # fmt: skip
        cpu0, started = time.process_time(), time.perf_counter()
        for i in range(0, len(envelopes), CONSUMER_BATCH):
            async with runtime.sessionmaker() as session, session.begin():
                for envelope in envelopes[i : i + CONSUMER_BATCH]:
                    await handle(session, envelope)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    finally:
        await runtime.engine.dispose()
    return {"per_s": len(envelopes) / elapsed, "cpu_ms": 1000 * cpu / len(envelopes)}


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print("  (invoice-svc did not stop within 30 s of SIGTERM; killed)")
        proc.kill()
        proc.wait(timeout=10)


async def main() -> dict[str, Any]:
    name = f"bench_invoice_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_SERVER)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    db_url = PG_SERVER.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        with EmbeddedBroker(0) as broker:
            env = _env(db_url, port, broker.bootstrap_servers)
            _cli(env, "migrate")
            _cli(env, "api-key", "create", "--name", "bench", "--scopes", "all", "--key", KEY)
            proc = _start_server(env)
            global SERVER_PID
            SERVER_PID = proc.pid
            await _wait_ready(port, proc)
            base = f"http://127.0.0.1:{port}"
            tp = await _throughput(base)
            floor = await _floor(PG_SERVER.rsplit("/", 1)[0] + f"/{name}")
            aging = await _aging(base, db_url)
            consumer = await _consumer(db_url)
            _stop_server(proc)  # while the broker is still up: the relay's producer closes cleanly
    finally:
        if proc is not None and proc.poll() is None:
            _stop_server(proc)
        admin = await asyncpg.connect(PG_SERVER)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    inv, triv = tp["invoices"], tp["trivial"]
    ratio = inv["per_s"] / triv["per_s"]
    print(f"one uvicorn worker, PostgreSQL, {CONCURRENCY} concurrent keep-alive clients, {PHASE_S:.0f} s per phase,"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"  POST /v1/invoices : {inv['per_s']:8.0f} invoices/s   p50 {inv['p50_ms']:6.1f} ms   p99 {inv['p99_ms']:6.1f} ms"
    )
    print(f"  GET  /healthz     : {triv['per_s']:8.0f} req/s        p50 {triv['p50_ms']:6.1f} ms   p99 {triv['p99_ms']:6.1f} ms"
          f"   (before {tp['trivial_before']['per_s']:.0f}, after {tp['trivial_after']['per_s']:.0f})")  # fmt: skip
    print(f"  ratio {100 * ratio:.0f}% (target >= 40%);  server CPU per request: invoice {inv['server_cpu_ms']:.2f} ms,"
          f" /healthz {triv['server_cpu_ms']:.2f} ms -> CPU-bound ratio {100 * triv['server_cpu_ms'] / inv['server_cpu_ms']:.0f}%")  # fmt: skip
    print(f"  load generator (this process, one core at most): invoice {inv['loadgen_cpu_ms']:.2f} ms CPU per request,"
          f" busy {100 * inv['loadgen_busy']:.0f}%; /healthz {triv['loadgen_cpu_ms']:.2f} ms, busy {100 * triv['loadgen_busy']:.0f}%")  # fmt: skip
    fw, ft = floor["writes"], floor["trivial"]
    print(f"  the stack's floor (bench/floor_app: bare FastAPI, validated body, one INSERT per request, same database):"
          f" {fw['per_s']:.0f} writes/s ({fw['server_cpu_ms']:.2f} ms CPU) vs its /healthz {ft['per_s']:.0f}/s"
          f" ({ft['server_cpu_ms']:.2f} ms) -> {100 * fw['per_s'] / ft['per_s']:.0f}%")  # fmt: skip
    print(
        f"aging over {AGING_INVOICES:,} invoices ({AGING_CLIENTS:,} clients; loaded in {aging['load_s']:.1f} s):"
    )
    print(f"  GET /v1/reports/aging group_by=client : {aging['ms']['client']:.0f} ms (median, through REST)")
    print(f"  GET /v1/reports/aging group_by=segment: {aging['ms']['segment']:.0f} ms")
    print("  EXPLAIN (ANALYZE, BUFFERS):")
    for line in aging["plan"]:
        print("    " + line)
    print(f"payment consumer handler (diagnostic; {CONSUMER_BATCH} PaymentReceived per transaction, no broker):"
          f" {consumer['per_s']:.0f} payments/s, {consumer['cpu_ms']:.2f} ms CPU per payment")  # fmt: skip
    figures = [
        {
            "name": "invoices issued through REST (1 uvicorn worker, PostgreSQL)",
            "value": round(inv["per_s"], 1),
            "unit": "inv/s",
            "baseline_name": "GET /healthz on the same server",
            "baseline": round(triv["per_s"], 1),
            "ratio": round(ratio, 3),
            "target": 0.4,
        },
        {
            "name": "invoices per server CPU-second (1 worker)",
            "value": round(1000 / inv["server_cpu_ms"], 1),
            "unit": "inv/cpu-s",
            "baseline_name": "GET /healthz per server CPU-second",
            "baseline": round(1000 / triv["server_cpu_ms"], 1),
            "ratio": round(triv["server_cpu_ms"] / inv["server_cpu_ms"], 3),
            "target": 0.4,
        },
    ]
    return {
        "figures": figures,
        "invoices": {k: round(v, 2) for k, v in inv.items()},
        "trivial": {k: round(v, 2) for k, v in triv.items()},
        "aging_ms": {k: round(v, 1) for k, v in aging["ms"].items()},
        "aging_invoices": AGING_INVOICES,
        "aging_plan": aging["plan"],
        "concurrency": CONCURRENCY,
        "consumer": {k: round(v, 2) for k, v in consumer.items()},
        "floor": {part: {k: round(v, 3) for k, v in r.items()} for part, r in floor.items()},
    }


if __name__ == "__main__":
    asyncio.run(main())
