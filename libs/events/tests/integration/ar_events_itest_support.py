"""Shared pieces of the plumbing integration tests (and of the crash-injection child processes)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase

from ar_events.consumer import Handler
from ar_events.db import make_engine, make_sessionmaker
from ar_events.envelope import Envelope, new_event
from ar_events.events import PaymentReceived
from ar_events.migrations import create_plumbing_tables
from ar_events.outbox import enqueue
from ar_events.tables import TABLES

META = MetaData()
APPLIED = Table(
    "applied",
    META,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    # deliberately NOT unique: a double application must show up as a second row
    Column("event_id", String(64), nullable=False),
    Column("key", String(128), nullable=False),
    Column("consumer", String(100), nullable=False),
)


class _Base(DeclarativeBase):
    metadata = META


class Applied(_Base):
    __table__ = APPLIED


TYPE = PaymentReceived.TYPE
TOPIC = str(PaymentReceived.TOPIC)


async def setup_database(url: str) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """Engine and sessionmaker with the plumbing tables (via the Alembic helper) and the effect table."""
    engine = make_engine(url)

    def migrate(conn: Any) -> None:
        create_plumbing_tables(Operations(MigrationContext.configure(conn)))
        META.create_all(conn)

    async with engine.begin() as conn:
        await conn.run_sync(migrate)
    return engine, make_sessionmaker(engine)


def payment(key: str, n: int, *, event_id: str | None = None) -> Envelope[PaymentReceived]:
    payload = PaymentReceived.model_validate(
        {
            "client_id": key,
            "payment_id": f"pay_{n}",
            "amount": {"amount_minor": 100 + n, "currency": "EUR"},
            "method": "card",
            "processor": "stripe",
            "received_at": "2026-03-02T09:30:00Z",
        }
    )
    from datetime import UTC, datetime

    return new_event(payload, source="test", time=datetime.now(UTC), event_id=event_id or str(uuid.uuid4()))


def recorder(consumer: str) -> Handler:
    """A handler whose effect is one row in ``applied`` per application."""

    async def on_event(session: AsyncSession, envelope: Envelope[Any]) -> None:
        # Unit of work: the row is flushed with the others of the batch when the runner commits.
        session.add(Applied(event_id=envelope.id, key=envelope.subject, consumer=consumer))

    return on_event


async def write(
    sessionmaker: async_sessionmaker[AsyncSession],
    envelopes: Sequence[Envelope[Any]],
    per_tx: int = 50,
    pause: float = 0.0,
    after_commit: Callable[[], None] | None = None,
) -> None:
    for i in range(0, len(envelopes), per_tx):
        async with sessionmaker() as session, session.begin():
            await enqueue(session, *envelopes[i : i + per_tx])
        if after_commit:
            after_commit()
        if pause:
            await asyncio.sleep(pause)


async def applied_rows(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Any]:
    async with sessionmaker() as session:
        return list((await session.execute(select(APPLIED).order_by(APPLIED.c.seq))).all())


async def applied_count(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(APPLIED))).scalar_one())


async def unpublished(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        q = select(func.count()).select_from(TABLES.outbox).where(TABLES.outbox.c.published_at.is_(None))
        return int((await session.execute(q)).scalar_one())


async def wait_until(cond: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1) -> None:
    """Poll ``cond``. A database error while polling counts as "not yet": the fault tests terminate every
    backend, and a pooled connection can be handed out in the instant between asyncpg reading the server's
    FATAL message and the event loop reporting the closed socket ("cannot switch to state 15; another
    operation (2) is in progress"). The poll is the test's own observation, not the code under test."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await cond():
                return
        except DBAPIError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def assert_exactly_once(rows: Sequence[Any], expected_ids: set[str]) -> None:
    ids = [r.event_id for r in rows]
    assert set(ids) == expected_ids, (
        f"missing {len(expected_ids - set(ids))}, unexpected {len(set(ids) - expected_ids)}"
    )
    assert len(ids) == len(expected_ids), f"{len(ids) - len(set(ids))} events applied twice"
