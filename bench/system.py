"""The whole system, end to end: N clients through issue, overdue, reminder and payment.

The four services, the embedded broker and the SMTP catcher run as processes (``ar_ops.stack.start_stack``) on
free ports, in a temporary var directory, on fresh PostgreSQL databases made for this run and dropped after it.
Everything goes through the public interfaces: REST with the dev key, signed Stripe webhooks, and the simulated
clock of dunning-svc moved by ``POST /v1/admin/clock/advance``. Events are read from the broker as they arrive.

Phases:
  1. issue: N clients and one invoice each through invoice-svc REST (16 requests in flight);
  2. overdue: the clock moves to a business morning one day past due; every client gets a case, a
     ReminderRequested (``ar.dunning.events``) and a NotificationSent (``ar.notify.events``, one .eml each);
  3. payment: one signed ``payment_intent.succeeded`` webhook per client, open loop: first a light-load probe
     (100 clients at 5/s: the pipeline's own latency), then everyone else at 200/s. Per client, the latency
     from the webhook's 2xx to the DunningResolved record arriving at our consumer (wall time at receipt: the
     event's own ``time`` is the simulated clock), split hop by hop (PaymentReceived, InvoicePaid received).

Baselines in the same run: a trivial endpoint (``GET /healthz`` of invoice-svc, same client, same concurrency)
for request throughput; the raw broker round trip (aiokafka produce -> consume, same producer settings as the
services, at the same 200/s) for the latency, also measured with aiokafka's default fetch wait (the services').

    uv run python -m bench system
Environment: BENCH_SYSTEM_CLIENTS (default 10000; 1000 for a quick look), BENCH_SYSTEM_RATE (payments/s,
default 200), DATABASE_URL (a PostgreSQL server; else 127.0.0.1:5432 as postgres), BENCH_SYSTEM_KEEP=1 keeps
the var dir (logs, mail) of a successful run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from ar_events.kafka import ensure_topics, make_producer
from ar_events.settings import KafkaSettings
from ar_events.testing import create_database, drop_database, local_postgres_url
from ar_events.topics import Topic
from ar_ops.stack import SERVICES, RunningStack, StackConfig, start_stack
from bench.procstat import cpu_seconds
from bench.rawhttp import Broken, RawHttp

# The issue's size. On a busy machine it takes long: BENCH_SYSTEM_CLIENTS=1000 is a quick look.
N = int(os.environ.get("BENCH_SYSTEM_CLIENTS", "10000"))
RATE = float(os.environ.get("BENCH_SYSTEM_RATE", "200"))
IN_FLIGHT = 16  # concurrent REST calls while loading
LIGHT_RATE = 5.0  # payments/s of the light-load probe run before the main one
LIGHT_N = 100
PAY_IN_FLIGHT = 64  # webhooks in flight at most (each on a keep-alive connection of its own while in flight)
P99_GOAL_MS = 500.0
IDLE_PROBE_S = 3.0  # CPU of the idle stack is measured over this long, just before the main payment run
ROOT = Path(__file__).resolve().parent.parent
UVLOOP = (
    True  # bench/__main__ runs this module on uvloop: the load generator shares the 2 cores with the stack
)

CASE_OPENED = "ar.dunning.case_opened.v1"
REMINDER = "ar.dunning.reminder_requested.v1"
RESOLVED = "ar.dunning.resolved.v1"
PAYMENT_RECEIVED = "ar.payment.received.v1"
INVOICE_PAID = "ar.invoice.paid.v1"
SENT = "ar.notify.sent.v1"
SENT_FOR_CASE = "ar.notify.sent.v1 (case)"
FAILED = "ar.notify.failed.v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# ------------------------------------------------------------------------------------------ events


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(100):
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await consumer.topics()  # a metadata request
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no partitions for {topic}")


_TYPE = re.compile(rb'"type":"([^"]*)"')
_SUBJECT = re.compile(rb'"subject":"([^"]*)"')


@dataclass
class Collector:
    """Reads the four event topics from the start; notes the wall time of first receipt per (type, client)."""

    bootstrap: str
    counts: Counter[str] = field(default_factory=Counter)
    seen: dict[str, dict[str, float]] = field(default_factory=dict)  # type -> client -> first receipt
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            max_poll_records=2000,
        )
        await consumer.start()
        try:
            parts = []
            for topic in (
                Topic.PAYMENT_EVENTS,
                Topic.INVOICE_EVENTS,
                Topic.DUNNING_EVENTS,
                Topic.NOTIFY_EVENTS,
            ):
                parts += await _partitions(consumer, str(topic))
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=50, max_records=2000)
                now = time.time()
                for records in batches.values():
                    for record in records:
                        self._note(record.value, now)
                if batches:
                    self.changed.set()
        finally:
            await consumer.stop()

    def _note(self, value: bytes | None, at: float) -> None:
        if value is None:
            return
        # The envelope's own "type" and "subject" come before "data" (ar_events.envelope.encode), so the first
        # match of each is the envelope's: no JSON parse per record (this process shares the 2 cores).
        kind_match, subject_match = _TYPE.search(value), _SUBJECT.search(value)
        if kind_match is None or subject_match is None:
            return
        kind = kind_match.group(1).decode()
        self.counts[kind] += 1
        if kind == SENT and (json.loads(value).get("data") or {}).get("case_id"):
            kind = SENT_FOR_CASE  # a dunning message, not the invoice e-mail sent at issue
            self.counts[kind] += 1
        client = subject_match.group(1).decode()
        per = self.seen.setdefault(kind, {})
        per.setdefault(client, at)

    def clients(self, kind: str) -> int:
        return len(self.seen.get(kind, {}))

    async def wait_for(self, kind: str, wanted: set[str], limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            got = self.seen.get(kind, {})
            if all(c in got for c in wanted):
                return True
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)
        return False


# ------------------------------------------------------------------------------------------ the API


class Api:
    def __init__(self, stack: RunningStack, http: httpx.AsyncClient) -> None:
        self.urls = stack.urls()
        self.http = http
        self.auth = {"Authorization": f"Bearer {stack.credentials.api_key}"}
        self.stripe_secret = stack.credentials.webhook_secrets["stripe"]

    async def call(self, method: str, service: str, path: str, body: Any = None, **headers: str) -> Any:
        response = await self.http.request(
            method, self.urls[service] + path, json=body, headers={**self.auth, **headers}
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {service}{path} -> {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    async def create_client(self, i: int, run: str) -> str:
        external_id = f"bench-{run}-{i}"
        body = {
            "external_id": external_id,
            "name": f"Bench Client {i}",
            "segment": "mid_market",
            "contacts": [{"name": f"Accounts {i}", "email": f"ap{i}@client{i}.example", "role": "billing"}],
            "language": "en",
            "time_zone": "UTC",
            "payment_terms_days": 30,
        }
        out = await self.call("POST", "invoice", "/v1/clients", body, **{"Idempotency-Key": external_id})
        return str(out["id"])

    async def issue_invoice(self, client_id: str, number: str, issue: date, due: date) -> tuple[str, int]:
        body = {
            "client_id": client_id,
            "number": number,
            "currency": "EUR",
            "issue_date": issue.isoformat(),
            "due_date": due.isoformat(),
            "lines": [
                {"description": "Consulting", "quantity": 1,
                 "unit_price": {"amount_minor": 12_000, "currency": "EUR"}, "tax_rate_bp": 2000}
            ],
        }  # fmt: skip
        out = await self.call("POST", "invoice", "/v1/invoices", body, **{"Idempotency-Key": number})
        return str(out["id"]), int(out["total"]["amount_minor"])

    def stripe_webhook(
        self, client_id: str, invoice_id: str, amount_minor: int
    ) -> tuple[bytes, dict[str, str]]:
        event = {
            "id": "evt_" + uuid.uuid4().hex[:24],
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "pi_" + uuid.uuid4().hex[:24],
                    "object": "payment_intent",
                    "amount": amount_minor,
                    "amount_received": amount_minor,
                    "currency": "eur",
                    "payment_method_types": ["card"],
                    "metadata": {"client_id": client_id, "invoice_ids": invoice_id},
                }
            },
        }
        raw = json.dumps(event).encode()
        ts = int(time.time())
        sig = hmac.new(self.stripe_secret.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
        return raw, {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}


# ------------------------------------------------------------------------------------------ CPU accounting


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process, 0 when it is gone."""
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError):
        return 0.0


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
    return pids


