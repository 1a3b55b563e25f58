"""Tables, repositories and the unit of work of payment-svc. Every query lives here; only the UoW commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_events.db import PgDriver, is_postgres
from ar_events.envelope import Envelope
from ar_events.outbox import enqueue
from ar_events.tables import UtcDateTime, add_plumbing_tables
from ar_web.tables import add_web_tables

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
add_plumbing_tables(metadata)
add_web_tables(metadata)

Money = BigInteger

processor_account = Table(
    "processor_account",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(16), nullable=False, comment="stripe or standard"),
    Column("created_at", UtcDateTime, nullable=False),
    comment="A webhook sender: the stripe endpoint, or a Standard Webhooks processor (bank, direct debit)",
)

webhook_secret = Table(
    "webhook_secret",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account", String(64), ForeignKey("processor_account.name", ondelete="CASCADE"), nullable=False),
    Column("secret", Text, nullable=False, comment="Signing secret; never logged or returned by the API"),
    Column("fingerprint", String(32), nullable=False, comment="sha256 prefix, safe to display"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("removed_at", UtcDateTime, nullable=True),
    Index("ix_webhook_secret_account", "account"),
    comment="Signing secrets per account; several are active during a rotation",
)

webhook_event = Table(
    "webhook_event",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("processor_event_id", String(256), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("outcome", String(16), nullable=False, comment="processed, ignored, parked"),
    Column("raw_body", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("account", "processor_event_id", name="uq_webhook_event_account_event"),
    Index("ix_webhook_event_received_at", "received_at"),
    comment="Every verified webhook as received (raw body and headers); one row per processor event id",
)

payment = Table(
    "payment",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(128), nullable=True, comment="NULL while parked"),
    Column("amount_minor", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("method", String(16), nullable=False),
    Column("processor", String(64), nullable=False, comment="account name, or manual"),
    Column("reference", String(128), nullable=True),
    Column("invoice_ids", JSON, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("webhook_event_id", String(40), nullable=True),
    Column("note", Text, nullable=True),
    Index("ix_payment_client", "client_id", "recorded_at", "id"),
    comment="Money received; one row per processor payment (processor, reference)",
)
# One payment per processor payment reference; manual payments may repeat a check number.
Index(
    "uq_payment_processor_reference",
    payment.c.processor,
    payment.c.reference,
    unique=True,
    postgresql_where=payment.c.processor != "manual",
    sqlite_where=payment.c.processor != "manual",
)

payment_failure = Table(
    "payment_failure",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(128), nullable=True),
    Column("payment_id", String(40), nullable=False, comment="The payment this attempt would have been"),
    Column("processor", String(64), nullable=False),
    Column("reference", String(128), nullable=False),
    Column("processor_event_id", String(256), nullable=False),
    Column("amount_minor", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("method", String(16), nullable=False),
    Column("decline_code", String(128), nullable=True),
    Column("failure_kind", String(8), nullable=False),
    Column("retry_possible", Boolean, nullable=False),
    Column("failed_at", UtcDateTime, nullable=False),
    Column("webhook_event_id", String(40), nullable=True),
    UniqueConstraint("processor", "processor_event_id", name="uq_payment_failure_event"),
    comment="Failed payment attempts (declines, returned debits before settlement)",
)

refund = Table(
    "refund",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(128), nullable=True),
    Column("payment_id", String(40), nullable=False),
    Column("processor", String(64), nullable=False),
    Column("reference", String(160), nullable=False),
    Column("amount_minor", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=True),
    Column("refunded_at", UtcDateTime, nullable=False),
    Column("webhook_event_id", String(40), nullable=True),
    UniqueConstraint("processor", "reference", name="uq_refund_processor_reference"),
    Index("ix_refund_payment", "payment_id"),
    comment="Money given back on a payment (refunds, returned direct debits, recalled transfers)",
)

chargeback = Table(
    "chargeback",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(128), nullable=True),
    Column("payment_id", String(40), nullable=False),
    Column("processor", String(64), nullable=False),
    Column("reference", String(128), nullable=False),
    Column("amount_minor", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=True),
    Column("status", String(16), nullable=False, comment="open, merchant_won, client_won"),
    Column("opened_at", UtcDateTime, nullable=True),
    Column("closed_at", UtcDateTime, nullable=True),
    UniqueConstraint("processor", "reference", name="uq_chargeback_processor_reference"),
    comment="Card disputes: opened, then closed with an outcome",
)

parked_event = Table(
    "parked_event",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("webhook_event_id", String(40), nullable=False),
    Column("processor", String(64), nullable=False),
    Column("event_type", String(255), nullable=False, comment="The CloudEvents type it will emit"),
    Column("record_table", String(32), nullable=False),
    Column("record_id", String(40), nullable=False),
    Column("customer_id", String(128), nullable=True, comment="The processor's customer id, if it sent one"),
    Column("payload", JSON, nullable=False, comment="The event payload, client_id filled in on assignment"),
    Column("reason", String(64), nullable=False),
    Column("parked_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("client_id", String(128), nullable=True),
    Index("ix_parked_event_open", "resolved_at", "parked_at", "id"),
    comment="Verified events whose client could not be resolved, waiting for review",
)

customer_mapping = Table(
    "customer_mapping",
    metadata,
    Column("processor", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("processor", "customer_id", name="pk_customer_mapping"),
    comment="The processor's customer id -> our client id",
)


_IGNORE_INSERTS: dict[tuple[str, str], Any] = {}


_PG_IGNORE_INSERTS: dict[tuple[str, tuple[str, ...]], tuple[str, frozenset[str]]] = {}


async def _insert_ignore_row(session: AsyncSession, table: Table, row: dict[str, Any]) -> bool:
    """INSERT .. ON CONFLICT DO NOTHING of one row; True when it was inserted.

    On PostgreSQL (the webhook hot path: two of these per payment) the statement goes straight to asyncpg
    through ``PgDriver``, with JSON columns sent as text; elsewhere through the session.
    """
    if not is_postgres(session):
        result = await session.execute(_insert_ignore(session, table), row)
        return getattr(result, "rowcount", 0) == 1
    names = tuple(row)
    cached = _PG_IGNORE_INSERTS.get((table.name, names))
    if cached is None:
        json_columns = frozenset(c.name for c in table.columns if isinstance(c.type, JSON))
        values = ", ".join(
            f"CAST(${i} AS text)::json" if name in json_columns else f"${i}"
            for i, name in enumerate(names, 1)
        )
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({values}) ON CONFLICT DO NOTHING"
        cached = _PG_IGNORE_INSERTS[(table.name, names)] = (sql, json_columns)
    sql, json_columns = cached
    args = [json.dumps(v) if n in json_columns and v is not None else v for n, v in row.items()]
    return await (await PgDriver.of(session)).execute(sql, *args) == "INSERT 0 1"


def _insert_ignore(session: AsyncSession, table: Table) -> Any:
    """INSERT .. ON CONFLICT DO NOTHING for the session's dialect, built once and executed with parameters.

    Building ``insert(...).values(**row)`` per call costs more CPU than the round trip on the hot path.
    """
    dialect = session.get_bind().dialect.name
    stmt = _IGNORE_INSERTS.get((dialect, table.name))
    if stmt is None:
        builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = builder(table).on_conflict_do_nothing()
        _IGNORE_INSERTS[(dialect, table.name)] = stmt
    return stmt


@dataclass(frozen=True, slots=True)
class SecretRow:
    id: str
    account: str
    secret: str
    fingerprint: str
    created_at: datetime


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_kind(self, name: str) -> str | None:
        row = await self.session.execute(
            select(processor_account.c.kind).where(processor_account.c.name == name)
        )
        return row.scalar_one_or_none()

    async def all(self) -> list[tuple[str, str]]:
        rows = await self.session.execute(
            select(processor_account.c.name, processor_account.c.kind).order_by(processor_account.c.name)
        )
        return [(r.name, r.kind) for r in rows]

    async def add(self, name: str, kind: str, now: datetime) -> bool:
        result = await self.session.execute(
            _insert_ignore(self.session, processor_account), {"name": name, "kind": kind, "created_at": now}
        )
        return bool(getattr(result, "rowcount", 0))

    async def active_secrets(self, account: str | None = None) -> list[SecretRow]:
        q = select(webhook_secret).where(webhook_secret.c.removed_at.is_(None))
        if account is not None:
            q = q.where(webhook_secret.c.account == account)
        rows = await self.session.execute(q.order_by(webhook_secret.c.created_at, webhook_secret.c.id))
        return [SecretRow(r.id, r.account, r.secret, r.fingerprint, r.created_at) for r in rows]

    async def add_secret(self, row: SecretRow) -> None:
        await self.session.execute(
            webhook_secret.insert().values(
                id=row.id,
                account=row.account,
                secret=row.secret,
                fingerprint=row.fingerprint,
                created_at=row.created_at,
            )
        )

    async def remove_secret(self, account: str, secret_id: str, now: datetime) -> bool:
        result = await self.session.execute(
            update(webhook_secret)
            .where(
                webhook_secret.c.account == account,
                webhook_secret.c.id == secret_id,
                webhook_secret.c.removed_at.is_(None),
            )
            .values(removed_at=now, secret="")  # the secret itself is forgotten on removal
        )
        return bool(getattr(result, "rowcount", 0))


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, row: dict[str, Any]) -> bool:
        """Insert the raw webhook; False when (account, processor event id) is already recorded."""
        return await _insert_ignore_row(self.session, webhook_event, row)

    async def set_outcome(self, webhook_id: str, outcome: str) -> None:
        await self.session.execute(
            update(webhook_event).where(webhook_event.c.id == webhook_id).values(outcome=outcome)
        )

    async def count(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(webhook_event))).scalar_one())


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: dict[str, Any]) -> bool:
        """Insert a payment; False when that processor payment (or id) already exists."""
        return await _insert_ignore_row(self.session, payment, row)

    async def get(self, payment_id: str) -> Any:
        return (await self.session.execute(select(payment).where(payment.c.id == payment_id))).first()

    async def client_of(self, payment_id: str) -> str | None:
        q = select(payment.c.client_id).where(payment.c.id == payment_id)
        return (await self.session.execute(q)).scalar_one_or_none()

    async def list_for_client(
        self, client_id: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[Any]:
        q = select(payment)
        if client_id is not None:
            q = q.where(payment.c.client_id == client_id)
        if after is not None:
            at, pid = after
            q = q.where(
                or_(payment.c.recorded_at < at, and_(payment.c.recorded_at == at, payment.c.id < pid))
            )
        q = q.order_by(payment.c.recorded_at.desc(), payment.c.id.desc()).limit(limit)
        return (await self.session.execute(q)).all()

    async def add_failure(self, row: dict[str, Any]) -> bool:
        result = await self.session.execute(_insert_ignore(self.session, payment_failure), row)
        return getattr(result, "rowcount", 0) == 1

    async def add_refund(self, row: dict[str, Any]) -> bool:
        result = await self.session.execute(_insert_ignore(self.session, refund), row)
        return getattr(result, "rowcount", 0) == 1

    async def refunded_total(self, payment_id: str) -> int:
        q = select(func.coalesce(func.sum(refund.c.amount_minor), 0)).where(refund.c.payment_id == payment_id)
        return int((await self.session.execute(q)).scalar_one())

    async def chargeback_status(self, processor: str, reference: str) -> str | None:
        q = select(chargeback.c.status).where(
            chargeback.c.processor == processor, chargeback.c.reference == reference
        )
        return (await self.session.execute(q)).scalar_one_or_none()

    async def add_chargeback(self, row: dict[str, Any]) -> bool:
        result = await self.session.execute(_insert_ignore(self.session, chargeback), row)
        return getattr(result, "rowcount", 0) == 1

    async def close_chargeback(
        self, processor: str, reference: str, status: str, closed_at: datetime
    ) -> bool:
        result = await self.session.execute(
            update(chargeback)
            .where(
                chargeback.c.processor == processor,
                chargeback.c.reference == reference,
                chargeback.c.status == "open",
            )
            .values(status=status, closed_at=closed_at)
        )
        return bool(getattr(result, "rowcount", 0))

    async def set_client(self, table_name: str, record_id: str, client_id: str) -> None:
        table = {
            "payment": payment,
            "payment_failure": payment_failure,
            "refund": refund,
            "chargeback": chargeback,
        }[table_name]
        await self.session.execute(update(table).where(table.c.id == record_id).values(client_id=client_id))


class ParkedRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: dict[str, Any]) -> None:
        await self.session.execute(parked_event.insert().values(**row))

    async def get_for_update(self, parked_id: str) -> Any:
        q = select(parked_event).where(parked_event.c.id == parked_id)
        if self.session.get_bind().dialect.name == "postgresql":
            q = q.with_for_update()
        return (await self.session.execute(q)).first()

    async def resolve(self, parked_id: str, client_id: str, now: datetime) -> bool:
        result = await self.session.execute(
            update(parked_event)
            .where(parked_event.c.id == parked_id, parked_event.c.resolved_at.is_(None))
            .values(resolved_at=now, client_id=client_id)
        )
        return bool(getattr(result, "rowcount", 0))

    async def list_open(self, after: tuple[datetime, str] | None, limit: int) -> Sequence[Any]:
        q = select(parked_event).where(parked_event.c.resolved_at.is_(None))
        if after is not None:
            at, pid = after
            q = q.where(
                or_(
                    parked_event.c.parked_at > at,
                    and_(parked_event.c.parked_at == at, parked_event.c.id > pid),
                )
            )
        q = q.order_by(parked_event.c.parked_at, parked_event.c.id).limit(limit)
        return (await self.session.execute(q)).all()


class CustomerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def client_for(self, processor: str, customer_id: str) -> str | None:
        q = select(customer_mapping.c.client_id).where(
            customer_mapping.c.processor == processor, customer_mapping.c.customer_id == customer_id
        )
        return (await self.session.execute(q)).scalar_one_or_none()

    async def put(self, processor: str, customer_id: str, client_id: str, now: datetime) -> None:
        values = {
            "processor": processor,
            "customer_id": customer_id,
            "client_id": client_id,
            "updated_at": now,
        }
        if self.session.get_bind().dialect.name == "postgresql":
            stmt: Any = postgresql.insert(customer_mapping).values(**values)
        else:
            stmt = sqlite.insert(customer_mapping).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["processor", "customer_id"], set_={"client_id": client_id, "updated_at": now}
        )
        await self.session.execute(stmt)


class UnitOfWork:
    """One transaction: repositories over one session; events ride the same commit through the outbox."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def __aenter__(self) -> Self:
        self.session = self._sessionmaker()
        self.accounts = AccountRepository(self.session)
        self.webhooks = WebhookRepository(self.session)
        self.payments = PaymentRepository(self.session)
        self.parked = ParkedRepository(self.session)
        self.customers = CustomerRepository(self.session)
        self._events: list[Envelope[Any]] = []
        self.committed = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self.committed:
                await self.session.rollback()
        finally:
            await self.session.close()

    def emit(self, *envelopes: Envelope[Any]) -> None:
        """Queue events; they enter the outbox in this transaction when it commits."""
        self._events.extend(envelopes)

    async def commit(self, now: datetime) -> None:
        if self._events:
            await enqueue(self.session, *self._events, now=now)
        await self.session.commit()
        self.committed = True

    async def rollback(self) -> None:
        await self.session.rollback()
