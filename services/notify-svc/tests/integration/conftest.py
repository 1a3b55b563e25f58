"""Real parts for notify-svc integration tests: an aiosmtpd server, an HTTP receiver, a migrated database."""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiosmtpd.controller import Controller

from ar_events.broker import free_port
from ar_events.envelope import Envelope, decode
from ar_events.kafka import make_producer
from ar_events.settings import DatabaseSettings, KafkaSettings
from ar_events.topics import Topic
from notify_svc.__main__ import migrate
from notify_svc.bootstrap import Services, build, run_worker
from notify_svc.settings import DeliverySettings, Settings, SmtpSettings, WebhookSettings


class MailSink:
    """A real SMTP server (aiosmtpd) that keeps every message and can refuse chosen recipients with 550."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[tuple[list[str], bytes]] = []
        self.refuse: set[str] = set()
        self.stall_replies = (
            0  # answer this many DATA commands only after `stall_s` (the client gives up first)
        )
        self.stall_s = 0.0
        self._controller: Controller | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.lower() in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content)))
        if self.stall_replies > 0:
            self.stall_replies -= 1
            await asyncio.sleep(self.stall_s)  # accepted, but the reply comes too late
        return "250 2.0.0 Ok: queued"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def parsed(self) -> list[EmailMessage]:
        return [email.message_from_bytes(data, policy=policy.default) for _, data in self.messages]  # type: ignore[misc]


@pytest.fixture
def mail_sink() -> Iterator[MailSink]:
    sink = MailSink()
    sink.start()
    yield sink
    sink.stop()


@dataclass
class Receiver:
    """A real HTTP server that answers webhook POSTs with a scripted list of statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "/hooks/ar") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status = rec.statuses.pop(0) if rec.statuses else 200
            rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def make_settings(
    database_url: str, kafka: KafkaSettings | None = None, *, smtp_port: int = 1025, **delivery: Any
) -> Settings:
    """Fast schedules so retries happen within a test; loopback webhooks allowed (tests' receivers)."""
    opts: dict[str, Any] = {
        "email_schedule_s": (0.3,) * 6,
        "webhook_schedule_s": (0.2,) * 6,
        "jitter": 0.0,
        "poll_interval_ms": 50,
        "lease_s": 30.0,
    }
    opts.update(delivery)
    return Settings(
        database=DatabaseSettings(url=database_url, pool_size=5),
        kafka=kafka or KafkaSettings(),
        smtp=SmtpSettings(
            port=smtp_port,
            from_address="ar@seller.example",
            from_name="ACME Receivables",
            quick_retries=1,
            timeout_s=5,
        ),
        webhook=WebhookSettings(
            allow_loopback=True,
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            connect_retries=1,
            timeout_s=5,
        ),
        delivery=DeliverySettings(**opts),
    )


async def migrated(settings: Settings) -> None:
    await asyncio.to_thread(migrate, settings)


@contextlib.asynccontextmanager
async def running(settings: Settings, *, consume: bool = True) -> AsyncIterator[Services]:
    """notify-svc's worker (consumers, relay, dispatcher) in this process until the block ends."""
    await migrated(settings)
    services = build(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(services, stop, consume=consume))
    try:
        yield services
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await services.close()


async def publish(kafka: KafkaSettings, *envelopes: Envelope[Any]) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        for env in envelopes:
            await producer.send_and_wait(kafka.topic(type(env.data).TOPIC.value), env.encode(), key=env.key)
    finally:
        await producer.stop()


class NotifyTopic:
    """Reads ar.notify.events from the beginning (no group) and keeps every event."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.events: list[Envelope[Any]] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> NotifyTopic:
        topic = self.kafka.topic(Topic.NOTIFY_EVENTS.value)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers, enable_auto_commit=False
        )
        await self._consumer.start()
        parts = [TopicPartition(topic, p) for p in range(self.kafka.partitions)]
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def wait_for(self, pred: Callable[[Envelope[Any]], bool], timeout: float = 30) -> Envelope[Any]:
        assert self._consumer is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for env in self.events:
                if pred(env):
                    return env
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.events.extend(decode(r.value) for r in records)
        raise AssertionError(f"no matching event on the notify topic; saw {[e.type for e in self.events]}")


async def eventually(check: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def verify_json(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    return data


@pytest_asyncio.fixture
async def settings_factory(database_url: str) -> Callable[..., Settings]:
    def factory(**kwargs: Any) -> Settings:
        return make_settings(database_url, **kwargs)

    return factory


async def ingest(services: Services, *envelopes: Envelope[Any]) -> None:
    """Hand events to the handlers in one transaction each, as the consumer does (without the broker)."""
    from notify_svc.handlers import build_handlers

    handlers = build_handlers(services.clock)
    for env in envelopes:
        async with services.sessionmaker() as session, session.begin():
            await handlers[env.type](session, env)


@contextlib.asynccontextmanager
async def dispatching(settings: Settings, clock: Any = None) -> AsyncIterator[Services]:
    """Migrated database + the dispatcher loop with real SMTP and HTTP clients, no broker."""
    from notify_svc.bootstrap import outbound
    from notify_svc.dispatcher import Dispatcher

    await migrated(settings)
    services = build(settings, clock)
    stop = asyncio.Event()
    async with outbound(settings) as (smtp, webhooks):
        services.dispatcher = Dispatcher(
            services.sessionmaker, settings, services.renderer, services.clock, smtp=smtp, webhooks=webhooks
        )
        task = asyncio.create_task(services.dispatcher.run(stop))
        try:
            yield services
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await services.close()
