"""Composition root: builds the adapters once per process and binds the handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ar_events.clock import Clock, SystemClock
from ar_events.consumer import ConsumerRunner
from ar_events.db import make_engine, make_sessionmaker
from ar_events.kafka import ensure_topics
from ar_events.relay import OutboxRelay
from ar_events.topics import Topic
from notify_svc.channels.email import SmtpSender
from notify_svc.channels.webhook import WebhookSender
from notify_svc.dispatcher import Dispatcher
from notify_svc.handlers import build_handlers
from notify_svc.rendering import Renderer
from notify_svc.settings import Settings

log = logging.getLogger(__name__)

CONSUMED_TOPICS = (Topic.INVOICE_EVENTS, Topic.PAYMENT_EVENTS, Topic.DUNNING_EVENTS)


@dataclass
class Services:
    """What every entry point shares: settings, clock, database, templates."""

    settings: Settings
    clock: Clock
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    renderer: Renderer
    dispatcher: Dispatcher | None = field(default=None)

    async def close(self) -> None:
        await self.engine.dispose()


def build(settings: Settings, clock: Clock | None = None) -> Services:
    engine = make_engine(
        settings.database.url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        echo=settings.database.echo,
    )
    return Services(
        settings=settings,
        clock=clock or SystemClock(),
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        renderer=Renderer(settings.templates.override_dir, settings.templates.default_language),
    )


@contextlib.asynccontextmanager
async def outbound(settings: Settings) -> AsyncIterator[tuple[SmtpSender, WebhookSender]]:
    """The process's SMTP connection pool and httpx client, closed on the way out."""
    smtp = SmtpSender(settings.smtp)
    limits = httpx.Limits(max_connections=settings.webhook.max_concurrency)
    async with httpx.AsyncClient(
        timeout=settings.webhook.timeout_s, limits=limits, trust_env=False
    ) as client:
        try:
            yield smtp, WebhookSender(settings.webhook, client)
        finally:
            await smtp.close()


async def run_worker(services: Services, stop: asyncio.Event, *, consume: bool = True) -> None:
    """Consumers, outbox relay and dispatcher until ``stop``; then each finishes its batch and closes."""
    s = services.settings
    async with outbound(s) as (smtp, webhooks):
        relay = OutboxRelay(
            services.sessionmaker, s.kafka, s.outbox, name=s.service_name, clock=services.clock
        )
        dispatcher = Dispatcher(
            services.sessionmaker,
            s,
            services.renderer,
            services.clock,
            smtp=smtp,
            webhooks=webhooks,
            on_commit=relay.wake,
        )
        services.dispatcher = dispatcher
        jobs = [relay.run(stop), dispatcher.run(stop)]
        if consume:
            consumer = ConsumerRunner(
                s.consumer_group,
                [t.value for t in CONSUMED_TOPICS],
                services.sessionmaker,
                build_handlers(services.clock, on_committed=dispatcher.wake),
                s.kafka,
                s.consumer,
                name=s.service_name,
            )
            jobs.append(_consume(consumer, s, stop))
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                stop.set()  # one part died: stop the others cleanly, then report it
                await asyncio.gather(*tasks, return_exceptions=True)
                raise failed[0].exception()  # type: ignore[misc]
        finally:
            services.dispatcher = None


async def _consume(consumer: ConsumerRunner, settings: Settings, stop: asyncio.Event) -> None:
    """Create the topics if needed (without holding up delivery of what is already queued), then consume."""
    bootstrap = asyncio.create_task(ensure_topics(settings.kafka))
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({bootstrap, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not bootstrap.done():
        bootstrap.cancel()
        return
    if bootstrap.exception() is not None:
        log.warning("could not ensure topics: %s", bootstrap.exception())
    try:
        await consumer.run(stop)
    except Exception:
        if not stop.is_set():
            raise
        log.info("consumer stopped before it could connect")
