"""The engine's pool never hands out a connection the server has closed, without a ping per checkout."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from ar_events.db import asyncpg_dsn, make_engine

pytestmark = pytest.mark.integration


async def test_pooled_connections_closed_by_the_server_are_replaced_not_handed_out(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url, pool_size=3)
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        # Three pooled connections, all idle in the pool afterwards.
        async def touch() -> int:
            async with engine.connect() as conn:
                await asyncio.sleep(0.05)
                return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())

        before = set(await asyncio.gather(touch(), touch(), touch()))
        assert len(before) == 3
        killed = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            make_url(postgres_url).database,
        )
        assert len(killed) == 3
        await asyncio.sleep(0.2)  # the event loop reads each server's goodbye
        statements.clear()
        after = set(await asyncio.gather(touch(), touch(), touch()))
        assert after and not (after & before)  # fresh sessions, and no request failed
        assert statements == ["SELECT pg_backend_pid()"] * 3  # no ping round trip per checkout
    finally:
        await admin.close()
        await engine.dispose()


async def test_a_burst_wider_than_the_pool_waits_for_pooled_connections_instead_of_opening_new_ones(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url, pool_size=2)
    try:

        async def backend() -> int:
            async with engine.connect() as conn:
                pid = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                await asyncio.sleep(0.02)
                return pid

        for _ in range(3):  # each burst is three times the pool
            pids = await asyncio.gather(*(backend() for _ in range(6)))
            assert len(set(pids)) <= 2, "a connection beyond the pool was opened (and would be closed again)"
        assert engine.pool.checkedin() == 2  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_pg_driver_runs_in_the_sessions_transaction_and_raises_sqlalchemys_errors(
    postgres_url: str,
) -> None:
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from ar_events.db import PgDriver

    engine = make_engine(postgres_url, pool_size=2)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS pg_driver_t (id int PRIMARY KEY)"))
            await conn.execute(text("TRUNCATE pg_driver_t"))
        # Rolled back with the session: the statement ran inside its transaction (begun by the driver).
        async with sessionmaker() as session:
            driver = await PgDriver.of(session)
            assert await driver.execute("INSERT INTO pg_driver_t VALUES ($1)", 1) == "INSERT 0 1"
            await session.rollback()
        # Mixed with session statements and committed by the session.
        async with sessionmaker() as session, session.begin():
            await session.execute(text("INSERT INTO pg_driver_t VALUES (2)"))
            await (await PgDriver.of(session)).execute("INSERT INTO pg_driver_t VALUES ($1)", 3)
        async with sessionmaker() as session:
            rows = await (await PgDriver.of(session)).fetch("SELECT id FROM pg_driver_t ORDER BY id")
            assert [r["id"] for r in rows] == [2, 3]
        # The error a session statement would raise, and the session rolls back cleanly after it.
        async with sessionmaker() as session:
            with pytest.raises(IntegrityError) as caught:
                await (await PgDriver.of(session)).execute("INSERT INTO pg_driver_t VALUES ($1)", 2)
            assert getattr(caught.value.orig, "sqlstate", None) == "23505"
            await session.rollback()
            assert (await session.execute(text("SELECT count(*) FROM pg_driver_t"))).scalar_one() == 2
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS pg_driver_t"))
        await engine.dispose()
