"""With DATABASE_URL the stack creates one PostgreSQL database per service (idempotently)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from ar_events.testing import PostgresServer
from ar_ops.stack import ServiceSpec, StackConfig, create_databases


@pytest.fixture
async def config(tmp_path: Path, postgres_server: PostgresServer | None) -> AsyncIterator[StackConfig]:
    if postgres_server is None:
        pytest.skip("no PostgreSQL server")
    suffix = uuid.uuid4().hex[:10]
    services = tuple(
        ServiceSpec(name, f"{name}_svc", f"{name.upper()}_", 0, database_name=f"t_stack_{name}_{suffix}")
        for name in ("invoice", "payment")
    )
    cfg = StackConfig(
        root=tmp_path, var=tmp_path / "var", database_url=postgres_server.url, services=services
    )
    yield cfg
    conn = await asyncpg.connect(
        cfg.database_for(services[0]).replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres"
    )
    try:
        for spec in services:
            await conn.execute(f'DROP DATABASE IF EXISTS "{spec.database}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_databases_are_created_once_and_reachable(config: StackConfig) -> None:
    made = await create_databases(config)
    assert made == [s.database for s in config.services]
    assert await create_databases(config) == []
    for spec in config.services:
        url = config.database_for(spec)
        assert url.startswith("postgresql+asyncpg://") and url.endswith("/" + spec.database)
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            assert await conn.fetchval("SELECT current_database()") == spec.database
        finally:
            await conn.close()
