"""Composition root: builds the engine, clock, unit-of-work factory, relay and consumer from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ar_events.clock import Clock
from ar_events.consumer import ConsumerRunner, Handler
from ar_events.db import make_engine
from ar_events.envelope import Envelope
from ar_events.kafka import ensure_topics
from ar_events.relay import OutboxRelay
from ar_events.topics import Topic
from ar_web import correlation_id_var
from invoice_svc.handlers import PAYMENT_HANDLERS, EventHandler, Links
from invoice_svc.repository import UnitOfWork
from invoice_svc.settings import SERVICE, Settings

log = logging.getLogger(__name__)

RELAY = "relay"
CONSUMER = "consumer"


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    links: Links
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def make_uow(self, **kw: Any) -> UnitOfWork:
        """A unit of work on a new session; a commit wakes the relay so events leave at once."""
        return UnitOfWork(self.sessionmaker(), self.clock, on_commit=self.relay.wake, **kw)

    def consumer(self) -> ConsumerRunner:
        return ConsumerRunner(
            self.settings.consumer_group,
            [Topic.PAYMENT_EVENTS.value],
            self.sessionmaker,
            consumer_handlers(self.clock),
            self.settings.kafka,
            self.settings.consumer,
            name=f"{SERVICE}.payments",
        )

    async def start(self, parts: Collection[str]) -> None:
        """Start background parts (relay, consumer) as tasks; ``close()`` stops them."""
        if parts:
            await ensure_topics(self.settings.kafka)
        if RELAY in parts:
            self.tasks.append(asyncio.create_task(self.relay.run(self.stop), name="outbox-relay"))
        if CONSUMER in parts:
            self.tasks.append(asyncio.create_task(self.consumer().run(self.stop), name="payment-consumer"))

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=15)
        self.tasks.clear()
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def running(self, parts: Collection[str]) -> AsyncIterator[Runtime]:
        await self.start(parts)
        try:
            yield self
        finally:
            await self.close()


def build(settings: Settings, clock: Clock | None = None) -> Runtime:
    """Everything the process needs, built once at start-up (never at import)."""
    url = settings.database.url
    # No pool pre-ping: make_engine refuses connections the server closed at checkout, without a round trip.
    engine = make_engine(
        url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        echo=settings.database.echo,
    )
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    the_clock = clock or settings.clock.build()
    relay = OutboxRelay(sessionmaker, settings.kafka, settings.outbox, name=SERVICE, clock=the_clock)
    return Runtime(
        settings=settings,
        clock=the_clock,
        engine=engine,
        sessionmaker=sessionmaker,
        relay=relay,
        links=Links(settings.pay_link_base),
    )


async def _consume(
    handler: EventHandler, clock: Clock, session: AsyncSession, envelope: Envelope[Any]
) -> None:
    """Adapter from the runner's (session, envelope) to a handler with a unit of work (runner commits)."""
    correlation_id_var.set(envelope.correlationid)
    uow = UnitOfWork(session, clock, owns_transaction=False, caused_by=envelope)
    await handler(envelope.data, uow)
    await uow.commit()  # writes what the unit of work holds and the outbox rows; the runner commits


def consumer_handlers(clock: Clock) -> Mapping[str, Handler]:
    return {type_: partial(_consume, handler, clock) for type_, handler in PAYMENT_HANDLERS.items()}
