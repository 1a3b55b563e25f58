"""Composition root: builds the engine, the stores, the handlers' dependencies and the relay."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ar_events.clock import Clock, SystemClock
from ar_events.db import make_engine, make_sessionmaker
from ar_events.relay import OutboxRelay
from payment_svc.accounts import SecretStore
from payment_svc.group_commit import GroupCommit
from payment_svc.handlers import Deps, record_webhook
from payment_svc.settings import Settings


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    clock: Clock
    secrets: SecretStore
    deps: Deps
    relay: OutboxRelay | None = None

    async def close(self) -> None:
        await self.engine.dispose()


def build(settings: Settings, *, clock: Clock | None = None, with_relay: bool = False) -> Container:
    """Everything a process needs; the relay only when this process publishes the outbox."""
    clock = clock or SystemClock()
    db = settings.database
    engine = make_engine(db.url, pool_size=db.pool_size, max_overflow=db.max_overflow, echo=db.echo)
    sessionmaker = make_sessionmaker(engine)
    secrets = SecretStore(sessionmaker, settings.accounts, ttl=settings.webhooks.secret_cache_seconds)
    relay = (
        OutboxRelay(sessionmaker, settings.kafka, settings.outbox, name=settings.service_name, clock=clock)
        if with_relay
        else None
    )
    deps = Deps(
        sessionmaker=sessionmaker,
        clock=clock,
        secrets=secrets,
        tolerance_s=settings.webhooks.tolerance_seconds,
        after_commit=relay.wake if relay is not None else (lambda: None),
    )
    if settings.webhooks.group_commit_max > 1:
        deps.group_commit = GroupCommit(
            deps.uow,
            record_webhook,
            now=clock.now,
            max_batch=settings.webhooks.group_commit_max,
            after_commit=deps.after_commit,
        )
    return Container(settings, engine, sessionmaker, clock, secrets, deps, relay)