def cpu_snapshot(stack: RunningStack) -> dict[str, float]:
    """CPU seconds so far per stack component, PostgreSQL (every backend) and this benchmark process."""
    out = {name: _cpu_s(c.pid) for name, c in stack.components.items()}
    out["postgresql"] = sum(_cpu_s(pid) for pid in _postgres_pids())
    out["bench (load generator)"] = time.process_time()
    return out


def cpu_per_item(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
    """CPU milliseconds per item per component between two snapshots (PostgreSQL backends may come and go)."""
    return {k: round(1000 * max(0.0, after.get(k, 0.0) - v) / max(1, items), 2) for k, v in before.items()}


async def _bounded(n: int, coros: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(n)

    async def one(c: Any) -> Any:
        async with gate:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def _payments(
    api: Api, collector: Collector, pairs: list[tuple[str, tuple[str, int]]], rate: float
) -> dict[str, Any]:
    """One signed webhook per (client, (invoice, amount)) at ``rate``/s, open loop; then wait for resolution."""
    acked: dict[str, float] = {}
    hook_ms: list[float] = []
    errors: list[str] = []
    redelivered: list[str] = []

    gate = asyncio.Semaphore(PAY_IN_FLIGHT)
    http = RawHttp(api.urls["payment"])

    async def pay(client_id: str, invoice_id: str, amount: int) -> None:
        async with gate:  # beyond what payment-svc takes, webhooks wait here
            await send(client_id, invoice_id, amount)

    async def send(client_id: str, invoice_id: str, amount: int) -> None:
        raw, headers = api.stripe_webhook(client_id, invoice_id, amount)
        t0 = time.time()
        for attempt in (1, 2):  # like Stripe, deliver the same event again after a broken connection
            try:
                status, content = await http.post("/v1/webhooks/stripe", raw, headers)
                break
            except Broken as exc:
                if attempt == 2:
                    errors.append(repr(exc))
                    return
                redelivered.append(repr(exc))
        t1 = time.time()
        if status >= 300:
            errors.append(f"{status}: {content[:200]!r}")
            return
        acked[client_id] = t1
        hook_ms.append(1000 * (t1 - t0))

    tasks = []
    started = time.monotonic()
    for i, (client_id, (invoice_id, amount)) in enumerate(pairs):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(pay(client_id, invoice_id, amount)))
    await asyncio.gather(*tasks)
    send_s = time.monotonic() - started
    await http.aclose()
    await collector.wait_for(RESOLVED, set(acked), max(60.0, len(pairs) / 5))
    resolved_at = collector.seen.get(RESOLVED, {})
    latencies = [1000 * (resolved_at[c] - t) for c, t in acked.items() if c in resolved_at]
    unresolved = [c for c in acked if c not in resolved_at]
    # Where the time goes, hop by hop (first receipt of each event at our consumer).
    received = collector.seen.get(PAYMENT_RECEIVED, {})
    paid = collector.seen.get(INVOICE_PAID, {})
    both = [c for c in acked if c in resolved_at and c in received and c in paid]
    hops = {
        "webhook 2xx -> PaymentReceived": [1000 * (received[c] - acked[c]) for c in both],
        "PaymentReceived -> InvoicePaid": [1000 * (paid[c] - received[c]) for c in both],
        "InvoicePaid -> DunningResolved": [1000 * (resolved_at[c] - paid[c]) for c in both],
    }
    stage_rates = {}
    for name, seen in (
        ("PaymentReceived", received),
        ("InvoicePaid", paid),
        ("DunningResolved", resolved_at),
    ):
        times = sorted(seen[c] for c in acked if c in seen)
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        stage_rates[name] = round((len(times) - 1) / span, 1) if span > 0 else None
    return {
        "payments": len(pairs),
        "events_per_s_observed": stage_rates,
        "rate_offered": rate,
        "rate_achieved": round(len(pairs) / send_s, 1),
        "send_s": round(send_s, 2),
        "acked": len(acked),
        "errors": len(errors),
        "first_errors": errors[:3],
        "redelivered": len(redelivered),
        "first_redelivery_causes": redelivered[:3],
        "webhook_ms": {"p50": round(_pct(hook_ms, 50), 1), "p99": round(_pct(hook_ms, 99), 1)},
        "resolution_ms": {
            "p50": round(_pct(latencies, 50), 1),
            "p99": round(_pct(latencies, 99), 1),
            "max": round(max(latencies, default=float("nan")), 1),
            "mean": round(statistics.fmean(latencies), 1) if latencies else None,
        },
        "resolved": len(latencies),
        "unresolved": len(unresolved),
        "unresolved_clients_sample": unresolved[:5],
        "hops_ms": {k: {"p50": round(_pct(v, 50), 1), "p99": round(_pct(v, 99), 1)} for k, v in hops.items()},
    }


def _print_payments(r: dict[str, Any]) -> None:
    res, hook = r["resolution_ms"], r["webhook_ms"]
    print(f"payment   {r['payments']:,} webhooks offered at {r['rate_offered']:.0f}/s: {r['send_s']:.1f} s "
          f"({r['rate_achieved']:,.0f}/s achieved; webhook p50 {hook['p50']:,.0f} ms, p99 {hook['p99']:,.0f} ms; "
          f"{r['errors']} errors, {r['redelivered']} sent again after a broken connection)")  # fmt: skip
    print(f"payment   2xx -> DunningResolved received: p50 {res['p50']:,.0f} ms, p99 {res['p99']:,.0f} ms, "
          f"max {res['max']:,.0f} ms ({r['resolved']:,} resolved, {r['unresolved']:,} not resolved)")  # fmt: skip
    print("          hops (p50/p99 ms): " + "; ".join(
        f"{k} {v['p50']:,.0f}/{v['p99']:,.0f}" for k, v in r["hops_ms"].items()))  # fmt: skip
    print("          events/s observed: " + ", ".join(
        f"{k} {v if v is not None else '-'}" for k, v in r["events_per_s_observed"].items()))  # fmt: skip
    if r["errors"]:
        print("          first errors: " + " | ".join(r["first_errors"]))
    if r["unresolved"]:
        print(f"          unresolved clients, e.g. {r['unresolved_clients_sample'][:3]}")


# ------------------------------------------------------------------------------------------ baselines


async def _healthz_rate(http: httpx.AsyncClient, url: str, n: int) -> float:
    async def one() -> None:
        response = await http.get(f"{url}/healthz")
        response.raise_for_status()

    await _bounded(IN_FLIGHT, [one() for _ in range(200)])  # warm-up
    started = time.perf_counter()
    await _bounded(IN_FLIGHT, [one() for _ in range(n)])
    return n / (time.perf_counter() - started)


async def _broker_round_trip(bootstrap: str, rate: float, n: int, fetch_wait_ms: int = 20) -> list[float]:
    """aiokafka produce -> consume at ``rate``/s on a topic of its own: latency per record in ms.

    ``fetch_wait_ms`` is the consumer's ``fetch_max_wait_ms`` (aiokafka's default, which the services keep, is
    500; the embedded broker answers a fetch when that wait is over rather than when a record arrives).
    """
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench_rtt_{uuid.uuid4().hex[:6]}_")
    topic = kafka.topic(str(Topic.PAYMENT_EVENTS))
    await ensure_topics(kafka, [topic])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=fetch_wait_ms
    )
    producer = make_producer(kafka)
    await consumer.start()
    await producer.start()
    sent: dict[int, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    try:
        parts = await _partitions(consumer, topic)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)  # a topic of its own, empty

        async def consume() -> None:
            while len(latencies) < n:
                batches = await consumer.getmany(timeout_ms=50)
                now = time.time()
                for records in batches.values():
                    for record in records:
                        i = int(record.key or b"0")
                        if i in sent:
                            latencies.append(1000 * (now - sent[i]))
            done.set()

        reader = asyncio.create_task(consume())
        start = time.monotonic()
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.time()
            await producer.send(topic, key=str(i).encode(), value=b'{"bench":"rtt"}')
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


