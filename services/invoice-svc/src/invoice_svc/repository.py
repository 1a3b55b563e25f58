"""Tables, repositories and the unit of work of invoice-svc. Every query lives here; only the UoW commits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_events.clock import Clock
from ar_events.db import PgDriver, PgStatement
from ar_events.envelope import Envelope, new_event
from ar_events.events import Payload
from ar_events.outbox import enqueue
from ar_events.tables import BigId, UtcDateTime, add_plumbing_tables
from ar_web import StoredResponse, add_web_tables
from invoice_svc.domain.allocation import Decision
from invoice_svc.domain.invoicing import Dispute, DisputeStatus
from invoice_svc.domain.model import Allocation, Invoice, InvoiceStatus, LedgerEntry, Payment
from invoice_svc.domain.reports import bucket_cutoffs
from invoice_svc.domain.totals import DiscountTerms, PricedLine
from invoice_svc.settings import SERVICE

metadata = MetaData()
plumbing = add_plumbing_tables(metadata)
web = add_web_tables(metadata)

Money = BigInteger  # integer minor units

client = Table(
    "client",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("external_id", String(128), nullable=False, unique=True),
    Column("name", String(300), nullable=False),
    Column("segment", String(64), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("account_manager_name", String(200), nullable=True),
    Column("account_manager_email", String(320), nullable=True),
    Column("contacts", JSON, nullable=False),
    Column("language", String(35), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("country", String(2), nullable=False),
    Column("payment_terms_days", Integer, nullable=False),
    Column("credit_limit_minor", Money, nullable=True),
    Column("credit_limit_currency", String(3), nullable=True),
    Column("preferences", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
Index("ix_client_created", client.c.created_at, client.c.id)

invoice = Table(
    "invoice",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("client_id", String(64), ForeignKey("client.id"), nullable=False),
    Column("number", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("subtotal", Money, nullable=False),
    Column("tax", Money, nullable=False),
    Column("total", Money, nullable=False),
    Column("amount_due", Money, nullable=False),
    Column("paid_amount", Money, nullable=False),
    Column("credited_amount", Money, nullable=False),
    Column("credit_applied", Money, nullable=False, comment="Client credit consumed when issued"),
    Column("status", String(16), nullable=False),
    Column("disputed", Boolean, nullable=False),
    Column("discount_rate_bp", Integer, nullable=True),
    Column("discount_days", Integer, nullable=True),
    Column("discount_until", Date, nullable=True),
    Column("discount_amount", Money, nullable=True),
    Column("paid_at", UtcDateTime, nullable=True),
    Column("voided_at", UtcDateTime, nullable=True),
    Column("void_reason", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("client_id", "number", name="uq_invoice_client_number"),
)
Index("ix_invoice_client_status", invoice.c.client_id, invoice.c.status, invoice.c.currency)
Index("ix_invoice_status_due", invoice.c.status, invoice.c.due_date)
Index("ix_invoice_created", invoice.c.created_at, invoice.c.id)

invoice_line = Table(
    "invoice_line",
    metadata,
    Column("invoice_id", String(64), ForeignKey("invoice.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_minor", Money, nullable=False),
    Column("tax_rate_bp", Integer, nullable=False),
    Column("net", Money, nullable=False),
    Column("tax", Money, nullable=False),
)

credit_note = Table(
    "credit_note",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("invoice_id", String(64), ForeignKey("invoice.id"), nullable=False, index=True),
    Column("client_id", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", Money, nullable=False),
    Column("reason", Text, nullable=True),
    Column("dispute_id", String(64), nullable=True),
    Column("issued_at", UtcDateTime, nullable=False),
)

dispute = Table(
    "dispute",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("invoice_id", String(64), ForeignKey("invoice.id"), nullable=False, index=True),
    Column("client_id", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("note", Text, nullable=True),
    Column("amount", Money, nullable=True),
    Column("status", String(16), nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("resolution_note", Text, nullable=True),
    Column("credit_note_id", String(64), nullable=True),
)

payment = Table(
    "payment",
    metadata,
    Column("id", String(128), primary_key=True, comment="payment_id from ar.payment.events"),
    Column("client_id", String(128), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", Money, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("method", String(32), nullable=True),
    Column("processor", String(64), nullable=True),
    Column("reference", String(255), nullable=True),
    Column("invoice_ids", JSON, nullable=False),
    Column("allocated", Money, nullable=False),
    Column("refunded", Money, nullable=False),
    Column("held", Money, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
Index("ix_payment_client_currency", payment.c.client_id, payment.c.currency)

payment_adjustment = Table(
    "payment_adjustment",
    metadata,
    Column("id", String(160), primary_key=True, comment="refund:<id> or chargeback:<id>"),
    Column("kind", String(16), nullable=False),
    Column("payment_id", String(128), nullable=False, index=True),
    Column("client_id", String(128), nullable=False),
    Column("amount", Money, nullable=False),
    Column("status", String(16), nullable=False, comment="done | open | client_won | merchant_won"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime, nullable=True),
)

allocation = Table(
    "allocation",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("payment_id", String(128), nullable=False, index=True),
    Column("invoice_id", String(64), ForeignKey("invoice.id"), nullable=False, index=True),
    Column("client_id", String(128), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount", Money, nullable=False),
    Column("discount", Money, nullable=False),
    Column("value_date", Date, nullable=False),
    Column("days_late", Integer, nullable=False),
    Column("cause", String(200), nullable=False),
    Column("reverses", BigId, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

ledger_entry = Table(
    "ledger_entry",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("invoice_id", String(64), ForeignKey("invoice.id"), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("due_date", Date, nullable=False, comment="The invoice's due date (immutable), for aging"),
    Column("entry_date", Date, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", Money, nullable=False),
)
# Balances as of a date: an index-only scan on PostgreSQL (INCLUDE columns); a plain index on SQLite.
Index(
    "ix_ledger_date_cover",
    ledger_entry.c.entry_date,
    postgresql_include=["currency", "client_id", "due_date", "amount"],
)


_UNAPPLIED = payment.c.amount - payment.c.allocated - payment.c.refunded - payment.c.held
#: The hot path of POST /v1/invoices, built once: client row, has credit in the currency, number already used.
_FOR_ISSUE = select(
    client,
    exists()
    .where(payment.c.client_id == client.c.id, payment.c.currency == bindparam("currency"), _UNAPPLIED > 0)
    .label("has_credit"),
    exists()
    .where(invoice.c.client_id == client.c.id, invoice.c.number == bindparam("number"))
    .label("taken"),
).where(client.c.id == bindparam("client_id"))
_FOUND = _FOR_ISSUE.subquery("found")
_RESERVE_PG = (
    postgresql.insert(web.idempotency_key)
    .values(
        scope=bindparam("r_scope"),
        key=bindparam("r_key"),
        fingerprint=bindparam("r_fingerprint"),
        created_at=bindparam("r_created_at"),
    )
    .on_conflict_do_nothing()
    .returning(web.idempotency_key.c.key)
    .cte("reserved")
)
_ONE = select(literal(1).label("one")).subquery("one")
#: PostgreSQL: the Idempotency-Key reservation (``ar_web``'s INSERT .. ON CONFLICT DO NOTHING) and _FOR_ISSUE
#: in one round trip; ``reserved`` is false when another request holds the key.
_FOR_ISSUE_RESERVING_PG = select(exists(select(_RESERVE_PG.c.key)).label("reserved"), *_FOUND.c).select_from(
    _ONE.outerjoin(_FOUND, true())
)
_INSERT_INVOICE = insert(invoice)
_INSERT_LINES = insert(invoice_line)
_INSERT_LEDGER = insert(ledger_entry)

_INVOICE_COLUMNS = tuple(c.name for c in invoice.columns)


#: The ledger entries of an issue or of an allocation Decision, inserted from ``e_*`` arrays (a CTE of both).
_NEW_LEDGER_CTE = """new_ledger AS (
    INSERT INTO ledger_entry (invoice_id, client_id, currency, due_date, entry_date, kind, amount)
    SELECT e.* FROM unnest(
        CAST(:e_invoice_id AS text[]), CAST(:e_client_id AS text[]), CAST(:e_currency AS text[]),
        CAST(:e_due_date AS date[]), CAST(:e_entry_date AS date[]), CAST(:e_kind AS text[]),
        CAST(:e_amount AS bigint[])
    ) AS e
)"""


def _issue_sql(*, responding: bool) -> Any:
    """PostgreSQL: a new invoice, its lines and ledger entries (and the idempotent response) in ONE statement.

    Data-modifying CTEs run once each whether referenced or not, and the foreign keys of the lines and
    ledger rows are checked at the end of the statement, after the invoice row exists. The lines and entries
    come as one array per column (``unnest``), so the statement text, and its prepared plan, never depend on
    how many there are.
    """
    sql = (
        f"""WITH new_invoice AS (
    INSERT INTO invoice ({", ".join(_INVOICE_COLUMNS)})
    VALUES ({", ".join(":i_" + c for c in _INVOICE_COLUMNS)})
), new_lines AS (
    INSERT INTO invoice_line (invoice_id, position, description, quantity, unit_price_minor, tax_rate_bp, net, tax)
    SELECT :i_id, l.* FROM unnest(
        CAST(:l_position AS integer[]), CAST(:l_description AS text[]), CAST(:l_quantity AS bigint[]),
        CAST(:l_unit_price_minor AS bigint[]), CAST(:l_tax_rate_bp AS integer[]), CAST(:l_net AS bigint[]),
        CAST(:l_tax AS bigint[])
    ) AS l
), """
        + _NEW_LEDGER_CTE
    )
    if responding:
        sql += """, response AS (
    UPDATE idempotency_key
    SET status_code = :r_status_code, response_body = :r_response_body, response_headers = :r_response_headers
    WHERE scope = :r_scope AND key = :r_key
)"""
    return text(sql + "\nSELECT 1")


#: The invoices, allocations and ledger entries of an allocation Decision, from ``v_*``, ``a_*`` and ``e_*``
#: arrays. Allocation rows keep their order (``ORDER BY ordinality`` feeds the identity column in creation order,
#: which undo relies on: newest first).
_DECISION_CTES = (
    """changed_invoices AS (
    UPDATE invoice SET amount_due = u.amount_due, paid_amount = u.paid_amount,
        credited_amount = u.credited_amount, status = u.status, disputed = u.disputed, paid_at = u.paid_at
    FROM unnest(
        CAST(:v_id AS text[]), CAST(:v_amount_due AS bigint[]), CAST(:v_paid_amount AS bigint[]),
        CAST(:v_credited_amount AS bigint[]), CAST(:v_status AS text[]), CAST(:v_disputed AS boolean[]),
        CAST(:v_paid_at AS timestamptz[])
    ) AS u(id, amount_due, paid_amount, credited_amount, status, disputed, paid_at)
    WHERE invoice.id = u.id
), new_allocations AS (
    INSERT INTO allocation (payment_id, invoice_id, client_id, currency, amount, discount, value_date, days_late,
        cause, reverses, created_at)
    SELECT a.payment_id, a.invoice_id, a.client_id, a.currency, a.amount, a.discount, a.value_date, a.days_late,
        a.cause, a.reverses, a.created_at
    FROM unnest(
        CAST(:a_payment_id AS text[]), CAST(:a_invoice_id AS text[]), CAST(:a_client_id AS text[]),
        CAST(:a_currency AS text[]), CAST(:a_amount AS bigint[]), CAST(:a_discount AS bigint[]),
        CAST(:a_value_date AS date[]), CAST(:a_days_late AS integer[]), CAST(:a_cause AS text[]),
        CAST(:a_reverses AS bigint[]), CAST(:a_created_at AS timestamptz[])
    ) WITH ORDINALITY AS a(payment_id, invoice_id, client_id, currency, amount, discount, value_date, days_late,
        cause, reverses, created_at, n)
    ORDER BY a.n
), """
    + _NEW_LEDGER_CTE
)

#: PostgreSQL: a whole allocation Decision in ONE statement (was one per invoice, payment and allocation row).
_STORE_PG = text(
    """WITH changed_payments AS (
    UPDATE payment SET allocated = u.allocated, refunded = u.refunded, held = u.held
    FROM unnest(
        CAST(:p_id AS text[]), CAST(:p_allocated AS bigint[]), CAST(:p_refunded AS bigint[]),
        CAST(:p_held AS bigint[])
    ) AS u(id, allocated, refunded, held)
    WHERE payment.id = u.id
), """
    + _DECISION_CTES
    + "\nSELECT 1"
)

#: PostgreSQL: the payments of a consumer batch (rows inserted with their final ``allocated``) and every invoice,
#: allocation and ledger row their allocation changed, in ONE statement (their events follow through ``enqueue``,
#: itself one statement).
_RECEIVE_PG = text(
    """WITH new_payments AS (
    INSERT INTO payment (id, client_id, currency, amount, received_at, method, processor, reference, invoice_ids,
        allocated, refunded, held, created_at)
    SELECT n.id, n.client_id, n.currency, n.amount, n.received_at, n.method, n.processor, n.reference,
        CAST(n.invoice_ids AS json), n.allocated, 0, 0, :now
    FROM unnest(
        CAST(:n_id AS text[]), CAST(:n_client_id AS text[]), CAST(:n_currency AS text[]),
        CAST(:n_amount AS bigint[]), CAST(:n_received_at AS timestamptz[]), CAST(:n_method AS text[]),
        CAST(:n_processor AS text[]), CAST(:n_reference AS text[]), CAST(:n_invoice_ids AS text[]),
        CAST(:n_allocated AS bigint[])
    ) AS n(id, client_id, currency, amount, received_at, method, processor, reference, invoice_ids, allocated)
), """
    + _DECISION_CTES
    + "\nSELECT 1"
).bindparams(bindparam("now", type_=UtcDateTime()))

#: PostgreSQL: lock the clients of a consumer batch (in id order) and say which payment ids are already stored.
#: The invoices are read by the NEXT statement, so that they are read after the locks are held (a statement
#: that waited for a lock still reads other tables as of its start).
_LOCK_FOR_PAYMENTS_PG = text(
    """SELECT
    ARRAY(SELECT id FROM client WHERE id IN (SELECT unnest(CAST(:client_ids AS text[]))) ORDER BY id FOR UPDATE)
        AS locked,
    ARRAY(SELECT id FROM payment WHERE id IN (SELECT unnest(CAST(:payment_ids AS text[])))) AS seen"""
)

#: PostgreSQL: the open invoices of several (client, currency) pairs.
_OPEN_FOR_CLIENTS_PG = text(
    f"""SELECT {", ".join(_INVOICE_COLUMNS)} FROM invoice
