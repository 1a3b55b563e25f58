"""Transactional outbox: events are rows written in the caller's transaction; the relay publishes them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ar_events.envelope import Envelope, encode
from ar_events.tables import TABLES

_OUTBOX = TABLES.outbox
_INSERT = insert(_OUTBOX)


async def enqueue(
    session: AsyncSession,
    *envelopes: Envelope[Any],
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> None:
    """Add ``envelopes`` to the outbox inside the session's transaction; never commits.

    On PostgreSQL it also takes a transaction-scoped advisory lock per record key, so two transactions
    that emit for the same client commit one after the other and outbox ids follow commit order per key
    (the relay publishes in id order). SQLite serialises writers anyway.
    """
    if not envelopes:
        return
    created = (now or datetime.now(UTC)).astimezone(UTC)
    extra = dict(headers) if headers else None
    rows = [
        {
            "event_id": env.id,
            "topic": str(type(env.data).TOPIC),
            "key": env.subject,
            "type": env.type,
            "value": encode(env),
            "headers": extra,
            "created_at": created,
        }
        for env in envelopes
    ]
    if session.get_bind().dialect.name == "postgresql":
        await lock_keys(session, sorted({env.subject for env in envelopes}))
    await session.execute(_INSERT, rows)


#: PostgreSQL NOTIFY channel: relays LISTEN on it and wake as soon as a transaction that enqueued commits.
NOTIFY_CHANNEL = "ar_outbox"

_LOCK_KEYS_AND_NOTIFY = text(
    "SELECT (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 7283)))"
    " FROM unnest(CAST(:keys AS text[])) AS k), pg_notify(:channel, '')"
).bindparams(bindparam("keys"), bindparam("channel"))


async def lock_keys(session: AsyncSession, keys: list[str]) -> None:
    """PostgreSQL: serialise transactions that emit for the same keys until they commit, and NOTIFY the
    relays (delivered at commit, never for a rollback; PostgreSQL folds repeats within a transaction)."""
    await session.execute(_LOCK_KEYS_AND_NOTIFY, {"keys": keys, "channel": NOTIFY_CHANNEL})


async def unpublished_count(session: AsyncSession) -> int:
    """Rows the relay has not published yet (backlog)."""
    result = await session.execute(
        select(func.count()).select_from(_OUTBOX).where(_OUTBOX.c.published_at.is_(None))
    )
    return int(result.scalar_one())
