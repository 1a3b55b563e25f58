"""payment-svc integration fixtures: a migrated database, the app over httpx, signers, a topic reader."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
import standardwebhooks
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from sqlalchemy import func, select

from ar_events.clock import ManualClock
from ar_events.envelope import Envelope, decode
from ar_events.settings import KafkaSettings
from ar_events.topics import Topic
from ar_web import create_api_key
from payment_svc.api import create_app
from payment_svc.bootstrap import Container, build
from payment_svc.domain.signatures import sign_stripe
from payment_svc.repository import metadata
from payment_svc.schema import migrate_engine
from payment_svc.settings import AccountKind, AccountSettings, Settings

STRIPE_SECRET = "whsec_stripe_test_secret_0123456789"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-secret-bytes-0123").decode()
ADMIN_KEY = "ar_test_admin_key_0123456789abcdefghij"
WRITE_KEY = "ar_test_write_key_0123456789abcdefghij"
READ_KEY = "ar_test_read_key_0123456789abcdefghijk"


def stripe_event(
    event_type: str = "payment_intent.succeeded",
    obj: dict[str, Any] | None = None,
    *,
    event_id: str | None = None,
    created: int | None = None,
) -> bytes:
    """A Stripe event body (the shape Stripe sends), compact JSON."""
    doc = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created or int(time.time()),
        "livemode": False,
        "type": event_type,
        "data": {"object": obj or payment_intent()},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def payment_intent(
    pi: str | None = None,
    amount: int = 12_500,
    currency: str = "eur",
    metadata: dict[str, str] | None = None,
    customer: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": pi or f"pi_{uuid.uuid4().hex[:24]}",
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "currency": currency,
        "customer": customer,
        "metadata": {"client_id": "cli_1", "invoice_ids": "inv_1,inv_2"} if metadata is None else metadata,
        "payment_method_types": ["card"],
        "status": "succeeded",
        **extra,
    }


def standard_body(event_type: str = "payment.received", **data: Any) -> bytes:
    base = {
        "payment_reference": f"TRX-{uuid.uuid4().hex[:10]}",
        "amount_minor": 50_000,
        "currency": "EUR",
        "method": "transfer",
        "client_id": "cli_9",
    }
    doc = {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": {**base, **data}}
    return json.dumps(doc).encode()


@dataclass
class Service:
    """The app under test with its container, clock and an authenticated-or-not HTTP client."""

    client: httpx.AsyncClient
    container: Container
    clock: ManualClock
    kafka: KafkaSettings | None
    sent: list[str] = field(default_factory=list)

    async def stripe(
        self,
        body: bytes,
        *,
        secret: str = STRIPE_SECRET,
        ts: int | None = None,
        header: str | None = None,
        path: str = "/v1/webhooks/stripe",
    ) -> httpx.Response:
        stamp = int(self.clock.now().timestamp()) if ts is None else ts
        sig = header if header is not None else sign_stripe(body, secret, stamp)
        return await self.client.post(
            path, content=body, headers={"Stripe-Signature": sig, "Content-Type": "application/json"}
        )

    async def standard(
        self,
        body: bytes,
        *,
        account: str = "standard",
        secret: str = STANDARD_SECRET,
        msg_id: str | None = None,
        ts: int | None = None,
    ) -> httpx.Response:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        when = datetime.fromtimestamp(int(self.clock.now().timestamp()) if ts is None else ts, UTC)
        # The independent signer: the standardwebhooks package.
        sig = standardwebhooks.Webhook(secret).sign(msg_id, when, body.decode())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": sig,
            "content-type": "application/json",
        }
        return await self.client.post(f"/v1/webhooks/standard/{account}", content=body, headers=headers)

    async def count(self, table: str) -> int:
        async with self.container.sessionmaker() as s:
            return int(
                (await s.execute(select(func.count()).select_from(metadata.tables[table]))).scalar_one()
            )

    async def outcomes(self) -> list[str]:
        """The recorded outcome of every stored webhook, in receive order."""
        async with self.container.sessionmaker() as s:
            t = metadata.tables["webhook_event"]
            return list((await s.execute(select(t.c.outcome).order_by(t.c.received_at, t.c.id))).scalars())

    async def outbox(self) -> list[Envelope[Any]]:
        async with self.container.sessionmaker() as s:
            t = metadata.tables["outbox"]
            rows = (await s.execute(select(t.c.value).order_by(t.c.id))).all()
        return [decode(r.value) for r in rows]

    async def publish(self) -> int:
        """Run the outbox relay until the backlog is published."""
        relay = self.container.relay
        assert relay is not None
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        try:
            for _ in range(200):
                async with self.container.sessionmaker() as s:
                    t = metadata.tables["outbox"]
                    left = (
                        await s.execute(select(func.count()).select_from(t).where(t.c.published_at.is_(None)))
                    ).scalar_one()
                if left == 0:
                    break
                relay.wake()
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("relay did not publish the outbox")
        finally:
            stop.set()
            await task
        return relay.published


async def read_topic(kafka: KafkaSettings, topic: Topic, idle_s: float = 2.0) -> list[Envelope[Any]]:
    """Every record on a (prefixed) topic from the beginning, decoded, until ``idle_s`` without new ones."""
    consumer = AIOKafkaConsumer(
        kafka.topic(topic),
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Envelope[Any]] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batch:
                break
            for records in batch.values():
                out.extend(decode(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


async def make_service(url: str, kafka: KafkaSettings | None) -> AsyncIterator[Service]:
    settings = Settings(
        database={"url": url},
        kafka=kafka or KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        accounts={"stripe": AccountSettings(kind=AccountKind.STRIPE, secrets=[SecretStr(STRIPE_SECRET)])},
        webhooks={"secret_cache_seconds": 0},
    )
    clock = ManualClock(datetime.fromtimestamp(int(time.time()), UTC))
    container = build(settings, clock=clock, with_relay=kafka is not None)
    await migrate_engine(container.engine)
    async with container.sessionmaker() as s:
        await create_api_key(s, "admin", "all", key=ADMIN_KEY)
        await create_api_key(s, "writer", "payments:write", key=WRITE_KEY)
        await create_api_key(s, "reader", "reports:read", key=READ_KEY)
        await s.commit()
    await container.secrets.add_account("standard", AccountKind.STANDARD, STANDARD_SECRET, clock.now())
    app = create_app(settings, container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payment.test") as client:
            yield Service(client, container, clock, kafka)
    await container.close()


@pytest_asyncio.fixture
async def svc(any_database_url: str) -> AsyncIterator[Service]:
    """The service on PostgreSQL and on SQLite (no broker)."""
    async for s in make_service(any_database_url, None):
        yield s


@pytest_asyncio.fixture
async def pg_svc(postgres_url: str) -> AsyncIterator[Service]:
    async for s in make_service(postgres_url, None):
        yield s


@pytest_asyncio.fixture
async def svc_kafka(any_database_url: str, kafka_settings: KafkaSettings) -> AsyncIterator[Service]:
    """The service with a relay to the real broker, on PostgreSQL and on SQLite."""
    async for s in make_service(any_database_url, kafka_settings):
        yield s


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def h() -> Any:
    """Helpers for test modules (conftest functions are not importable under importlib mode)."""

    class H:
        stripe_event = staticmethod(stripe_event)
        payment_intent = staticmethod(payment_intent)
        standard_body = staticmethod(standard_body)
        read_topic = staticmethod(read_topic)
        auth = staticmethod(auth)
        STRIPE_SECRET = STRIPE_SECRET
        STANDARD_SECRET = STANDARD_SECRET
        ADMIN_KEY = ADMIN_KEY
        WRITE_KEY = WRITE_KEY
        READ_KEY = READ_KEY

    return H


# ------------------------------------------------------------------------------------------ processes


def service_env(url: str, kafka: KafkaSettings, port: int, **extra: str) -> dict[str, str]:
    """Environment for ``python -m payment_svc`` as a real process."""
    import os

    accounts = {
        "stripe": {"kind": "stripe", "secrets": [STRIPE_SECRET]},
        "standard": {"kind": "standard", "secrets": [STANDARD_SECRET]},
    }
    env = {
        **os.environ,
        "PAYMENT_DATABASE__URL": url,
        "PAYMENT_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "PAYMENT_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "PAYMENT_HTTP__PORT": str(port),
        "PAYMENT_ACCOUNTS": json.dumps(accounts),
        "PAYMENT_LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "payment_svc", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def start_service(env: dict[str, str], port: int, command: str = "all") -> Any:
    """Start the service as a process and wait until /healthz answers."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "payment_svc", command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"service exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("service did not start")


def stop_service(proc: Any, *, hard: bool = False) -> None:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stderr:
        proc.stderr.close()


@pytest.fixture
def proc_tools() -> Any:
    class P:
        env = staticmethod(service_env)
        cli = staticmethod(run_cli)
        start = staticmethod(start_service)
        stop = staticmethod(stop_service)

    return P