# ------------------------------------------------------------------------------------------ phases


def _reminder_morning(due: date) -> datetime:
    """10:00 UTC on the first weekday at least one day after ``due`` (the default policy's first step)."""
    day = due + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 10, 0, tzinfo=UTC)


async def _run(stack: RunningStack, var: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"clients": N, "payment_rate_target": RATE}
    stop = asyncio.Event()
    collector = Collector(stack.config.bootstrap_servers)
    reader = asyncio.create_task(collector.run(stop))
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    timeout = httpx.Timeout(60.0)
    try:
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
            api = Api(stack, http)

            # baselines -------------------------------------------------------------------------------
            health_rate = await _healthz_rate(http, api.urls["invoice"], 3000)
            rtt = await _broker_round_trip(stack.config.bootstrap_servers, RATE, int(RATE * 10))
            rtt_p50, rtt_p99 = _pct(rtt, 50), _pct(rtt, 99)
            rtt_default = await _broker_round_trip(stack.config.bootstrap_servers, RATE, int(RATE * 5), 500)
            print(
                f"baseline  GET /healthz (invoice-svc, {IN_FLIGHT} in flight, the same httpx client as the REST writes,"
                f" which bounds both rates: bench/invoice has the server-bound figures): {health_rate:,.0f} req/s"
            )
            print(f"baseline  broker round trip at {RATE:.0f}/s ({len(rtt)} records): "
                  f"p50 {rtt_p50:.1f} ms, p99 {rtt_p99:.1f} ms (consumer fetch_max_wait 20 ms); with aiokafka's "
                  f"default 500 ms wait, as the services run: p50 {_pct(rtt_default, 50):.1f} ms, "
                  f"p99 {_pct(rtt_default, 99):.1f} ms")  # fmt: skip

            # 1. issue ----------------------------------------------------------------------------------
            run = uuid.uuid4().hex[:8]
            today = datetime.now(UTC).date()
            due = today + timedelta(days=1)
            started = time.perf_counter()
            client_ids: list[str] = await _bounded(IN_FLIGHT, [api.create_client(i, run) for i in range(N)])
            clients_s = time.perf_counter() - started
            t_inv = time.perf_counter()
            invoices: list[tuple[str, int]] = await _bounded(
                IN_FLIGHT,
                [api.issue_invoice(c, f"B{run}-{i:06d}", today, due) for i, c in enumerate(client_ids)],
            )
            invoices_s = time.perf_counter() - t_inv
            load_s = time.perf_counter() - started
            write_rate = 2 * N / load_s
            print(f"issue     {N:,} clients in {clients_s:.1f} s ({N / clients_s:,.0f}/s), {N:,} invoices in "
                  f"{invoices_s:.1f} s ({N / invoices_s:,.0f}/s); {write_rate:,.0f} REST writes/s "
                  f"= {write_rate / health_rate:.0%} of GET /healthz")  # fmt: skip

            # 2. overdue -> case -> reminder -> email ---------------------------------------------------
            wanted = set(client_ids)
            clock = await api.call("GET", "dunning", "/v1/admin/clock")
            sim_now = datetime.fromisoformat(clock["now"])
            target = _reminder_morning(due)
            delta = target - sim_now
            seconds = max(1, int(delta.total_seconds()))
            t_adv = time.perf_counter()
            moved = await api.call("POST", "dunning", "/v1/admin/clock/advance", {"seconds": seconds})
            print(f"overdue   clock {sim_now:%a %Y-%m-%d %H:%M} -> {moved['now']} (invoices due {due})")
            limit = max(120.0, N / 5)  # a cap only: the wait ends when every client is seen
            await collector.wait_for(CASE_OPENED, wanted, limit)
            opened_s = time.perf_counter() - t_adv
            await collector.wait_for(REMINDER, wanted, limit)
            reminded_s = time.perf_counter() - t_adv
            await collector.wait_for(SENT_FOR_CASE, wanted, limit)
            sent_s = time.perf_counter() - t_adv
            mails = sum(1 for _ in (var / "mail").rglob("*.eml"))
            cases, reminders, sent = (collector.clients(k) for k in (CASE_OPENED, REMINDER, SENT_FOR_CASE))
            print(f"overdue   {cases:,} cases opened in {opened_s:.1f} s, {reminders:,} ReminderRequested in "
                  f"{reminded_s:.1f} s, {sent:,} NotificationSent in {sent_s:.1f} s ({mails:,} .eml files; "
                  f"{collector.counts[FAILED]} NotificationFailed)")  # fmt: skip

            # 3. payment -> resolution -----------------------------------------------------------------
            # A light-load probe first (the pipeline's own latency), then everyone else at RATE.
            pairs = list(zip(client_ids, invoices, strict=True))
            light_n = min(LIGHT_N, N // 10)
            light = await _payments(api, collector, pairs[:light_n], LIGHT_RATE) if light_n else None
            if light is not None:
                _print_payments(light)
            idle_before = cpu_snapshot(stack)
            await asyncio.sleep(IDLE_PROBE_S)
            idle = cpu_per_item(idle_before, cpu_snapshot(stack), 1)
            idle = {k: round(v / IDLE_PROBE_S, 1) for k, v in idle.items()}
            print("          idle CPU ms per second before the main run: " + ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(idle.items(), key=lambda kv: -kv[1])))  # fmt: skip
            cpu_before = cpu_snapshot(stack)
            main_run = await _payments(api, collector, pairs[light_n:], RATE)
            cpu = cpu_per_item(cpu_before, cpu_snapshot(stack), len(pairs) - light_n)
            main_run["cpu_ms_per_payment"] = cpu
            main_run["idle_cpu_ms_per_s"] = idle
            _print_payments(main_run)
            print("          CPU ms per payment (2 cores = 10 ms per payment at 200/s in all): " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])) +
                f"; total {sum(cpu.values()):.2f}")  # fmt: skip
            p50, p99 = main_run["resolution_ms"]["p50"], main_run["resolution_ms"]["p99"]
            achieved = main_run["rate_achieved"]
            verdict = "met" if p99 < P99_GOAL_MS and achieved >= 0.95 * RATE else "NOT met"
            print(f"goal      p99 < {P99_GOAL_MS:.0f} ms at {RATE:.0f} payments/s: {verdict} "
                  f"(p99 {p99:,.0f} ms at {achieved:,.0f}/s achieved)")  # fmt: skip

            out.update(
                {
                    "phases_s": {
                        "clients": round(clients_s, 2),
                        "invoices": round(invoices_s, 2),
                        "cases_opened": round(opened_s, 2),
                        "reminders_requested": round(reminded_s, 2),
                        "notifications_sent": round(sent_s, 2),
                        "payments_sent": main_run["send_s"],
                    },
                    "counts": {
                        "cases_opened": cases,
                        "reminders_requested": reminders,
                        "notifications_sent": sent,
                        "notifications_failed": collector.counts[FAILED],
                        "eml_files": mails,
                        "resolved": main_run["resolved"] + (light["resolved"] if light else 0),
                        "unresolved": main_run["unresolved"] + (light["unresolved"] if light else 0),
                        "events_by_type": dict(collector.counts),
                    },
                    "payments": main_run,
                    "payments_light_load": light,
                    "broker_rtt_ms": {"p50": round(rtt_p50, 1), "p99": round(rtt_p99, 1)},
                    "broker_rtt_ms_fetch_wait_500": {
                        "p50": round(_pct(rtt_default, 50), 1),
                        "p99": round(_pct(rtt_default, 99), 1),
                    },
                    "goal": f"p99 payment-to-resolution < {P99_GOAL_MS:.0f} ms at {RATE:.0f} payments/s",
                    "meets_goal": p99 < P99_GOAL_MS and not main_run["unresolved"]
                    and achieved >= 0.95 * RATE,
                    "figures": [
                        _figure("REST writes (clients + invoices)", write_rate, "req/s",
                                "GET /healthz (same httpx client)", health_rate, None),
                        _figure("invoices issued through REST", N / invoices_s, "inv/s",
                                "GET /healthz (same httpx client)", health_rate, None),
                        _figure("overdue -> reminder emailed (all clients)", N / sent_s, "clients/s",
                                None, None, None),
                        _figure(f"payment -> DunningResolved p50 at {RATE:.0f}/s", p50, "ms",
                                "broker round trip p50", rtt_p50, None),
                        _figure(f"payment -> DunningResolved p99 at {RATE:.0f}/s", p99, "ms",
                                "broker round trip p99", rtt_p99, None),
                        *([_figure(f"payment -> DunningResolved p50 at {LIGHT_RATE:.0f}/s",
                                   light["resolution_ms"]["p50"], "ms", "broker round trip p50", rtt_p50, None),
                           _figure(f"payment -> DunningResolved p99 at {LIGHT_RATE:.0f}/s",
                                   light["resolution_ms"]["p99"], "ms", "broker round trip p99", rtt_p99, None)]
                          if light else []),
                    ],
                }
            )  # fmt: skip
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await reader
    out["bench_process_cpu_s"] = round(time.process_time(), 1)
    return out


