"""Transactional outbox: events are rows written in the caller's transaction; the relay publishes them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ar_events.db import PgDriver, is_postgres
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
    if is_postgres(session):
        await _enqueue_pg(session, envelopes, extra, created)
        return
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
    await session.execute(_INSERT, rows)


# One statement on PostgreSQL: the per-key advisory locks and the NOTIFY are a one-time filter (InitPlans run
# before the first row is produced, so the locks are held before any ``nextval`` hands out an outbox id), then
# every row from arrays, in the order given (``WITH ORDINALITY``; the relay publishes per key in id order).
_ENQUEUE_PG = (
    f"INSERT INTO {_OUTBOX.name} (event_id, topic, key, type, value, headers, created_at)"
    " SELECT u.e, u.t, u.k, u.ty, u.v, CAST($6 AS text)::json, $7"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY AS u(e, t, k, ty, v, o)"
    " WHERE (SELECT count(pg_advisory_xact_lock(hashtextextended(x, 7283))) FROM unnest($8::text[]) AS x) >= 0"
    " AND (SELECT count(pg_notify($9, ''))) = 1"
    " ORDER BY u.o"
)


async def _enqueue_pg(
    session: AsyncSession,
    envelopes: tuple[Envelope[Any], ...],
    extra: dict[str, str] | None,
    created: datetime,
) -> None:
    driver = await PgDriver.of(session)
    status = await driver.execute(
        _ENQUEUE_PG,
        [env.id for env in envelopes],
        [str(type(env.data).TOPIC) for env in envelopes],
        [env.subject for env in envelopes],
        [env.type for env in envelopes],
        [encode(env) for env in envelopes],
        json.dumps(extra) if extra is not None else None,
        created,
        sorted({env.subject for env in envelopes}),
        NOTIFY_CHANNEL,
    )
    if status != f"INSERT 0 {len(envelopes)}":  # never drop an event silently (the filter must pass)
        raise RuntimeError(f"outbox insert wrote {status!r} for {len(envelopes)} events")


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
