"""Run the Alembic migrations from code: the CLI (``migrate``), tests and benchmarks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

SERVICE_ROOT = Path(__file__).resolve().parents[2]


def _config() -> Config:
    cfg = Config(str(SERVICE_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(SERVICE_ROOT / "migrations"))
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    return cfg


def migrate(url: str) -> None:
    """Upgrade the database at ``url`` to head (call outside an event loop)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    cfg = _config()
    cfg.attributes["url"] = url
    command.upgrade(cfg, "head")


async def migrate_engine(engine: AsyncEngine) -> None:
    """Upgrade through an existing async engine (inside a running event loop)."""

    def run(connection: Any) -> None:
        cfg = _config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(run)