WHERE (client_id, currency) IN (
    SELECT * FROM unnest(CAST(:client_ids AS text[]), CAST(:currencies AS text[])))
  AND status = 'open' AND amount_due > 0"""
).columns(*invoice.columns)


def _store_params(decision: Decision) -> dict[str, Any]:
    pays = decision.payments
    return {
        "p_id": [p.id for p in pays],
        "p_allocated": [p.allocated for p in pays],
        "p_refunded": [p.refunded for p in pays],
        "p_held": [p.held for p in pays],
        **_decision_params(decision),
    }


def _decision_params(decision: Decision) -> dict[str, Any]:
    """The ``v_*``, ``a_*`` and ``e_*`` arrays of ``_DECISION_CTES``."""
    invs, allocs = decision.invoices, decision.allocations
    return {
        "v_id": [i.id for i in invs],
        "v_amount_due": [i.amount_due for i in invs],
        "v_paid_amount": [i.paid_amount for i in invs],
        "v_credited_amount": [i.credited_amount for i in invs],
        "v_status": [i.status.value for i in invs],
        "v_disputed": [i.disputed for i in invs],
        "v_paid_at": [i.paid_at for i in invs],
        "a_payment_id": [a.payment_id for a in allocs],
        "a_invoice_id": [a.invoice_id for a in allocs],
        "a_client_id": [a.client_id for a in allocs],
        "a_currency": [a.currency for a in allocs],
        "a_amount": [a.amount for a in allocs],
        "a_discount": [a.discount for a in allocs],
        "a_value_date": [a.value_date for a in allocs],
        "a_days_late": [a.days_late for a in allocs],
        "a_cause": [a.cause for a in allocs],
        "a_reverses": [a.reverses for a in allocs],
        "a_created_at": [a.created_at for a in allocs],
        **_ledger_params([e for e in decision.ledger if e.amount != 0]),
    }


def _ledger_params(entries: Sequence[LedgerEntry]) -> dict[str, Any]:
    """The ``e_*`` arrays of ``_NEW_LEDGER_CTE``."""
    return {
        "e_invoice_id": [e.invoice_id for e in entries],
        "e_client_id": [e.client_id for e in entries],
        "e_currency": [e.currency for e in entries],
        "e_due_date": [e.due_date for e in entries],
        "e_entry_date": [e.entry_date for e in entries],
        "e_kind": [e.kind.value for e in entries],
        "e_amount": [e.amount for e in entries],
    }


_ISSUE_PG = _issue_sql(responding=False)
_ISSUE_PG_RESPONDING = _issue_sql(responding=True)

# The issue path's statements, sent straight to asyncpg (``PgDriver``: a third of SQLAlchemy's client CPU).
_FOR_ISSUE_RESERVING_RAW = PgStatement(_FOR_ISSUE_RESERVING_PG)
_ISSUE_RAW = PgStatement(_ISSUE_PG)
_ISSUE_RESPONDING_RAW = PgStatement(_ISSUE_PG_RESPONDING)
_CLIENT_JSON = frozenset(c.name for c in client.columns if isinstance(c.type, JSON))


class _RawRow:
    """Attribute access over an asyncpg Record, with the client's JSON columns decoded (the session's
    connection hands JSON back as text, which SQLAlchemy's JSON type would have decoded)."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        value = self._record[name]
        return json.loads(value) if name in _CLIENT_JSON and isinstance(value, str) else value


