"""ar_web edge overhead: requests/s of an authenticated GET through create_service_app vs bare FastAPI.

Both apps serve the same trivial route in-process (httpx.ASGITransport, 20 concurrent clients), so the ratio
is the cost of the edge: correlation id, body buffering, metrics, problem handlers, API-key auth (cached).
A third figure is the same GET when the key cache is disabled (one SELECT on SQLite per request).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from sqlalchemy import MetaData

from ar_events.db import make_engine, make_sessionmaker
from ar_web import ApiKeyStore, Principal, add_web_tables, authenticated, create_api_key, create_service_app

REQUESTS = 4000
CONCURRENCY = 20


async def _rate(app: FastAPI, headers: dict[str, str]) -> float:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        assert (await client.get("/v1/ping", headers=headers)).status_code == 200
        per_worker = REQUESTS // CONCURRENCY

        async def worker() -> None:
            for _ in range(per_worker):
                response = await client.get("/v1/ping", headers=headers)
                assert response.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return per_worker * CONCURRENCY / (time.perf_counter() - started)


async def main() -> dict[str, Any]:
    bare = FastAPI()

    @bare.get("/v1/ping")
    async def bare_ping() -> dict[str, str]:
        return {"status": "ok"}

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        metadata = MetaData()
        add_web_tables(metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker() as session:
            key = await create_api_key(session, "bench", "all")
            await session.commit()

        def edge_app(store: ApiKeyStore) -> FastAPI:
            app = create_service_app("bench", "0", readiness={}, api_keys=store)

            @app.get("/v1/ping")
            async def ping(principal: Annotated[Principal, Depends(authenticated())]) -> dict[str, str]:
                return {"status": "ok"}

            return app

        headers = {"Authorization": f"Bearer {key}"}
        baseline = await _rate(bare, {})
        cached = await _rate(edge_app(ApiKeyStore(sessionmaker)), headers)
        uncached = await _rate(edge_app(ApiKeyStore(sessionmaker, ttl_seconds=0)), headers)
        await engine.dispose()

    figures = [
        {
            "name": "authenticated GET through the edge (key cached)",
            "value": round(cached),
            "unit": "req/s",
            "baseline_name": "bare FastAPI GET, no middleware, no auth",
            "baseline": round(baseline),
            "ratio": round(cached / baseline, 2),
            "target": 0.6,
        },
        {
            "name": "authenticated GET, key cache off (SQLite lookup per request)",
            "value": round(uncached),
            "unit": "req/s",
            "baseline_name": "bare FastAPI GET, no middleware, no auth",
            "baseline": round(baseline),
            "ratio": round(uncached / baseline, 2),
            "target": None,
        },
    ]
    for f in figures:
        print(
            f"{f['name']}: {f['value']:,} {f['unit']}  vs  {f['baseline_name']}: {f['baseline']:,}  ratio {f['ratio']}"
        )
    return {"figures": figures, "requests": REQUESTS, "concurrency": CONCURRENCY}


if __name__ == "__main__":
    asyncio.run(main())
