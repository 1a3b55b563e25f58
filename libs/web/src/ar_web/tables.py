"""The tables ar_web needs in every service's database: ``api_key`` and ``idempotency_key``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)


def _api_key_columns() -> list[Column[object]]:
    return [
        Column("id", String(36), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("prefix", String(16), nullable=False, comment="First characters of the key, for display"),
        Column("key_hash", String(64), nullable=False, unique=True, comment="SHA-256 hex of the key"),
        Column("scopes", Text, nullable=False, comment="Space-separated scopes"),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked_at", DateTime(timezone=True), nullable=True),
    ]


def _idempotency_columns() -> list[Column[object]]:
    return [
        Column("scope", String(200), nullable=False, comment="Route or operation the key belongs to"),
        Column("key", String(255), nullable=False),
        Column("fingerprint", String(64), nullable=False, comment="SHA-256 of the canonical request"),
        Column("status_code", Integer, nullable=True, comment="NULL while the request is in progress"),
        Column("response_body", Text, nullable=True),
        Column("response_headers", Text, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    ]


@dataclass(frozen=True, slots=True)
class WebTables:
    api_key: Table
    idempotency_key: Table


def add_web_tables(metadata: MetaData) -> WebTables:
    """Define ``api_key`` and ``idempotency_key`` in a service's MetaData (for create_all and autogenerate)."""
    api_key = Table("api_key", metadata, *_api_key_columns())
    idempotency_key = Table(
        "idempotency_key",
        metadata,
        *_idempotency_columns(),
        PrimaryKeyConstraint("scope", "key", name="pk_idempotency_key"),
    )
    return WebTables(api_key=api_key, idempotency_key=idempotency_key)


# The runtime queries use these definitions; the schema is the same in every service's MetaData.
_metadata = MetaData()
TABLES = add_web_tables(_metadata)
API_KEY = TABLES.api_key
IDEMPOTENCY_KEY = TABLES.idempotency_key