# --------------------------------------------------------------------------------------------------
# Records the API shows (richer than the domain objects)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientRecord:
    id: str
    external_id: str
    name: str
    segment: str
    tags: tuple[str, ...]
    account_manager: dict[str, str] | None
    contacts: tuple[dict[str, Any], ...]
    language: str
    time_zone: str
    country: str
    payment_terms_days: int
    credit_limit: tuple[int, str] | None
    preferences: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    invoice: Invoice
    subtotal: int
    tax: int
    credit_applied: int
    lines: tuple[PricedLine, ...]
    created_at: datetime
    voided_at: datetime | None
    void_reason: str | None


@dataclass(frozen=True, slots=True)
class IssueLookup:
    """What issuing an invoice reads first (see ``ClientRepository.for_issue``)."""

    client: ClientRecord | None
    has_credit: bool
    number_taken: bool
    reserved: bool = True  # the Idempotency-Key reservation was inserted (or there was none to insert)


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A payment to insert (``payment`` with its final ``allocated``) and what only the table keeps."""

    payment: Payment
    method: str | None
    processor: str | None
    reference: str | None


@dataclass(frozen=True, slots=True)
class CreditNoteRecord:
    id: str
    invoice_id: str
    client_id: str
    currency: str
    amount: int
    reason: str | None
    dispute_id: str | None
    issued_at: datetime


def _client_record(r: Any) -> ClientRecord:
    am = (
        {"name": r.account_manager_name, "email": r.account_manager_email}
        if r.account_manager_name and r.account_manager_email
        else None
    )
    return ClientRecord(
        id=r.id,
        external_id=r.external_id,
        name=r.name,
        segment=r.segment,
        tags=tuple(r.tags or ()),
        account_manager=am,
        contacts=tuple(r.contacts or ()),
        language=r.language,
        time_zone=r.time_zone,
        country=r.country,
        payment_terms_days=r.payment_terms_days,
        credit_limit=(r.credit_limit_minor, r.credit_limit_currency) if r.credit_limit_currency else None,
        preferences=dict(r.preferences or {}),
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def client_values(c: ClientRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "external_id": c.external_id,
        "name": c.name,
        "segment": c.segment,
        "tags": list(c.tags),
        "account_manager_name": c.account_manager["name"] if c.account_manager else None,
        "account_manager_email": c.account_manager["email"] if c.account_manager else None,
        "contacts": list(c.contacts),
        "language": c.language,
        "time_zone": c.time_zone,
        "country": c.country,
        "payment_terms_days": c.payment_terms_days,
        "credit_limit_minor": c.credit_limit[0] if c.credit_limit else None,
        "credit_limit_currency": c.credit_limit[1] if c.credit_limit else None,
        "preferences": c.preferences,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def _invoice_values(rec: InvoiceRecord) -> dict[str, Any]:
    inv = rec.invoice
    d = inv.discount
    return dict(
        id=inv.id,
        client_id=inv.client_id,
        number=inv.number,
        currency=inv.currency,
        issue_date=inv.issue_date,
        due_date=inv.due_date,
        subtotal=rec.subtotal,
        tax=rec.tax,
        total=inv.total,
        credit_applied=rec.credit_applied,
        discount_rate_bp=d.rate_bp if d else None,
        discount_days=d.days if d else None,
        discount_until=d.until if d else None,
        discount_amount=d.amount if d else None,
        created_at=rec.created_at,
        voided_at=None,
        void_reason=None,
        **_invoice_state(inv),
    )


def _line_values(rec: InvoiceRecord) -> list[dict[str, Any]]:
    return [
        {
            "invoice_id": rec.invoice.id,
            "position": n,
            "description": li.description,
            "quantity": li.quantity,
            "unit_price_minor": li.unit_price_minor,
            "tax_rate_bp": li.tax_rate_bp,
            "net": li.net,
            "tax": li.tax,
        }
        for n, li in enumerate(rec.lines)
    ]


def _invoice(r: Any) -> Invoice:
    terms = (
        DiscountTerms(
            rate_bp=r.discount_rate_bp, days=r.discount_days, until=r.discount_until, amount=r.discount_amount
        )
        if r.discount_rate_bp is not None
        else None
    )
    return Invoice(
        id=r.id,
        client_id=r.client_id,
        number=r.number,
        currency=r.currency,
        issue_date=r.issue_date,
        due_date=r.due_date,
        total=r.total,
        amount_due=r.amount_due,
        status=InvoiceStatus(r.status),
        discount=terms,
        paid_amount=r.paid_amount,
        credited_amount=r.credited_amount,
        disputed=r.disputed,
        paid_at=r.paid_at,
    )


def _invoice_state(inv: Invoice) -> dict[str, Any]:
    return {
        "amount_due": inv.amount_due,
        "paid_amount": inv.paid_amount,
        "credited_amount": inv.credited_amount,
        "status": inv.status.value,
        "disputed": inv.disputed,
        "paid_at": inv.paid_at,
    }


def _payment(r: Any) -> Payment:
    return Payment(
        id=r.id,
        client_id=r.client_id,
        currency=r.currency,
        amount=r.amount,
        received_at=r.received_at,
        invoice_ids=tuple(r.invoice_ids or ()),
        allocated=r.allocated,
        refunded=r.refunded,
        held=r.held,
    )


def _allocation(r: Any) -> Allocation:
    return Allocation(
        id=r.id,
        payment_id=r.payment_id,
        invoice_id=r.invoice_id,
        client_id=r.client_id,
        currency=r.currency,
        amount=r.amount,
        discount=r.discount,
        value_date=r.value_date,
        days_late=r.days_late,
        created_at=r.created_at,
        cause=r.cause,
        reverses=r.reverses,
    )


def _dispute(r: Any) -> Dispute:
    return Dispute(
        id=r.id,
        invoice_id=r.invoice_id,
        client_id=r.client_id,
        reason=r.reason,
        opened_at=r.opened_at,
        status=DisputeStatus(r.status),
        amount=r.amount,
        note=r.note,
        resolved_at=r.resolved_at,
        resolution_note=r.resolution_note,
        credit_note_id=r.credit_note_id,
    )


def _credit_note(r: Any) -> CreditNoteRecord:
    return CreditNoteRecord(
        id=r.id,
        invoice_id=r.invoice_id,
        client_id=r.client_id,
        currency=r.currency,
        amount=r.amount,
        reason=r.reason,
        dispute_id=r.dispute_id,
        issued_at=r.issued_at,
    )


# --------------------------------------------------------------------------------------------------
# Repositories
# --------------------------------------------------------------------------------------------------


class ClientRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, client_id: str, *, lock: bool = False) -> ClientRecord | None:
        stmt = select(client).where(client.c.id == client_id)
        if lock:
            stmt = stmt.with_for_update()
        row = (await self.session.execute(stmt)).first()
        return _client_record(row) if row else None

    async def for_issue(
        self, client_id: str, currency: str, number: str, *, reserve: Mapping[str, Any] | None = None
    ) -> IssueLookup:
        """What issuing needs: the client, whether it has credit in ``currency``, whether ``number`` is taken.

        ``reserve`` (``IdempotencyGuard.reservation``) also inserts the Idempotency-Key reservation, unless
        another request holds the key (then ``reserved`` is false); on PostgreSQL in the same round trip.
        """
        params: dict[str, Any] = {"client_id": client_id, "currency": currency, "number": number}
        reserved = True
        row: Any
        if reserve is None:
            row = (await self.session.execute(_FOR_ISSUE, params)).first()
        elif self.session.get_bind().dialect.name == "postgresql":
            params.update({f"r_{k}": v for k, v in reserve.items()})
            driver = await PgDriver.of(self.session)
            raw = await driver.fetchrow(_FOR_ISSUE_RESERVING_RAW.sql, *_FOR_ISSUE_RESERVING_RAW.args(params))
            row = _RawRow(raw) if raw is not None else None
            assert row is not None  # one row, with the client's columns NULL when there is no such client
            reserved = bool(row.reserved)
            row = row if row.id is not None else None
        else:
            insert_key = sqlite.insert(web.idempotency_key).values(**reserve).on_conflict_do_nothing()
            reserved = getattr(await self.session.execute(insert_key), "rowcount", 0) == 1
            row = (await self.session.execute(_FOR_ISSUE, params)).first()
        if row is None:
            return IssueLookup(None, False, False, reserved)
        return IssueLookup(_client_record(row), bool(row.has_credit), bool(row.taken), reserved)

    async def by_external_id(self, external_id: str) -> ClientRecord | None:
        row = (await self.session.execute(select(client).where(client.c.external_id == external_id))).first()
        return _client_record(row) if row else None

    async def add(self, c: ClientRecord) -> None:
        await self.session.execute(insert(client).values(**client_values(c)))

    async def save(self, c: ClientRecord) -> None:
        values = client_values(c)
        values.pop("id")
        values.pop("created_at")
        await self.session.execute(update(client).where(client.c.id == c.id).values(**values))

    async def list_after(
        self,
        after: Sequence[Any] | None,
        limit: int,
        *,
        segment: str | None = None,
        external_id: str | None = None,
    ) -> list[ClientRecord]:
        stmt = select(client).order_by(client.c.created_at, client.c.id).limit(limit)
        if after is not None:
            stmt = stmt.where(
                tuple_(client.c.created_at, client.c.id)
                > tuple_(literal(after[0], UtcDateTime), literal(after[1]))
            )
        if segment is not None:
            stmt = stmt.where(client.c.segment == segment)
        if external_id is not None:
            stmt = stmt.where(client.c.external_id == external_id)
        return [_client_record(r) for r in (await self.session.execute(stmt)).all()]


class InvoiceRepository:
    def __init__(self, session: AsyncSession, *, fold: bool = False) -> None:
        self.session = session
        self.fold = fold
        self._held: tuple[InvoiceRecord, list[LedgerEntry]] | None = None

    async def get(self, invoice_id: str) -> Invoice | None:
        row = (await self.session.execute(select(invoice).where(invoice.c.id == invoice_id))).first()
        return _invoice(row) if row else None

    async def get_many(self, ids: Iterable[str]) -> dict[str, Invoice]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        rows = (await self.session.execute(select(invoice).where(invoice.c.id.in_(wanted)))).all()
        return {r.id: _invoice(r) for r in rows}

    async def record(self, invoice_id: str) -> InvoiceRecord | None:
        row = (await self.session.execute(select(invoice).where(invoice.c.id == invoice_id))).first()
        if row is None:
            return None
        lines = await self._lines([invoice_id])
        return self._record(row, lines.get(invoice_id, ()))

    @staticmethod
    def _record(row: Any, lines: Sequence[PricedLine]) -> InvoiceRecord:
        return InvoiceRecord(
            invoice=_invoice(row),
            subtotal=row.subtotal,
            tax=row.tax,
            credit_applied=row.credit_applied,
            lines=tuple(lines),
            created_at=row.created_at,
            voided_at=row.voided_at,
            void_reason=row.void_reason,
        )

    async def _lines(self, ids: Sequence[str]) -> dict[str, list[PricedLine]]:
        out: dict[str, list[PricedLine]] = {}
        if not ids:
            return out
        rows = (
            await self.session.execute(
                select(invoice_line)
                .where(invoice_line.c.invoice_id.in_(ids))
                .order_by(invoice_line.c.invoice_id, invoice_line.c.position)
            )
        ).all()
        for r in rows:
            out.setdefault(r.invoice_id, []).append(
                PricedLine(
                    description=r.description,
                    quantity=r.quantity,
                    unit_price_minor=r.unit_price_minor,
                    tax_rate_bp=r.tax_rate_bp,
                    net=r.net,
                    tax=r.tax,
                )
            )
        return out

    async def number_taken(self, client_id: str, number: str) -> bool:
        stmt = select(invoice.c.id).where(invoice.c.client_id == client_id, invoice.c.number == number)
        return (await self.session.execute(stmt)).first() is not None

    async def add(self, rec: InvoiceRecord, ledger: Iterable[LedgerEntry] = ()) -> None:
        """A new invoice with its lines and ledger entries.

        With ``fold`` (PostgreSQL) the rows are held until :meth:`flush` (the unit of work calls it before
        any other write and at commit), which writes them in one statement, together with the idempotent
        response when there is one.
        """
        entries = [e for e in ledger if e.amount != 0]
        if self.fold:
            await self.flush()
            self._held = (rec, entries)
            return
        await self.session.execute(_INSERT_INVOICE, _invoice_values(rec))
        if rec.lines:
            await self.session.execute(_INSERT_LINES, _line_values(rec))
        await self.add_ledger(entries)

    async def flush(self, response: StoredResponse | None = None) -> bool:
        """Write a held invoice (and ``response``); True when ``response`` was written with it."""
        held, self._held = self._held, None
        if held is None:
            return False
        rec, entries = held
        params = {f"i_{k}": v for k, v in _invoice_values(rec).items()}
        lines = rec.lines
        params.update(
            l_position=list(range(len(lines))),
            l_description=[li.description for li in lines],
            l_quantity=[li.quantity for li in lines],
            l_unit_price_minor=[li.unit_price_minor for li in lines],
            l_tax_rate_bp=[li.tax_rate_bp for li in lines],
            l_net=[li.net for li in lines],
            l_tax=[li.tax for li in lines],
            **_ledger_params(entries),
        )
        driver = await PgDriver.of(self.session)
        if response is None:
            await driver.execute(_ISSUE_RAW.sql, *_ISSUE_RAW.args(params))
            return False
        params.update(
            r_status_code=response.status_code,
            r_response_body=response.response_body,
            r_response_headers=response.response_headers,
            r_scope=response.scope,
            r_key=response.key,
        )
        await driver.execute(_ISSUE_RESPONDING_RAW.sql, *_ISSUE_RESPONDING_RAW.args(params))
        return True

    async def save(self, inv: Invoice, **extra: Any) -> None:
        await self.session.execute(
            update(invoice).where(invoice.c.id == inv.id).values(**_invoice_state(inv), **extra)
        )

    async def set_credit_applied(self, invoice_id: str, amount: int) -> None:
        await self.session.execute(
            update(invoice).where(invoice.c.id == invoice_id).values(credit_applied=amount)
        )

    async def open_for_client(self, client_id: str, currency: str) -> list[Invoice]:
        stmt = select(invoice).where(
            invoice.c.client_id == client_id,
            invoice.c.status == InvoiceStatus.OPEN.value,
            invoice.c.currency == currency,
            invoice.c.amount_due > 0,
        )
        return [_invoice(r) for r in (await self.session.execute(stmt)).all()]

    async def open_for_clients(
        self, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], list[Invoice]]:
        """The open invoices of each (client id, currency) pair (pairs without any are absent)."""
        wanted = set(pairs)
        out: dict[tuple[str, str], list[Invoice]] = {}
        if not wanted:
            return out
        if self.fold:  # PostgreSQL: one statement text whatever the number of pairs
            clients, currencies = zip(*wanted, strict=True)
            params = {"client_ids": list(clients), "currencies": list(currencies)}
            rows = (await self.session.execute(_OPEN_FOR_CLIENTS_PG, params)).all()
        else:
            stmt = select(invoice).where(
                invoice.c.client_id.in_({c for c, _ in wanted}),
                invoice.c.status == InvoiceStatus.OPEN.value,
                invoice.c.amount_due > 0,
            )
            rows = [
                r for r in (await self.session.execute(stmt)).all() if (r.client_id, r.currency) in wanted
            ]
        for r in rows:
            out.setdefault((r.client_id, r.currency), []).append(_invoice(r))
        return out

    async def open_items(self, client_id: str) -> list[InvoiceRecord]:
        stmt = (
            select(invoice)
            .where(
                invoice.c.client_id == client_id,
                invoice.c.status == InvoiceStatus.OPEN.value,
                invoice.c.amount_due > 0,
            )
            .order_by(invoice.c.due_date, invoice.c.amount_due.desc(), invoice.c.id)
        )
        return [self._record(r, ()) for r in (await self.session.execute(stmt)).all()]

    async def list_after(
        self,
        after: Sequence[Any] | None,
        limit: int,
        *,
        client_id: str | None = None,
        status: str | None = None,
        overdue_as_of: date | None = None,
    ) -> list[InvoiceRecord]:
        stmt = select(invoice).order_by(invoice.c.created_at, invoice.c.id).limit(limit)
        if after is not None:
            stmt = stmt.where(
                tuple_(invoice.c.created_at, invoice.c.id)
                > tuple_(literal(after[0], UtcDateTime), literal(after[1]))
            )
        if client_id is not None:
            stmt = stmt.where(invoice.c.client_id == client_id)
        if status is not None:
            stmt = stmt.where(invoice.c.status == status)
        if overdue_as_of is not None:
            stmt = stmt.where(
                invoice.c.status == InvoiceStatus.OPEN.value,
                invoice.c.amount_due > 0,
                invoice.c.due_date < overdue_as_of,
            )
        rows = (await self.session.execute(stmt)).all()
        lines = await self._lines([r.id for r in rows])
        return [self._record(r, lines.get(r.id, ())) for r in rows]

    async def add_credit_note(self, cn: CreditNoteRecord) -> None:
        await self.session.execute(
            insert(credit_note).values(
                id=cn.id,
                invoice_id=cn.invoice_id,
                client_id=cn.client_id,
                currency=cn.currency,
                amount=cn.amount,
                reason=cn.reason,
                dispute_id=cn.dispute_id,
                issued_at=cn.issued_at,
            )
        )

    async def credit_notes(self, invoice_id: str) -> list[CreditNoteRecord]:
        stmt = (
            select(credit_note)
            .where(credit_note.c.invoice_id == invoice_id)
            .order_by(credit_note.c.issued_at)
        )
        return [_credit_note(r) for r in (await self.session.execute(stmt)).all()]

    async def add_ledger(self, entries: Iterable[LedgerEntry]) -> None:
        rows = [
            {
                "invoice_id": e.invoice_id,
                "client_id": e.client_id,
                "currency": e.currency,
                "due_date": e.due_date,
                "entry_date": e.entry_date,
                "kind": e.kind.value,
                "amount": e.amount,
            }
            for e in entries
            if e.amount != 0
        ]
        if rows:
            await self.session.execute(_INSERT_LEDGER, rows)


class DisputeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, dispute_id: str) -> Dispute | None:
        row = (await self.session.execute(select(dispute).where(dispute.c.id == dispute_id))).first()
        return _dispute(row) if row else None

    async def has_open(self, invoice_id: str) -> bool:
        stmt = select(dispute.c.id).where(
            dispute.c.invoice_id == invoice_id, dispute.c.status == DisputeStatus.OPEN.value
        )
        return (await self.session.execute(stmt)).first() is not None

    async def for_invoice(self, invoice_id: str) -> list[Dispute]:
        stmt = select(dispute).where(dispute.c.invoice_id == invoice_id).order_by(dispute.c.opened_at)
        return [_dispute(r) for r in (await self.session.execute(stmt)).all()]

    async def add(self, d: Dispute) -> None:
        await self.session.execute(
            insert(dispute).values(
                id=d.id,
                invoice_id=d.invoice_id,
                client_id=d.client_id,
                reason=d.reason,
                note=d.note,
                amount=d.amount,
                status=d.status.value,
                opened_at=d.opened_at,
                resolved_at=None,
                resolution_note=None,
                credit_note_id=None,
            )
        )

    async def save(self, d: Dispute) -> None:
        await self.session.execute(
            update(dispute)
            .where(dispute.c.id == d.id)
            .values(
                status=d.status.value,
                resolved_at=d.resolved_at,
                resolution_note=d.resolution_note,
                credit_note_id=d.credit_note_id,
            )
        )


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, payment_id: str) -> Payment | None:
        row = (await self.session.execute(select(payment).where(payment.c.id == payment_id))).first()
        return _payment(row) if row else None

    async def lock_for_payments(self, client_ids: Sequence[str], payment_ids: Sequence[str]) -> set[str]:
        """Lock the clients (id order) for new payments; return the payment ids that are already stored."""
        if self.session.get_bind().dialect.name == "postgresql":
            params = {"client_ids": sorted(set(client_ids)), "payment_ids": list(payment_ids)}
            row = (await self.session.execute(_LOCK_FOR_PAYMENTS_PG, params)).one()
            return set(row.seen)
        # SQLite serialises writers: nothing to lock
        stmt = select(payment.c.id).where(payment.c.id.in_(set(payment_ids)))
        return set((await self.session.execute(stmt)).scalars())

    async def add(
        self, p: Payment, *, method: str | None, processor: str | None, reference: str | None, now: datetime
    ) -> None:
        await self.session.execute(
            insert(payment).values(
                id=p.id,
                client_id=p.client_id,
                currency=p.currency,
                amount=p.amount,
                received_at=p.received_at,
                method=method,
                processor=processor,
                reference=reference,
                invoice_ids=list(p.invoice_ids),
                allocated=p.allocated,
                refunded=p.refunded,
                held=p.held,
                created_at=now,
            )
        )

    async def save(self, p: Payment) -> None:
        await self.session.execute(
            update(payment)
            .where(payment.c.id == p.id)
            .values(allocated=p.allocated, refunded=p.refunded, held=p.held)
        )

    async def with_credit(self, client_id: str, currency: str | None = None) -> list[Payment]:
        unapplied = payment.c.amount - payment.c.allocated - payment.c.refunded - payment.c.held
        stmt = select(payment).where(payment.c.client_id == client_id, unapplied > 0)
        if currency is not None:
            stmt = stmt.where(payment.c.currency == currency)
        return [_payment(r) for r in (await self.session.execute(stmt.order_by(payment.c.received_at))).all()]

    async def allocations(self, payment_id: str) -> list[Allocation]:
        stmt = select(allocation).where(allocation.c.payment_id == payment_id).order_by(allocation.c.id)
        return [_allocation(r) for r in (await self.session.execute(stmt)).all()]

    async def allocations_by_id(self, ids: Iterable[int]) -> dict[int, Allocation]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        rows = (await self.session.execute(select(allocation).where(allocation.c.id.in_(wanted)))).all()
        return {r.id: _allocation(r) for r in rows}

    async def add_allocations(self, rows: Iterable[Allocation]) -> None:
        values = [
            {
                "payment_id": a.payment_id,
                "invoice_id": a.invoice_id,
                "client_id": a.client_id,
                "currency": a.currency,
                "amount": a.amount,
                "discount": a.discount,
                "value_date": a.value_date,
                "days_late": a.days_late,
                "cause": a.cause,
                "reverses": a.reverses,
                "created_at": a.created_at,
            }
            for a in rows
        ]
        # One statement per row keeps ids in creation order (undo relies on it: newest first).
        for v in values:
            await self.session.execute(insert(allocation).values(**v))

    async def adjustment(self, adjustment_id: str) -> Any:
        stmt = select(payment_adjustment).where(payment_adjustment.c.id == adjustment_id)
        return (await self.session.execute(stmt)).first()

    async def add_adjustment(
        self, adjustment_id: str, kind: str, p: Payment, amount: int, status: str, now: datetime
    ) -> None:
        await self.session.execute(
            insert(payment_adjustment).values(
                id=adjustment_id,
                kind=kind,
                payment_id=p.id,
                client_id=p.client_id,
                amount=amount,
                status=status,
                created_at=now,
                closed_at=None,
            )
        )

    async def close_adjustment(self, adjustment_id: str, status: str, now: datetime) -> None:
        await self.session.execute(
            update(payment_adjustment)
            .where(payment_adjustment.c.id == adjustment_id)
            .values(status=status, closed_at=now)
        )

    async def credit_by_currency(self, client_id: str) -> dict[str, int]:
        unapplied = payment.c.amount - payment.c.allocated - payment.c.refunded - payment.c.held
        stmt = (
            select(payment.c.currency, func.sum(unapplied))
            .where(payment.c.client_id == client_id, unapplied > 0)
            .group_by(payment.c.currency)
        )
        return {cur: int(total) for cur, total in (await self.session.execute(stmt)).all()}


GROUP_COLUMNS: Mapping[str, Any] = {
    "client": client.c.id,
    "account_manager": client.c.account_manager_email,
    "segment": client.c.segment,
}


class ReportRepository:
    """Report queries; all amounts are per currency, balances as of a date come from the ledger."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # A balance on D is the sum of ledger entries dated on or before D, so sums by group never need a per-invoice
    # step: one pass over an index-only scan of (entry_date) INCLUDE (currency, client_id, due_date, amount).

    @staticmethod
    def _bucket(as_of: date) -> Any:
        cut = dict(bucket_cutoffs(as_of))
        due = ledger_entry.c.due_date
        return case(
            (due >= cut["current"], literal("current")),
            (due >= cut["1-30"], literal("1-30")),
            (due >= cut["31-60"], literal("31-60")),
            (due >= cut["61-90"], literal("61-90")),
            else_=literal("90+"),
        ).label("bucket")

    def aging_statement(self, as_of: date, group_by: str) -> Any:
        le = ledger_entry.c
        bucket = self._bucket(as_of)
        total = func.sum(le.amount)
        if group_by == "client":
            sums = (
                select(le.currency, le.client_id.label("key"), bucket, total.label("amount"))
                .where(le.entry_date <= as_of)
                .group_by(le.currency, le.client_id, bucket)
                .having(total != 0)
                .subquery("sums")
            )
            return select(
                sums.c.currency, sums.c.key, client.c.name.label("label"), sums.c.bucket, sums.c.amount
            ).select_from(sums.outerjoin(client, client.c.id == sums.c.key))
        key = GROUP_COLUMNS[group_by]
        label = client.c.account_manager_name if group_by == "account_manager" else client.c.segment
        return (
            select(
                le.currency, key.label("key"), func.max(label).label("label"), bucket, total.label("amount")
            )
            .select_from(ledger_entry.join(client, client.c.id == le.client_id))
            .where(le.entry_date <= as_of)
            .group_by(le.currency, key, bucket)
            .having(total != 0)
        )

    async def aging(self, as_of: date, group_by: str) -> list[Any]:
        return list((await self.session.execute(self.aging_statement(as_of, group_by))).all())

    async def receivables(self, as_of: date) -> dict[str, tuple[int, int]]:
        """Per currency: (total receivables, current = not yet due) on ``as_of``."""
        le = ledger_entry.c
        current = case((le.due_date >= as_of, le.amount), else_=0)
        stmt = (
            select(le.currency, func.sum(le.amount), func.sum(current))
            .where(le.entry_date <= as_of)
            .group_by(le.currency)
        )
        return {c: (int(t or 0), int(cur or 0)) for c, t, cur in (await self.session.execute(stmt)).all()}

    async def sales(self, start: date, end: date) -> dict[str, int]:
        """Credit sales per currency: totals of invoices issued in [start, end], voided ones excluded."""
        stmt = (
            select(invoice.c.currency, func.sum(invoice.c.total))
            .where(
                invoice.c.issue_date >= start,
                invoice.c.issue_date <= end,
                invoice.c.status != InvoiceStatus.VOID.value,
            )
            .group_by(invoice.c.currency)
        )
        return {c: int(t or 0) for c, t in (await self.session.execute(stmt)).all()}

    async def overdue_by_client(self, as_of: date) -> list[Any]:
        le = ledger_entry.c
        total = func.sum(le.amount)
        sums = (
            select(le.currency, le.client_id, total.label("amount"))
            .where(le.entry_date <= as_of, le.due_date < as_of)
            .group_by(le.currency, le.client_id)
            .having(total > 0)
            .subquery("sums")
        )
        stmt = select(
            sums.c.currency, sums.c.client_id, client.c.name.label("name"), sums.c.amount
        ).select_from(sums.outerjoin(client, client.c.id == sums.c.client_id))
        return list((await self.session.execute(stmt)).all())

    async def payment_delay(self, since: date | None, until: date) -> list[Any]:
        """Per client and currency: sum(cash), sum(cash * days late), over cash valued in [since, until]."""
        conds = [allocation.c.value_date <= until]
        if since is not None:
            conds.append(allocation.c.value_date >= since)
        stmt = (
            select(
                allocation.c.client_id,
                allocation.c.currency,
                func.max(client.c.name).label("name"),
                func.sum(allocation.c.amount).label("cash"),
                func.sum(allocation.c.amount * allocation.c.days_late).label("weighted"),
            )
            .select_from(allocation.join(client, client.c.id == allocation.c.client_id, isouter=True))
            .where(and_(*conds))
            .group_by(allocation.c.client_id, allocation.c.currency)
        )
        return list((await self.session.execute(stmt)).all())


