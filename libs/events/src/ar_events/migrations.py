"""Alembic helpers: create or drop the plumbing tables from a service's migration."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

from ar_events.tables import add_plumbing_tables


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
