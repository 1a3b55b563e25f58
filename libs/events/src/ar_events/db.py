"""Async SQLAlchemy engines for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 0, echo: bool = False, **kwargs: Any
) -> AsyncEngine:
    """An async engine; on SQLite: WAL, busy_timeout, foreign keys, and ``BEGIN IMMEDIATE`` transactions.

    On PostgreSQL the pool keeps up to ``pool_size`` connections and, by default, opens no overflow ones:
    SQLAlchemy closes an overflow connection as soon as it is returned, so under a burst wider than the pool
    every transaction paid for a new backend (a fork and authentication on the server, a handshake here),
    which cost invoice-svc about 1 ms of its own CPU per request at 32 concurrent clients. Callers beyond the
    pool wait for a connection instead (``pool_timeout``, 30 s); the database has no more cores to give them.

    SQLite transactions start with ``BEGIN IMMEDIATE`` so a transaction that reads and then writes cannot
    fail with "database is locked" when another writer got there first: writers queue on busy_timeout.
    """
    if is_sqlite(url):
        engine = create_async_engine(url, echo=echo, **kwargs)
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
            # Let SQLAlchemy (not pysqlite) decide where transactions begin.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, echo=echo, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        event.listen(engine.sync_engine, "checkout", _reject_closed_connection)
    return engine


def _reject_closed_connection(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    """Hand out no pooled connection the server has closed (restart, ``pg_terminate_backend``, idle timeout).

    SQLAlchemy's ``pool_pre_ping`` would cost three round trips per checkout on asyncpg (BEGIN, ``;``,
    ROLLBACK), i.e. on every transaction. A server that ends a session tells the client on the socket, and
    asyncpg marks the connection closed as soon as the event loop reads that, so looking at the flag is free
    and catches the usual cases; a connection that dies silently is still caught by SQLAlchemy's disconnect
    handling (the pool is invalidated) and the retries of the caller (consumers, relay, scheduler).
    """
    from sqlalchemy.exc import DisconnectionError

    raw = getattr(dbapi_connection, "_connection", None)  # asyncpg's Connection inside the adapter
    is_closed = getattr(raw, "is_closed", None)
    if is_closed is not None and is_closed():
        raise DisconnectionError("the server closed this pooled connection")  # the pool tries a fresh one


def asyncpg_dsn(url: str | URL) -> str:
    """A plain ``postgresql://`` DSN (for asyncpg itself) from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The one sessionmaker of a process (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


# SQLSTATEs worth retrying: connection exceptions, serialization failure, deadlock, admin shutdown
# (pg_terminate_backend), crash shutdown, cannot connect now, too many connections.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40001", "40P01", "57P01", "57P02", "57P03", "53300")


def is_transient(exc: BaseException) -> bool:
    """True for errors caused by the database or broker being unavailable (retry), not by the data."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OSError | ConnectionError | TimeoutError | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return True
        return _asyncpg_transient(exc.orig)
    try:
        from aiokafka.errors import KafkaConnectionError, KafkaError
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, KafkaConnectionError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def _asyncpg_transient(orig: BaseException | None) -> bool:
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover
        return False
    cause = orig.__cause__ if orig is not None else None
    return isinstance(
        cause,
        asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.SerializationError
        | asyncpg.exceptions.DeadlockDetectedError
        | OSError,
    )
