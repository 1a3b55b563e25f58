"""dunning-svc integration fixtures: a migrated PostgreSQL template copied per test, the service under test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from ar_events.testing import PostgresServer, asyncpg_dsn, create_database, drop_database
from dunning_svc.__main__ import migrate

from .support import Svc, settings_for, start_service


@pytest.fixture(scope="session")
def migrated_template(postgres_server: PostgresServer | None) -> Iterator[str | None]:
    """A PostgreSQL database migrated once per session; each test copies it (CREATE DATABASE .. TEMPLATE)."""
    if postgres_server is None:
        yield None
        return
    url = asyncio.run(create_database(postgres_server.url, prefix="tdunTpl"))
    try:
        migrate(settings_for(url))
        yield url
    finally:
        asyncio.run(drop_database(url))


@pytest_asyncio.fixture
async def postgres_url(migrated_template: str | None) -> AsyncIterator[str]:
    """Overrides the plugin's fixture: a fresh, already migrated copy of the template, dropped afterwards."""
    if migrated_template is None:
        pytest.skip("no PostgreSQL server")
    template = make_url(migrated_template)
    name = f"tdun_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(asyncpg_dsn(template.set(database="postgres")), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template.database}"')
    finally:
        await conn.close()
    url = template.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        await drop_database(url)


@pytest_asyncio.fixture
async def svc(any_database_url: str) -> AsyncIterator[Svc]:
    """The service (no broker, no background tasks) on PostgreSQL and on SQLite."""
    s = await start_service(any_database_url)
    try:
        yield s
    finally:
        await s.http.aclose()
        await s.runtime.close()
