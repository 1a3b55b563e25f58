"""Async SQLAlchemy engines for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str) -> None:
    """Before a SQLite file database is first opened: create its folder (SQLite creates the file, not the folder)."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)


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


class PgDriver:
    """PostgreSQL: statements sent straight to asyncpg, inside a session's transaction.

    SQLAlchemy's execution path (ORM session, compiled-cache lookup, parameter and result processing, the
    DBAPI adapter) costs about 150 µs of client CPU per statement, three times asyncpg's own. Hot paths that
    run a fixed, hand-written statement per transaction (the outbox insert, invoice-svc's issue statements)
    use this instead. Everything else stays as it was: the transaction is the session's (begun here if no
    statement has begun it yet, committed or rolled back by the session), and a failing statement raises the
    same ``sqlalchemy.exc`` error (IntegrityError, OperationalError, ...) the session would have raised, so
    callers and ``is_transient`` see no difference. Parameters are positional (``$1``) and given already
    converted (asyncpg's own codecs: str, int, bytes, date, aware datetime, lists for arrays); JSON goes as
    text cast in the SQL.
    """

    __slots__ = ("_adapted", "_conn", "_dialect")

    def __init__(self, adapted: Any, dialect: Any) -> None:
        self._adapted = adapted
        self._conn = adapted._connection  # asyncpg.Connection
        self._dialect = dialect

    @classmethod
    async def of(cls, session: AsyncSession) -> PgDriver:
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        adapted = raw.dbapi_connection
        if adapted is None:  # pragma: no cover - an invalidated connection
            raise RuntimeError("the session's connection is gone")
        if adapted._transaction is None:  # what SQLAlchemy does before its first statement
            await adapted._start_transaction()
        return cls(adapted, conn.dialect)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._run(self._conn.fetch, sql, args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._run(self._conn.fetchrow, sql, args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run(self._conn.fetchval, sql, args)

    async def execute(self, sql: str, *args: Any) -> str:
        """Run ``sql``; returns the command status (``"INSERT 0 3"``)."""
        return await self._run(self._conn.execute, sql, args)  # type: ignore[no-any-return]

    async def _run(self, method: Any, sql: str, args: tuple[Any, ...]) -> Any:
        try:
            return await method(sql, *args)
        except Exception as exc:
            raise self._translate(exc, sql, args) from exc

    def _translate(self, exc: Exception, sql: str, args: tuple[Any, ...]) -> BaseException:
        """The ``sqlalchemy.exc`` error SQLAlchemy would raise for ``exc`` (a DBAPI-level error wrapped)."""
        from sqlalchemy.exc import DBAPIError

        try:
            self._adapted._handle_exception(exc)  # raises the adapter's DBAPI error for asyncpg's
        except Exception as dbapi_error:
            dbapi = self._dialect.loaded_dbapi
            if not isinstance(dbapi_error, dbapi.Error):
                return dbapi_error
            wrapped: BaseException = DBAPIError.instance(sql, args, dbapi_error, dbapi.Error)
            return wrapped
        return exc  # pragma: no cover - _handle_exception always raises


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


class PgStatement:
    """A SQLAlchemy statement compiled once for :class:`PgDriver`: its ``$n`` text and parameter order.

    Parameters go to asyncpg as they are (no SQLAlchemy bind processing): use it for statements whose
    parameters are plain values asyncpg encodes itself (str, int, bool, date, aware datetime, lists).
    """

    __slots__ = ("defaults", "names", "sql")

    def __init__(self, statement: Any) -> None:
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        compiled = statement.compile(dialect=dialect())  # type: ignore[no-untyped-call]
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.defaults: dict[str, Any] = dict(compiled.params)  # literals the statement binds itself

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        defaults = self.defaults
        return [params[n] if n in params else defaults[n] for n in self.names]
