"""invoice-svc integration fixtures: a migrated database, an API key, the ASGI app through httpx."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from ar_events.clock import ManualClock
from ar_events.settings import DatabaseSettings, KafkaSettings
from ar_events.testing import PostgresServer, asyncpg_dsn, create_database, drop_database
from ar_web import create_api_key
from invoice_svc.__main__ import migrate
from invoice_svc.api import create_app
from invoice_svc.bootstrap import Runtime
from invoice_svc.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Svc:
    app: FastAPI
    http: httpx.AsyncClient
    clock: ManualClock
    runtime: Runtime
    keys: dict[str, str]
    url: str

    async def client(self, **overrides: Any) -> dict[str, Any]:
        body = client_body(**overrides)
        r = await self.http.post("/v1/clients", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def invoice(self, client_id: str, **overrides: Any) -> dict[str, Any]:
        r = await self.http.post("/v1/invoices", json=invoice_body(client_id, **overrides))
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.http.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


_n = 0


def client_body(**overrides: Any) -> dict[str, Any]:
    global _n
    _n += 1
    body: dict[str, Any] = {
        "external_id": f"ERP-{_n}-{id(overrides)}",
        "name": f"Client {_n}",
        "segment": "smb",
        "tags": ["retail"],
        "account_manager": {"name": "Claire Dubois", "email": "claire@example.com"},
        "contacts": [{"name": "Paul", "email": "paul@example.com", "phone": "+33 1 23", "role": "billing"}],
        "language": "fr",
        "time_zone": "Europe/Paris",
        "country": "FR",
        "payment_terms_days": 30,
        "credit_limit": {"amount_minor": 500_000, "currency": "EUR"},
    }
    body.update(overrides)
    return body


def invoice_body(client_id: str, **overrides: Any) -> dict[str, Any]:
    global _n
    _n += 1
    body: dict[str, Any] = {
        "client_id": client_id,
        "number": f"F-{_n}",
        "currency": "EUR",
        "issue_date": "2026-03-01",
        "lines": [{"description": "Bread", "quantity": 10, "unit_price": {"amount_minor": 1_000, "currency": "EUR"},
                   "tax_rate_bp": 2000}],
    }  # fmt: skip
    body.update(overrides)
    return body


def settings_for(url: str, kafka: KafkaSettings | None = None) -> Settings:
    return Settings(database=DatabaseSettings(url=url), kafka=kafka or KafkaSettings())


async def start_service(url: str, kafka: KafkaSettings | None = None) -> tuple[Svc, Settings]:
    settings = settings_for(url, kafka)
    if url.startswith("sqlite"):
        await asyncio.to_thread(migrate, settings)  # PostgreSQL copies come migrated from the template
    clock = ManualClock(T0)
    app = create_app(settings, clock=clock, background=())
    runtime: Runtime = app.state.runtime
    keys = {}
    async with runtime.sessionmaker() as session:
        keys["all"] = await create_api_key(session, "all", "invoices:write,reports:read")
        keys["write"] = await create_api_key(session, "writer", "invoices:write")
        keys["read"] = await create_api_key(session, "reader", "reports:read")
        await session.commit()
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://invoice.test",
        headers={"Authorization": f"Bearer {keys['all']}"},
    )
    return Svc(app=app, http=http, clock=clock, runtime=runtime, keys=keys, url=url), settings


@pytest.fixture(scope="session")
def migrated_template(postgres_server: PostgresServer | None) -> Iterator[str | None]:
    """A PostgreSQL database migrated once per session; each test copies it (CREATE DATABASE .. TEMPLATE)."""
    if postgres_server is None:
        yield None
        return
    url = asyncio.run(create_database(postgres_server.url, prefix="tinvtpl"))
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
    name = f"tinv_{uuid.uuid4().hex[:16]}"
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
    """The service on PostgreSQL and on SQLite (core API tests run on both)."""
    s, _ = await start_service(any_database_url)
    try:
        yield s
    finally:
        await s.http.aclose()
        await s.runtime.close()


@pytest_asyncio.fixture
async def pg_svc(postgres_url: str) -> AsyncIterator[Svc]:
    """The service on PostgreSQL only."""
    s, _ = await start_service(postgres_url)
    try:
        yield s
    finally:
        await s.http.aclose()
        await s.runtime.close()