def _figure(
    name: str, value: float, unit: str, base_name: str | None, base: float | None, target: float | None
) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 1),
        "unit": unit,
        "baseline_name": base_name,
        "baseline": round(base, 1) if base else None,
        "ratio": round(value / base, 3) if base else None,
        "target": target,
        "lower_is_better": unit == "ms",
    }


async def main() -> dict[str, Any]:
    server = os.environ.get("DATABASE_URL") or local_postgres_url()
    var = Path(tempfile.mkdtemp(prefix="bench-system-"))
    databases: dict[str, str] = {}
    stack: RunningStack | None = None
    ok = False
    try:
        for spec in SERVICES:
            databases[spec.name] = await create_database(server, prefix=f"bench_system_{spec.name}")
        config = StackConfig(
            root=ROOT,
            var=var,
            broker_port=_free_port(),
            smtp_port=_free_port(),
            ports={s.name: _free_port() for s in SERVICES},
            database_url=None,  # no shared ar_<svc> databases: each service gets its own below
            clock_speed=1.0,
            service_env={s.name: {f"{s.env_prefix}DATABASE__URL": databases[s.name]} for s in SERVICES},
        )
        print(f"system    {N:,} clients; stack in {var} on PostgreSQL ({', '.join(databases)} databases)")
        t0 = time.perf_counter()
        stack = await start_stack(config)
        print(f"system    stack ready in {time.perf_counter() - t0:.1f} s: {stack.urls()}")
        result = await _run(stack, var)
        ok = True
        return result
    finally:
        if stack is not None:
            await asyncio.to_thread(stack.stop)
        for url in databases.values():
            with contextlib.suppress(Exception):
                await drop_database(url)
        if ok and os.environ.get("BENCH_SYSTEM_KEEP") != "1":
            shutil.rmtree(var, ignore_errors=True)
        else:
            print(f"system    logs kept in {var}/log")


if __name__ == "__main__":
    from ar_events.loop import run

    print(json.dumps(run(main()), indent=2, default=str))
