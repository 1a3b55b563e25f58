"""The stack's floor for a write endpoint, beside its trivial endpoint: a diagnostic for bench/invoice.

One uvicorn worker serving a bare FastAPI app on the same stack as the services (uvloop, httptools, pydantic,
asyncpg), with no auth, no middleware, no outbox and no SQLAlchemy:

- ``GET /healthz``: ``{"status": "ok"}``;
- ``POST /v1/things``: a pydantic body shaped like an invoice (two lines), then one transaction holding one
  INSERT, answered 201 with the new id.

Nothing a real write endpoint needs can cost less than this, so its rate beside ``/healthz`` is an upper bound
for any endpoint that validates a body and commits one row: the invoice endpoint does that and more.

    python -m bench.floor_app PORT DSN
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

from ar_events.loop import run


class Money(BaseModel):
    amount_minor: int = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class Line(BaseModel):
    description: str = Field(min_length=1, max_length=500)
    quantity: int = Field(gt=0)
    unit_price: Money
    tax_rate_bp: int = Field(ge=0, le=10_000)


class Thing(BaseModel):
    client_id: str
    number: str = Field(min_length=1, max_length=64)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    lines: list[Line] = Field(min_length=1)


class Created(BaseModel):
    id: str
    number: str


def create_app(dsn: str) -> FastAPI:
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(dsn, min_size=20, max_size=20)
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS floor_thing (id text PRIMARY KEY, number text, total bigint)"
            )
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/things", status_code=201)
    async def create(body: Thing) -> Created:
        assert pool is not None
        new_id = uuid.uuid4().hex
        total = sum(line.quantity * line.unit_price.amount_minor for line in body.lines)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO floor_thing (id, number, total) VALUES ($1, $2, $3)",
                               new_id, body.number, total)  # fmt: skip
        return Created(id=new_id, number=body.number)

    return app


async def _serve(port: int, dsn: str) -> None:
    config = uvicorn.Config(create_app(dsn), host="127.0.0.1", port=port, log_config=None, access_log=False)
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    run(_serve(int(sys.argv[1]), sys.argv[2]))
