"""Alembic helpers: create or drop the ar_web tables inside a service migration."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ar_web.tables import _api_key_columns, _idempotency_columns


def create_web_tables(op: Any) -> None:
    """Call from a migration's ``upgrade()``: creates ``api_key`` and ``idempotency_key`` with their indexes."""
    op.create_table("api_key", *_api_key_columns())
    op.create_table(
        "idempotency_key",
        *_idempotency_columns(),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_key"),
    )


def drop_web_tables(op: Any) -> None:
    """Call from a migration's ``downgrade()``."""
    op.drop_table("idempotency_key")
    op.drop_table("api_key")
