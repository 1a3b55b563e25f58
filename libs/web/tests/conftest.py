"""Fixtures for ar_web tests: a tiny service app over a real SQLite file or PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ar_events.db import make_engine
from ar_web import (
    IdempotencyKey,
    Page,
    PageParams,
    Principal,
    ProblemError,
    add_web_tables,
    authenticated,
    begin_idempotent,
    create_api_key,
    create_service_app,
    database_check,
    make_page,
    page_params,
    problem_responses,
    require_scopes,
)

PG_ADMIN_DSN = os.environ.get("AR_WEB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

metadata = MetaData()
add_web_tables(metadata)
thing = Table(
    "thing",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("total", Integer, nullable=False),
)


class Line(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0, le=1_000_000)


class ThingIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    lines: list[Line] = Field(min_length=1)


class ThingOut(BaseModel):
    id: int
    name: str
    total: int


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    write_key: str
    read_key: str
    state: dict[str, Any] = field(default_factory=dict)

    async def count_things(self) -> int:
        async with self.sessionmaker() as session:
            return int((await session.execute(select(func.count()).select_from(thing))).scalar_one())


def build_app(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine, harness_state: dict[str, Any]
) -> FastAPI:
    async def broker_check() -> None:
        if not harness_state["ready"]["broker"]:
            raise ConnectionError("broker down")

    app = create_service_app(
        "thing-svc",
        "1.0.0",
        readiness={"database": database_check(engine), "broker": broker_check},
        sessionmaker=sessionmaker,
    )

    @app.post("/v1/things", status_code=201, response_model=ThingOut, responses=problem_responses(409))
    async def create_thing(
        body: ThingIn,
        principal: Annotated[Principal, Depends(require_scopes("things:write"))],
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        async with sessionmaker() as session, session.begin():
            guard = await begin_idempotent(
                session, scope="POST /v1/things", key=idempotency_key, request=body
            )
            if guard.replay is not None:
                return guard.replay
            if body.name == "forbidden":
                raise ProblemError(409, "Name taken", "That name is reserved", field="name")
            total = sum(line.quantity for line in body.lines)
            new_id = (
                await session.execute(
                    thing.insert().values(name=body.name, total=total).returning(thing.c.id)
                )
            ).scalar_one()
            if harness_state["hold"]:
                await asyncio.sleep(harness_state["hold"])
            if harness_state.get("fail_once"):
                harness_state["fail_once"] = False
                raise ProblemError(503, "Downstream unavailable", "failing on purpose after the reservation")
            return await guard.complete(
                session,
                201,
                ThingOut(id=new_id, name=body.name, total=total),
                headers={"Location": f"/v1/things/{new_id}"},
            )

    @app.get("/v1/things", response_model=Page[ThingOut])
    async def list_things(
        principal: Annotated[Principal, Depends(authenticated())],
        params: Annotated[PageParams, Depends(page_params)],
    ) -> Page[ThingOut]:
        after = params.position() or 0
        async with sessionmaker() as session:
            rows = (
                await session.execute(
                    select(thing).where(thing.c.id > after).order_by(thing.c.id).limit(params.limit + 1)
                )
            ).all()
        items = [ThingOut(id=r.id, name=r.name, total=r.total) for r in rows]
        return make_page(items, params.limit, lambda item: item.id)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    return app


async def _create_pg_database() -> str:
    name = f"ar_web_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """One PostgreSQL database for the session (tests reset its tables); None when PostgreSQL is absent."""
    try:
        name = asyncio.run(_create_pg_database())
    except (OSError, asyncpg.PostgresError):
        yield None
        return
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_drop_pg_database(name))


@pytest.fixture(params=["sqlite", "postgresql"])
def web_db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None) -> str:
    """An empty schema: a fresh SQLite file, or the session's PostgreSQL database (tables recreated)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'web.db'}"
    if pg_database is None:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    return pg_database


@pytest.fixture
async def harness(web_db_url: str) -> AsyncIterator[Harness]:
    engine = make_engine(web_db_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    async with sessionmaker() as session:
        write_key = await create_api_key(session, "writer", "things:write")
        read_key = await create_api_key(session, "reader", ["reports:read"])
        await session.commit()
    state: dict[str, Any] = {"ready": {"broker": True}, "hold": 0.0}
    app = build_app(sessionmaker, engine, state)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Harness(
            app=app,
            client=client,
            engine=engine,
            sessionmaker=sessionmaker,
            write_key=write_key,
            read_key=read_key,
            state=state,
        )
    await engine.dispose()
