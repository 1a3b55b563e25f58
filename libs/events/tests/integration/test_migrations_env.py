"""The shared Alembic environment (``ar_events.migrations.run_env``) every service's ``migrations/env.py`` calls.

A throwaway Alembic project in tmp_path: one migration that creates a table and then alters it in batch mode (so
SQLite must copy the table), run every way the services and their tools run migrations.
"""

from __future__ import annotations

import asyncio
import io
from argparse import Namespace
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from ar_events.db import make_engine
from ar_events.migrations import upgrade

ENV = """
import os

import sqlalchemy as sa

from ar_events.migrations import run_env

metadata = sa.MetaData()
run_env(metadata, lambda: os.environ["ENVTEST_SETTINGS_URL"], env_var="ENVTEST_DATABASE__URL")
"""

MIGRATION = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table("widget", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(20)))
    with op.batch_alter_table("widget") as batch:
        batch.alter_column("name", existing_type=sa.String(20), type_=sa.String(40), nullable=False)
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "svc"
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (root / "migrations" / "env.py").write_text(ENV)
    (root / "migrations" / "versions" / "0001_widget.py").write_text(MIGRATION)
    return root


def _config(root: Path, x: list[str] | None = None) -> Config:
    """What ``alembic -x ...`` (x) or a service's code builds."""
    cfg = Config(str(root / "alembic.ini"), cmd_opts=Namespace(x=x), output_buffer=io.StringIO())
    cfg.set_main_option("script_location", str(root / "migrations"))
    return cfg


def _schema(url: str) -> tuple[list[str], str | None]:
    """The tables of the database at ``url`` and its Alembic revision."""

    async def go() -> tuple[list[str], str | None]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
                version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
        finally:
            await engine.dispose()
        return sorted(tables), version

    return asyncio.run(go())


def _nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the environment variable and the settings at a database no test expects to be used."""
    monkeypatch.setenv("ENVTEST_SETTINGS_URL", f"sqlite+aiosqlite:///{tmp_path / 'settings.db'}")
    monkeypatch.delenv("ENVTEST_DATABASE__URL", raising=False)


def test_upgrade_runs_the_migrations_on_both_databases_and_makes_the_sqlite_folder(
    root: Path, any_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nowhere(monkeypatch, tmp_path)
    url = any_database_url.replace(
        "/db-", "/not/yet/db-"
    )  # a SQLite file in a folder that does not exist yet
    upgrade(root, url)
    assert _schema(url) == (["alembic_version", "widget"], "0001")
    assert not (tmp_path / "settings.db").exists()


@pytest.mark.parametrize("how", ["url", "database_url", "-x url", "env var", "settings"])
def test_every_way_of_naming_the_database_reaches_it(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    _nowhere(monkeypatch, tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path / 'chosen.db'}"
    cfg = _config(root)
    if how in ("url", "database_url"):
        cfg.attributes[how] = url
    elif how == "-x url":
        cfg = _config(root, x=[f"url={url}"])
    elif how == "env var":
        monkeypatch.setenv("ENVTEST_DATABASE__URL", url)
    else:
        monkeypatch.setenv("ENVTEST_SETTINGS_URL", url)
    command.upgrade(cfg, "head")
    assert _schema(url) == (["alembic_version", "widget"], "0001")
    if how != "settings":
        assert not (tmp_path / "settings.db").exists()


def test_code_wins_over_the_command_line_and_the_environment(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nowhere(monkeypatch, tmp_path)
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("ENVTEST_DATABASE__URL", other)
    cfg = _config(root, x=[f"url={other}"])
    url = f"sqlite+aiosqlite:///{tmp_path / 'chosen.db'}"
    cfg.attributes["url"] = url
    command.upgrade(cfg, "head")
    assert _schema(url)[1] == "0001"
    assert not (tmp_path / "other.db").exists()


async def test_a_given_connection_is_migrated_in_the_callers_transaction(
    root: Path, any_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nowhere(monkeypatch, tmp_path)
    engine = make_engine(any_database_url)

    def migrate(connection: sa.Connection) -> None:
        cfg = _config(root)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    try:
        async with engine.connect() as conn:
            await conn.run_sync(migrate)
            await conn.rollback()  # the caller's transaction: rolled back, nothing stays
        async with engine.begin() as conn:
            await conn.run_sync(migrate)
        async with engine.connect() as conn:
            version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await engine.dispose()
    assert version == "0001"
    assert not (tmp_path / "settings.db").exists()


def test_offline_mode_writes_the_sql_for_the_named_database(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nowhere(monkeypatch, tmp_path)
    cfg = _config(root, x=["url=postgresql+asyncpg://u@h/d"])
    command.upgrade(cfg, "head", sql=True)
    out = cfg.output_buffer.getvalue()  # type: ignore[union-attr]
    assert "CREATE TABLE widget" in out and "INSERT INTO alembic_version" in out
    # PostgreSQL's ALTER, not the table copy batch mode writes for SQLite: the -x url chose the dialect
    assert "ALTER TABLE widget ALTER COLUMN name TYPE VARCHAR(40)" in out
