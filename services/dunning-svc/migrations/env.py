"""Alembic environment: async engines for PostgreSQL and SQLite, batch mode so SQLite can alter tables."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from ar_events.db import make_engine
from dunning_svc.repository import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DUNNING_DATABASE__URL")
    if not url:
        from dunning_svc.settings import Settings

        url = Settings().database.url
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)  # fmt: skip
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = make_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
