"""The edge's answers (problems, 401/403, 413, 422, pagination) conform to the OpenAPI it publishes."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_events.db import make_engine
from ar_web import create_api_key

from ..conftest import build_app, metadata


def _app(tmp: Path) -> tuple[Any, str]:
    async def setup() -> str:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp / 'st.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        async with sessionmaker() as session:
            key = await create_api_key(session, "st", "things:write")
            await session.commit()
        await engine.dispose()
        return key

    key = asyncio.run(setup())
    engine = make_engine(f"sqlite+aiosqlite:///{tmp / 'st.db'}")
    sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)
    return build_app(sessionmaker, engine, {"ready": {"broker": True}, "hold": 0.0}), key


# schemathesis needs the schema at import time; the SQLite file lives in a temporary folder removed at exit.
_tmp = Path(tempfile.mkdtemp(prefix="ar_web_schemathesis_"))
atexit.register(shutil.rmtree, _tmp, True)
APP, KEY = _app(_tmp)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.include(path_regex="^/v1/").parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    if case.query:
        # Cursors are opaque: a generated string is not one the API handed out (a 400, tested apart).
        case.query.pop("cursor", None)
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"})


@pytest.mark.parametrize("auth", [None, "Bearer ar_" + "x" * 40])
def test_auth_failures_conform(auth: str | None) -> None:
    operation = schema["/v1/things"]["GET"]
    case = operation.Case(headers={"Authorization": auth} if auth else {})
    response = case.call()
    assert response.status_code == 401
    case.validate_response(response)
