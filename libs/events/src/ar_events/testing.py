"""pytest plugin: where tests get their broker and database (loaded by the root conftest.py).

Broker, in order: ``KAFKA_BOOTSTRAP_SERVERS``; testcontainers Kafka when a Docker engine answers; the
embedded ``tansu`` broker on a free port. One per test session; each test gets its own topic prefix.

Database, in order: ``DATABASE_URL``; testcontainers PostgreSQL when a Docker engine answers; the local
PostgreSQL on 127.0.0.1:5432 (``PGHOST``/``PGPORT``/``PGUSER`` override); SQLite files otherwise. Each test
gets a fresh database (``CREATE DATABASE`` / a new SQLite file), dropped afterwards.

Set ``AR_TESTCONTAINERS=0`` to skip the Docker probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from ar_events.broker import EmbeddedBroker
from ar_events.db import asyncpg_dsn as asyncpg_dsn  # re-exported for fixtures
from ar_events.envelope import Envelope, new_event
from ar_events.events import EVENT_TYPES, Payload
from ar_events.kafka import ensure_topics
from ar_events.samples import sample_payload
from ar_events.settings import KafkaSettings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- probes


def docker_answers() -> bool:
    """True when a Docker engine answers a ping (a client alone is not enough)."""
    if os.environ.get("AR_TESTCONTAINERS", "1") in ("0", "false", "no"):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


async def _pg_answers(url: str) -> bool:
    import asyncpg  # type: ignore[import-untyped]

    try:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


async def create_database(server_url: str, prefix: str = "t") -> str:
    """Create a uniquely named database on the server of ``server_url``; return its SQLAlchemy URL."""
    import asyncpg

    url = make_url(server_url).set(drivername="postgresql+asyncpg")
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(asyncpg_dsn(url.set(database="postgres")), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database` (terminating its connections)."""
    import asyncpg

    parsed = make_url(url)
    conn = await asyncpg.connect(asyncpg_dsn(parsed.set(database="postgres")), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass(frozen=True)
class PostgresServer:
    """Where fresh test databases are created; ``url`` points at any database on that server."""

    url: str
    origin: str  # "DATABASE_URL", "testcontainers" or "local"


def local_postgres_url() -> str:
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "postgres")
    password = os.environ.get("PGPASSWORD")
    auth = f"{user}:{password}" if password else user
    return f"postgresql+asyncpg://{auth}@{host}:{port}/postgres"


def sample_event(
    type_or_cls: str | type[Payload],
    *,
    client_id: str | None = None,
    source: str = "test",
    time: datetime | None = None,
    caused_by: Envelope[Any] | None = None,
    **fields: Any,
) -> Envelope[Payload]:
    """An envelope around the catalogue's sample payload of a type, with ``fields`` overridden."""
    cls = EVENT_TYPES[type_or_cls] if isinstance(type_or_cls, str) else type_or_cls
    data = {**sample_payload(cls), **fields}
    if client_id is not None:
        data["client_id"] = client_id
    payload = cls.model_validate(data)
    when = time or datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    return new_event(payload, source=source, time=when, caused_by=caused_by)


# ---------------------------------------------------------------------------------------------- broker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's broker (env, testcontainers, or the embedded broker)."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    log_file = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(0, log_file=log_file) as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def embedded_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A private embedded broker for this test only (fault injection: pause/resume/stop it)."""
    with EmbeddedBroker(0, log_file=tmp_path / "tansu.log") as broker:
        yield broker


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest_asyncio.fixture
async def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Kafka settings with a topic prefix of its own; the five topics and their DLQs exist (6 partitions)."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique_prefix())
    await ensure_topics(settings)
    return settings


# ---------------------------------------------------------------------------------------------- database


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    """The PostgreSQL server tests create databases on, or None when there is none (SQLite then)."""
    env = os.environ.get("DATABASE_URL")
    if env:
        yield PostgresServer(env, "DATABASE_URL") if _is_postgres(env) else None
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield PostgresServer(pg.get_connection_url(), "testcontainers")
        return
    local = local_postgres_url()
    yield PostgresServer(local, "local") if asyncio.run(_pg_answers(local)) else None


@pytest_asyncio.fixture
async def postgres_url(postgres_server: PostgresServer | None) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (asyncpg URL), dropped after the test; skips without PostgreSQL."""
    if postgres_server is None:
        pytest.skip("no PostgreSQL server (set DATABASE_URL, or run one on 127.0.0.1:5432)")
    try:
        url = await create_database(postgres_server.url)
    except Exception as exc:
        if postgres_server.origin != "DATABASE_URL":
            raise
        # No CREATEDB right on the given server: use DATABASE_URL as it is (not isolated).
        log.warning("cannot create a test database (%s); using DATABASE_URL as is", exc)
        yield postgres_server.url
        return
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            await drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file database (aiosqlite URL) in the test's tmp_path."""
    return f"sqlite+aiosqlite:///{tmp_path / f'db-{uuid.uuid4().hex[:8]}.sqlite'}"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, postgres_server: PostgresServer | None) -> str:
    """A fresh database for this test: PostgreSQL when one is available, else SQLite."""
    name = "postgres_url" if postgres_server is not None else "sqlite_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(params=["postgresql", "sqlite"])
def any_database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test twice: on a fresh PostgreSQL database (skipped if none) and on a SQLite file."""
    name = "postgres_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(name))
