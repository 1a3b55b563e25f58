"""Alembic helpers: every service's ``migrations/env.py``, its ``migrate`` command, and the plumbing tables.

A service's ``env.py`` is one call::

    run_env(metadata, settings_url, env_var="INVOICE_DATABASE__URL")

and its ``migrate`` command ``upgrade(SERVICE_ROOT, settings.database.url)``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from ar_events.db import ensure_sqlite_dir, make_engine
from ar_events.tables import add_plumbing_tables


def upgrade(root: Path, url: str) -> None:
    """``migrate``: bring the database at ``url`` to head with the migrations under ``root`` (call outside a loop).

    ``root`` holds ``alembic.ini`` and ``migrations/``; on SQLite the database's folder is created first.
    """
    from alembic import command
    from alembic.config import Config

    ensure_sqlite_dir(url)
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["url"] = url
    command.upgrade(cfg, "head")


def env_url(attributes: dict[str, Any], x_arguments: dict[str, str], env_var: str | None) -> str | None:
    """The database an Alembic run was pointed at, first found: ``Config.attributes["url"]`` or
    ``["database_url"]`` (set by code), ``-x url=...`` (alembic's command line), then ``env_var``."""
    url = attributes.get("url") or attributes.get("database_url") or x_arguments.get("url")
    if not url and env_var:
        url = os.environ.get(env_var)
    return str(url) if url else None


def run_env(metadata: MetaData, settings_url: Callable[[], str], *, env_var: str | None = None) -> None:
    """The body of a service's ``migrations/env.py``: run its migrations offline (SQL out) or online.

    Online it uses the connection given in ``Config.attributes["connection"]`` (in the caller's transaction),
    else an async engine on :func:`env_url` or, when none is given, ``settings_url()`` (the service's settings).
    Autogenerate writes batch operations so a generated migration also runs on SQLite.
    """
    from alembic import context

    config = context.config

    def url() -> str:
        found = env_url(config.attributes, context.get_x_argument(as_dictionary=True), env_var)
        return found or settings_url()

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async(url: str) -> None:
        engine = make_engine(url)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run)
                await connection.commit()
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    asyncio.run(run_async(url()))


def create_plumbing_tables(op: Any) -> None:
    """Call from a migration's ``upgrade()``: creates outbox, inbox and the relay lease (with indexes)."""
    metadata = MetaData()
    tables = add_plumbing_tables(metadata)
    metadata.create_all(op.get_bind(), tables=list(tables), checkfirst=True)


def drop_plumbing_tables(op: Any) -> None:
    """Call from a migration's ``downgrade()``."""
    metadata = MetaData()
    tables = add_plumbing_tables(metadata)
    metadata.drop_all(op.get_bind(), tables=list(tables), checkfirst=True)
