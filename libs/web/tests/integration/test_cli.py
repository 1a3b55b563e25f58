"""`python -m x_svc api-key create|list|revoke` through ar_web.cli on a real SQLite database."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_events.db import make_engine, make_sessionmaker
from ar_web import ApiKeyStore, add_web_tables
from ar_web.cli import add_api_key_parser, api_key_main, run_api_key


def _factory(url: str) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(make_engine(url))


def _verify(url: str, key: str) -> frozenset[str] | None:
    async def go() -> frozenset[str] | None:
        engine = make_engine(url)
        try:
            principal = await ApiKeyStore(make_sessionmaker(engine)).verify(key)
        finally:
            await engine.dispose()
        return principal.scopes if principal else None

    return asyncio.run(go())


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}"

    async def create() -> None:
        engine = make_engine(url)
        metadata = MetaData()
        add_web_tables(metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        await engine.dispose()

    asyncio.run(create())
    return url


def test_create_list_and_revoke(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    key = "ar_" + "k" * 40
    argv = ["create", "--name", "dev", "--scopes", "invoices:write,ops", "--key", key]
    assert api_key_main(argv, lambda: _factory(url)) == 0
    assert capsys.readouterr().out.strip() == key
    assert _verify(url, key) == frozenset({"invoices:write", "ops"})

    # Same explicit key again (the dev stack on every start): updated, not duplicated.
    assert (
        api_key_main(["create", "--name", "dev", "--scopes", "all", "--key", key], lambda: _factory(url)) == 0
    )
    capsys.readouterr()
    assert api_key_main(["list"], lambda: _factory(url)) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1
    assert "payments:admin" in rows[0]["scopes"]
    assert "key_hash" not in rows[0] and key not in json.dumps(rows)

    assert api_key_main(["revoke", key], lambda: _factory(url)) == 0
    assert _verify(url, key) is None
    assert api_key_main(["revoke", "ar_" + "z" * 40], lambda: _factory(url)) == 1


def test_generated_key_is_printed_and_unknown_scopes_warned(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert api_key_main(["create", "--name", "ci", "--scopes", "invoice:write"], lambda: _factory(url)) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert key.startswith("ar_") and len(key) == 46
    assert "invoice:write" in captured.err
    assert _verify(url, key) == frozenset({"invoice:write"})


def test_malformed_explicit_key_is_refused(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        api_key_main(["create", "--name", "x", "--scopes", "ops", "--key", "short"], lambda: _factory(url))
        == 2
    )
    assert "must start with 'ar_'" in capsys.readouterr().err


def test_run_api_key_opens_the_database_at_the_url(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="x_svc")
    add_api_key_parser(parser.add_subparsers(dest="command", required=True))
    key = "ar_" + "u" * 40
    args = parser.parse_args(["api-key", "create", "--name", "dev", "--scopes", "ops", "--key", key])
    assert run_api_key(args, url, pool_size=2) == 0
    assert capsys.readouterr().out.strip() == key
    assert _verify(url, key) == frozenset({"ops"})
    assert run_api_key(parser.parse_args(["api-key", "revoke", "ar_" + "z" * 40]), url) == 1