# --------------------------------------------------------------------------------------------------
# Unit of work
# --------------------------------------------------------------------------------------------------


class UnitOfWork:
    """One transaction: repositories over one session, events to the outbox, one commit.

    ``owns_transaction=False`` wraps a session whose transaction belongs to someone else (the consumer
    runner): ``commit()`` then only writes the outbox rows; the runner commits.
    """

    def __init__(
        self,
        session: AsyncSession,
        clock: Clock,
        *,
        owns_transaction: bool = True,
        caused_by: Envelope[Any] | None = None,
        correlation_id: str | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        self.owns_transaction = owns_transaction
        self.caused_by = caused_by
        self.correlation_id = correlation_id
        self.on_commit = on_commit
        self.dialect = session.get_bind().dialect.name
        self.clients = ClientRepository(session)
        self.invoices = InvoiceRepository(session, fold=self.dialect == "postgresql")
        self.disputes = DisputeRepository(session)
        self.payments = PaymentRepository(session)
        self.reports = ReportRepository(session)
        self._pending: list[Envelope[Any]] = []
        self._response: StoredResponse | None = None

    async def __aenter__(self) -> UnitOfWork:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None and self.owns_transaction:
            await self.session.rollback()
        if self.owns_transaction:
            await self.session.close()

    def emit(self, *payloads: Payload) -> None:
        """Queue events; they reach the outbox in this transaction."""
        now = self.clock.now()
        for p in payloads:
            self._pending.append(
                new_event(
                    p, source=SERVICE, time=now, caused_by=self.caused_by, correlation_id=self.correlation_id
                )
            )

    async def flush_events(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            await enqueue(self.session, *pending, now=self.clock.now())

    def record_response(self, response: StoredResponse | None) -> None:
        """Store an idempotent response (``IdempotencyGuard.prepare``) with this transaction's writes."""
        self._response = response

    async def flush(self) -> None:
        """Write what is held back: a new invoice (PostgreSQL) with the recorded response in one statement."""
        response, self._response = self._response, None
        if not await self.invoices.flush(response) and response is not None:
            await self.session.execute(response.statement())

    async def commit(self) -> None:
        await self.flush()
        await self.flush_events()
        if self.owns_transaction:
            await self.session.commit()
            if self.on_commit is not None:
                self.on_commit()

    async def store(self, decision: Decision) -> None:
        """Persist an allocation decision: invoices, payments, allocation rows, ledger entries."""
        if not (decision.invoices or decision.payments or decision.allocations or decision.ledger):
            return
        await self.invoices.flush()  # rows below may refer to an invoice held back by ``invoices.add``
        if self.invoices.fold:
            await self.session.execute(_STORE_PG, _store_params(decision))
            return
        for inv in decision.invoices:
            await self.invoices.save(inv)
        for p in decision.payments:
            await self.payments.save(p)
        await self.payments.add_allocations(decision.allocations)
        await self.invoices.add_ledger(decision.ledger)

    async def store_received(
        self, payments: Sequence[NewPayment], decision: Decision, envelopes: Sequence[Envelope[Any]]
    ) -> None:
        """New payments, what their allocation changed (``decision``) and their events' outbox rows.

        On PostgreSQL the rows in one statement; elsewhere the statements of ``payments.add`` and ``store``.
        """
        if not payments:
            return
        await self.invoices.flush()  # rows below may refer to an invoice held back by ``invoices.add``
        now = self.clock.now()
        if self.invoices.fold:
            pays = [n.payment for n in payments]
            params = {
                "now": now,
                "n_id": [p.id for p in pays],
                "n_client_id": [p.client_id for p in pays],
                "n_currency": [p.currency for p in pays],
                "n_amount": [p.amount for p in pays],
                "n_received_at": [p.received_at for p in pays],
                "n_method": [n.method for n in payments],
                "n_processor": [n.processor for n in payments],
                "n_reference": [n.reference for n in payments],
                "n_invoice_ids": [json.dumps(list(p.invoice_ids)) for p in pays],
                "n_allocated": [p.allocated for p in pays],
                **_decision_params(decision),
            }
            await self.session.execute(_RECEIVE_PG, params)
        else:
            for n in payments:
                await self.payments.add(
                    n.payment, method=n.method, processor=n.processor, reference=n.reference, now=now
                )
            await self.store(decision)
        await enqueue(self.session, *envelopes, now=now)


UnitOfWorkFactory = Callable[..., UnitOfWork]


def uow_factory(
    sessionmaker: async_sessionmaker[AsyncSession], clock: Clock, on_commit: Callable[[], None] | None = None
) -> UnitOfWorkFactory:
    def make(**kw: Any) -> UnitOfWork:
        return UnitOfWork(sessionmaker(), clock, on_commit=on_commit, **kw)

    return make
