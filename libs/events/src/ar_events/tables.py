"""The plumbing tables (outbox, inbox, relay lease), added to any service's SQLAlchemy ``MetaData``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
)

OUTBOX = "outbox"
INBOX = "inbox"
RELAY_LEASE = "outbox_relay_lease"

#: BIGINT identity on PostgreSQL; INTEGER PRIMARY KEY (the rowid, autoincrementing) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class PlumbingTables:
    outbox: Table
    inbox: Table
    relay_lease: Table

    def __iter__(self) -> Iterator[Table]:
        return iter((self.outbox, self.inbox, self.relay_lease))


def add_plumbing_tables(metadata: MetaData) -> PlumbingTables:
    """Define outbox, inbox and the relay lease in ``metadata`` (idempotent: returns existing tables)."""
    if OUTBOX in metadata.tables:
        return PlumbingTables(metadata.tables[OUTBOX], metadata.tables[INBOX], metadata.tables[RELAY_LEASE])
    outbox = Table(
        OUTBOX,
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("topic", String(249), nullable=False, comment="Logical topic; the relay applies the prefix"),
        Column("key", String(255), nullable=False),
        Column("type", String(255), nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSON(none_as_null=True), nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
        Column("published_at", UtcDateTime, nullable=True),
        UniqueConstraint("event_id", name="uq_outbox_event_id"),
        comment="Transactional outbox: events written with the state change, published by the relay",
    )
    # The relay's hot query: unpublished rows in id order. Partial, so it stays tiny.
    Index(
        "ix_outbox_unpublished",
        outbox.c.id,
        postgresql_where=outbox.c.published_at.is_(None),
        sqlite_where=outbox.c.published_at.is_(None),
    )
    # Retention and re-publish by time range.
    Index("ix_outbox_created_at", outbox.c.created_at)
    inbox = Table(
        INBOX,
        metadata,
        Column("consumer", String(200), nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("processed_at", UtcDateTime, nullable=False),
        PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
        comment="Idempotent consumer: one row per (consumer, event id), written with the handler's effect",
    )
    lease = Table(
        RELAY_LEASE,
        metadata,
        Column("name", String(100), nullable=False),
        Column("holder", String(200), nullable=True),
        Column("expires_at", UtcDateTime, nullable=True),
        PrimaryKeyConstraint("name", name="pk_outbox_relay_lease"),
        comment="Which relay instance may publish this database's outbox, until when",
    )
    return PlumbingTables(outbox, inbox, lease)


_META = MetaData()
#: Tables bound to a private MetaData, for the plumbing's own queries (the same names as in any service).
TABLES = add_plumbing_tables(_META)
