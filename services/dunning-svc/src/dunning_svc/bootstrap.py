"""Composition root: engine, clock, policies, case work, relay, consumer and scheduler, built from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ar_events.clock import Clock
from ar_events.consumer import ConsumerRunner
from ar_events.db import make_engine
from ar_events.events import Sender, SenderKind
from ar_events.kafka import ensure_topics
from ar_events.relay import OutboxRelay
from dunning_svc.calendars import calendar_for
from dunning_svc.casework import CaseWork, Outcome
from dunning_svc.consumer import build_consumer
from dunning_svc.policies import PolicySpec, default_policy_path, load_policy_file
from dunning_svc.policybook import PolicyBook, sync_policies
from dunning_svc.scheduler import Scheduler
from dunning_svc.settings import SERVICE, Settings

log = logging.getLogger(__name__)

RELAY = "relay"
CONSUMER = "consumer"
SCHEDULER = "scheduler"
ALL_PARTS = (RELAY, CONSUMER, SCHEDULER)


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    specs: list[PolicySpec]
    work: CaseWork | None = None
    scheduler: Scheduler | None = None
    runner: ConsumerRunner | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ar_sender(self) -> Sender:
        box = self.settings.ar_mailbox
        return Sender(kind=SenderKind.AR_MAILBOX, name=box.name, email=box.email)

    async def load_policies(self) -> PolicyBook:
        """Store new policy versions and build the case work on them (start-up)."""
        source = str(self.settings.policies_file or default_policy_path())
        for attempt in range(3):
            try:
                async with self.sessionmaker() as session, session.begin():
                    book = await sync_policies(session, self.specs, source, self.clock.now())
                break
            except IntegrityError:  # another replica stored the same version at the same moment
                if attempt == 2:
                    raise
        self.work = CaseWork(book, self.ar_sender)
        calendar_for("UTC", "US", self.clock.now().year)  # imports the holiday tables once, at start-up
        self.scheduler = Scheduler(
            self.sessionmaker, self.work, self.clock, self.settings.scheduler, on_commit=self.relay.wake
        )
        tune_gc()
        return book

    def committed(self, outcome: Outcome) -> None:
        """After a consumer transaction: publish its events now."""
        if outcome.envelopes:
            self.relay.wake()

    def consumer(self) -> ConsumerRunner:
        assert self.work is not None
        return build_consumer(
            self.settings.consumer_group, self.sessionmaker, self.work, self.clock, self.settings.kafka,
            self.settings.consumer, self.committed,
        )  # fmt: skip

    async def start(self, parts: Collection[str]) -> None:
        if self.work is None:
            await self.load_policies()
        assert self.scheduler is not None
        if RELAY in parts or CONSUMER in parts:
            await ensure_topics(self.settings.kafka)
        if RELAY in parts:
            self.tasks.append(asyncio.create_task(self.relay.run(self.stop), name="outbox-relay"))
        if CONSUMER in parts:
            self.runner = self.consumer()
            self.tasks.append(asyncio.create_task(self.runner.run(self.stop), name="dunning-consumer"))
        if SCHEDULER in parts and self.settings.scheduler.enabled:
            self.tasks.append(asyncio.create_task(self.scheduler.run(self.stop), name="dunning-scheduler"))

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


#: generation-0 threshold of the cyclic garbage collector once the service has started (CPython default: 700)
GC_GEN0_THRESHOLD = 200_000


def tune_gc() -> None:
    """Start-up, once the modules, schemas, policies and holiday tables are loaded: take everything alive
    now out of the cyclic collector's sight (``gc.freeze``) and run its young collections less often.

    A scheduler batch or a consumer poll allocates tens of thousands of short-lived, acyclic objects (rows,
    models, JSON), freed by reference counting; with CPython's defaults the collector still walked the
    whole heap over and over and took about 35% of the scheduler's CPU in bench/dunning.py. Cycles are still
    collected, only in larger steps.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def build(settings: Settings, clock: Clock | None = None) -> Runtime:
    """Everything the process needs, built once at start-up. A bad policy file raises PolicyFileError here."""
    specs = load_policy_file(settings.policies_file)
    engine = make_engine(
        settings.database.url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        echo=settings.database.echo,
    )
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    the_clock = clock or settings.clock.build()
    relay = OutboxRelay(sessionmaker, settings.kafka, settings.outbox, name=SERVICE, clock=the_clock)
    return Runtime(settings=settings, clock=the_clock, engine=engine, sessionmaker=sessionmaker, relay=relay,
                   specs=specs)  # fmt: skip
