"""Tables and every query of dunning-svc. Only the unit of work (or the consumer runner) commits."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from pydantic_core import from_json, to_json
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ar_events.db import PgDriver
from ar_events.envelope import Envelope
from ar_events.events import Channel, ClientProfile, Contact, ContactRole, NotificationPreferences, Person
from ar_events.money import Money
from ar_events.outbox import enqueue, lock_keys
from ar_events.tables import UtcDateTime, add_plumbing_tables
from ar_web import add_web_tables
from dunning_svc.domain import DunningCase, Ledger, OpenInvoice
from dunning_svc.domain.trusted import build, maker
from dunning_svc.projection import ClientRecord, InvoiceRecord, ledger_of

metadata = sa.MetaData()
plumbing = add_plumbing_tables(metadata)
web = add_web_tables(metadata)

client_table = sa.Table(
    "dunning_client",
    metadata,
    sa.Column("client_id", sa.String(128), primary_key=True),
    sa.Column("profile", sa.Text, nullable=True, comment="ClientProfile JSON (event-carried state)"),
    sa.Column("late_days_sum", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("paid_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

invoice_table = sa.Table(
    "dunning_invoice",
    metadata,
    sa.Column("invoice_id", sa.String(128), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("number", sa.String(64), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("issue_date", sa.Date, nullable=True),
    sa.Column("due_date", sa.Date, nullable=True),
    sa.Column("total", sa.BigInteger, nullable=True),
    sa.Column("amount_due", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("disputes", sa.Text, nullable=False, server_default="[]"),
    sa.Column("pay_link", sa.String(2000), nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_dunning_invoice_client", "client_id", "status"),
)

case_table = sa.Table(
    "dunning_case",
    metadata,
    sa.Column("case_id", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False, unique=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("cycle", sa.Integer, nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("policy_name", sa.String(64), nullable=True),
    sa.Column("policy_version", sa.Integer, nullable=True),
    sa.Column(
        "next_action_at", UtcDateTime, nullable=True, comment="durable timer: the scheduler claims due rows"
    ),
    sa.Column("body", sa.Text, nullable=False, comment="the domain DunningCase as JSON"),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index(
        "ix_dunning_case_next_action",
        "next_action_at",
        postgresql_where=sa.text("next_action_at IS NOT NULL"),
        sqlite_where=sa.text("next_action_at IS NOT NULL"),
    ),
    sa.Index("ix_dunning_case_state", "state", "case_id"),
)

task_table = sa.Table(
    "dunning_task",
    metadata,
    sa.Column("task_id", sa.String(96), primary_key=True),
    sa.Column("case_id", sa.String(64), nullable=False),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("cycle", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("step", sa.Integer, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, comment="open, claimed, done, cancelled"),
    sa.Column("assignee_name", sa.String(200), nullable=True),
    sa.Column("assignee_email", sa.String(320), nullable=True),
    sa.Column("queue", sa.String(64), nullable=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("sla_due_at", UtcDateTime, nullable=True),
    sa.Column("client_name", sa.String(300), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("claimed_by", sa.String(320), nullable=True),
    sa.Column("claimed_at", UtcDateTime, nullable=True),
    sa.Column("completed_at", UtcDateTime, nullable=True),
    sa.Column("completed_by", sa.String(320), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("outcome_detail", sa.Text, nullable=True),
    sa.Index("ix_dunning_task_worklist", "status", sa.text("priority DESC"), "task_id"),
    sa.Index("ix_dunning_task_assignee", "assignee_email", "status"),
    sa.Index("ix_dunning_task_case", "case_id"),
)

timeline_table = sa.Table(
    "dunning_timeline",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("case_id", sa.String(64), nullable=False),
    sa.Column("cycle", sa.Integer, nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, comment="event_in, decision_out, task, hold, command"),
    sa.Column("type", sa.String(96), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Index("ix_dunning_timeline_client", "client_id", "id"),
)

policy_table = sa.Table(
    "dunning_policy_version",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("definition", sa.Text, nullable=False, comment="the validated policy spec as JSON"),
    sa.Column("source", sa.String(500), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

CASE_CODEC: TypeAdapter[DunningCase] = TypeAdapter(DunningCase)
_CASE_SERIALIZER = CASE_CODEC.serializer
_CASE_VALIDATOR = CASE_CODEC.validator


def dump_case(case: DunningCase) -> str:
    return _CASE_SERIALIZER.to_json(case).decode()


def load_case(body: str) -> DunningCase:
    return _CASE_VALIDATOR.validate_json(body)  # type: ignore[no-any-return]


def case_row(case: DunningCase, next_action_at: datetime | None, now: datetime) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "client_id": case.client_id,
        "state": case.state.value,
        "stage": case.stage.value,
        "cycle": case.cycle,
        "level": case.level,
        "policy_name": case.policy_name,
        "policy_version": case.policy_version,
        "next_action_at": next_action_at,
        "body": dump_case(case),
        "updated_at": now,
    }


def _insert(session: AsyncSession, table: sa.Table) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# PostgreSQL bulk writes go through binary COPY: plain inserts straight into their table (_pg_copy), upserts into
# a temporary staging table and from there with one INSERT .. ON CONFLICT (_pg_upsert). asyncpg checks every
# element of an array parameter against collections.abc ABCs before encoding it (two checks per string), which
# COPY does not: for 480 invoice rows an ``INSERT .. SELECT FROM unnest(arrays)`` took 6.0 ms of Python and
# 14 ms in all, the staging table 2.4 ms and 10.8 ms (json_to_recordset: 7.4 and 19). For the case UPDATE
# (save_cases) the staging table cost three times as much in PostgreSQL, so that one stays an unnest.


@lru_cache(maxsize=64)
def _pg_upsert_statements(
    table: sa.Table, cols: tuple[str, ...], keys: tuple[str, ...]
) -> tuple[str, str, str]:
    """(staging table, its CREATE, the INSERT from it): the staging table lives as long as the connection and
    keeps no rows past a commit or a rollback."""
    stage = f"{table.name}_stage"
    create = f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table.name}) ON COMMIT DELETE ROWS"
    names = ", ".join(cols)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in keys)
    insert = (
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage}"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )
    return stage, create, insert


def _records(rows: Sequence[dict[str, Any]]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """The column names of ``rows`` (the first row's keys) and each row's values in that order, for COPY."""
    cols = tuple(rows[0])
    pick = itemgetter(*cols)
    return cols, [pick(r) for r in rows] if len(cols) > 1 else [(pick(r),) for r in rows]


async def _pg_upsert(
    session: AsyncSession, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Binary COPY into the staging table, then one INSERT .. ON CONFLICT DO UPDATE, in the session's
    transaction; the staging rows go at commit (or with a rollback)."""
    cols, records = _records(rows)
    stage, create, insert = _pg_upsert_statements(table, cols, tuple(keys))
    driver = await _driver(session)
    await driver.execute(create)
    await driver.copy_records_to_table(stage, records=records, columns=cols)
    await driver.execute(insert)


async def _driver(session: AsyncSession) -> Any:
    """asyncpg's connection under the session, inside the session's transaction (begun now if no statement
    has run in it yet: SQLAlchemy begins lazily, with the first statement)."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if not driver.is_in_transaction():
        await conn.exec_driver_sql("SELECT 1")
    return driver


async def _pg_copy(session: AsyncSession, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Binary COPY of plain inserts (ids from the table's sequence, in row order), in the session's transaction."""
    cols, records = _records(rows)
    driver = await _driver(session)
    await driver.copy_records_to_table(table.name, records=records, columns=cols)


async def upsert(
    session: AsyncSession, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert or update ``rows``: COPY into a staging table and one INSERT from it on PostgreSQL, executemany
    on SQLite."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        await _pg_upsert(session, table, rows, keys)
        return
    ins = _insert(session, table)
    cols = [c for c in rows[0] if c not in keys]
    stmt = ins.on_conflict_do_update(index_elements=list(keys), set_={c: ins.excluded[c] for c in cols})
    await session.execute(stmt, list(rows))


# ------------------------------------------------------------------------------------------ projection


async def load_clients(session: AsyncSession, client_ids: Iterable[str]) -> dict[str, ClientRecord]:
    ids = list(client_ids)
    out: dict[str, ClientRecord] = {}
    if not ids:
        return out
    if _is_pg(session):
        # one array parameter: no per-id bind parameters to render and compile for a 1,000-client batch
        rows: Iterable[Any] = await session.execute(_PG_LOAD_CLIENTS, {"ids": ids})
    else:
        t = client_table
        rows = await session.execute(
            sa.select(t.c.client_id, t.c.profile, t.c.late_days_sum, t.c.paid_count).where(
                t.c.client_id.in_(ids)
            )
        )
    for client_id, profile, late_days_sum, paid_count in rows:
        out[client_id] = ClientRecord(
            client_id, load_profile(profile) if profile else None, int(late_days_sum), int(paid_count)
        )
    return out


# IN (SELECT unnest(array)) rather than = ANY(array): whatever plan PostgreSQL caches for the prepared statement
# (a generic plan may be made while a table is still small), a semi-join stays linear in the rows, where a
# sequential scan testing = ANY($1) against every row is rows x ids.
_PG_LOAD_CLIENTS = sa.text(
    "SELECT client_id, profile, late_days_sum, paid_count FROM dunning_client"
    " WHERE client_id IN (SELECT unnest(CAST(:ids AS text[])))"
)
_INVOICE_COLUMNS = "invoice_id, client_id, number, currency, issue_date, due_date, total, amount_due, status, disputes, pay_link"
_PG_LOAD_INVOICES = sa.text(
    f"SELECT {_INVOICE_COLUMNS} FROM dunning_invoice"
    " WHERE client_id IN (SELECT unnest(CAST(:ids AS text[]))) AND status = 'open'"
)
_PG_LOAD_INVOICES_ALSO = sa.text(
    f"SELECT {_INVOICE_COLUMNS} FROM dunning_invoice"
    " WHERE client_id IN (SELECT unnest(CAST(:ids AS text[]))) AND status = 'open'"
    f" UNION ALL SELECT {_INVOICE_COLUMNS} FROM dunning_invoice"
    " WHERE invoice_id IN (SELECT unnest(CAST(:also AS text[])))"
)  # a row in both halves is read twice and kept once (by invoice id)


# The consumer's projection load, planned the same whatever the tables' statistics say: each client's row and
# each named invoice through its index (a LATERAL subquery kept from being flattened by OFFSET 0, and the open
# invoices as an ARRAY subquery per client, as in the scheduler's claim). With a semi-join the planner followed
# statistics taken while the tables were empty and scanned the whole invoice table twice per poll: the
# ingest's PostgreSQL CPU per event grew with the table (13 us at 10,000 events, 31 us at 50,000).
_PG_LOAD_PROJECTION = sa.text(
    "SELECT k.cid, c.client_id IS NOT NULL, c.profile, c.late_days_sum, c.paid_count,"
    " ARRAY(SELECT ROW(i.invoice_id, i.number, i.currency, i.issue_date, i.due_date, i.total, i.amount_due,"
    " i.status, i.disputes, i.pay_link) FROM dunning_invoice i WHERE i.client_id = k.cid AND i.status = 'open')"
    " FROM unnest(CAST(:ids AS text[])) AS k(cid)"
    " LEFT JOIN LATERAL (SELECT client_id, profile, late_days_sum, paid_count FROM dunning_client d"
    " WHERE d.client_id = k.cid OFFSET 0) c ON true"
)
_PG_LOAD_NAMED_INVOICES = sa.text(
    f"SELECT {_INVOICE_COLUMNS} FROM unnest(CAST(:also AS text[])) AS a(id)"
    " CROSS JOIN LATERAL (SELECT * FROM dunning_invoice i WHERE i.invoice_id = a.id OFFSET 0) i"
)


async def load_projection(
    session: AsyncSession, client_ids: Iterable[str], also: Iterable[str] = ()
) -> tuple[dict[str, ClientRecord], dict[str, dict[str, InvoiceRecord]]]:
    """:func:`load_clients` and :func:`load_invoices` together: one or two index-driven statements on
    PostgreSQL."""
    ids = list(client_ids)
    if not _is_pg(session) or not ids:
        return await load_clients(session, ids), await load_invoices(session, ids, also)
    clients: dict[str, ClientRecord] = {}
    invoices: dict[str, dict[str, InvoiceRecord]] = {}
    result = await session.execute(_PG_LOAD_PROJECTION, {"ids": ids})
    for cid, has_client, profile, late_days_sum, paid_count, open_invoices in result:
        if has_client:
            clients[cid] = ClientRecord(
                cid, load_profile(profile) if profile else None, int(late_days_sum), int(paid_count)
            )
        invoices[cid] = {i[0]: _invoice_of(cid, i) for i in open_invoices}
    extra = list(dict.fromkeys(also))
    if extra:
        for row in await session.execute(_PG_LOAD_NAMED_INVOICES, {"also": extra}):
            rec = _invoice_record(row)
            by_client = invoices.get(rec.client_id)
            if by_client is None:
                by_client = invoices[rec.client_id] = {}
            by_client[rec.invoice_id] = rec
    return clients, invoices


def _invoice_record(row: Any) -> InvoiceRecord:
    """An invoice record from a row of ``_INVOICE_COLUMNS`` (the same order as the record's fields)."""
    disputes = row[9]
    return InvoiceRecord(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], int(row[7]), row[8],
        _NO_DISPUTES if disputes == "[]" else tuple(json.loads(disputes)), row[10],
    )  # fmt: skip


def _is_pg(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def load_invoices(
    session: AsyncSession, client_ids: Iterable[str], also: Iterable[str] = ()
) -> dict[str, dict[str, InvoiceRecord]]:
    """Open invoices of the clients, plus any invoice named in ``also`` (to apply repeats correctly)."""
    ids = list(client_ids)
    out: dict[str, dict[str, InvoiceRecord]] = {c: {} for c in ids}
    if not ids:
        return out
    extra = list(also)
    rows: Iterable[Any]
    if _is_pg(session):
        if extra:
            rows = await session.execute(_PG_LOAD_INVOICES_ALSO, {"ids": ids, "also": extra})
        else:
            rows = await session.execute(_PG_LOAD_INVOICES, {"ids": ids})
    else:
        t = invoice_table
        cond = sa.and_(t.c.client_id.in_(ids), t.c.status == "open")
        if extra:
            cond = sa.or_(cond, t.c.invoice_id.in_(extra))
        cols = [t.c[c.strip()] for c in _INVOICE_COLUMNS.split(",")]
        rows = await session.execute(sa.select(*cols).where(cond))
    for row in rows:
        rec = _invoice_record(row)
        by_client = out.get(rec.client_id)
        if by_client is None:
            by_client = out[rec.client_id] = {}
        by_client[rec.invoice_id] = rec
    return out


_NO_DISPUTES: tuple[str, ...] = ()


@lru_cache(maxsize=20_000)
def load_profile(text: str) -> ClientProfile:
    """A stored profile, validated when its event was consumed: rebuilt without validating addresses again
    (and cached by its text: the value is immutable)."""
    d = from_json(text)  # pydantic's parser: half the time of json.loads for a profile
    am = d.get("account_manager")
    prefs = d.get("preferences") or {}
    credit = d.get("credit_limit")
    return _make_profile(
        client_id=d["client_id"],
        external_id=d["external_id"],
        name=d["name"],
        segment=d["segment"],
        tags=tuple(d.get("tags") or ()),
        account_manager=_person(am["name"], am["email"]) if am else None,
        contacts=tuple(
            _make_contact(
                name=c["name"],
                email=c["email"],
                phone=c.get("phone"),
                role=_ROLES[c.get("role") or "billing"],
            )
            for c in d["contacts"]
        ),
        language=d.get("language", "en"),
        time_zone=d.get("time_zone", "UTC"),
        country=d.get("country", "US"),
        payment_terms_days=d.get("payment_terms_days", 30),
        credit_limit=build(Money, **credit) if credit else None,
        preferences=_preferences(
            tuple(prefs.get("channels", ("email",))),
            prefs.get("webhook_url"),
            prefs.get("payment_receipts", False),
        ),
    )


_make_profile = maker(ClientProfile)
_make_contact = maker(Contact)
_make_person = maker(Person)
_make_preferences = maker(NotificationPreferences)


@lru_cache(maxsize=4096)
def _person(name: str, email: str) -> Person:
    """Account managers recur across clients; the (immutable) value is shared."""
    return _make_person(name=name, email=email)


@lru_cache(maxsize=1024)
def _preferences(
    channels: tuple[str, ...], webhook_url: str | None, receipts: bool
) -> NotificationPreferences:
    """Most clients keep the default preferences; the (immutable) value is shared."""
    return _make_preferences(
        channels=tuple(_CHANNELS[x] for x in channels), webhook_url=webhook_url, payment_receipts=receipts
    )


_ROLES: dict[str, ContactRole] = {r.value: r for r in ContactRole}
_CHANNELS: dict[str, Channel] = {c.value: c for c in Channel}


def client_row(rec: ClientRecord, now: datetime) -> dict[str, Any]:
    return {
        "client_id": rec.client_id,
        "profile": rec.profile.model_dump_json() if rec.profile is not None else None,
        "late_days_sum": rec.late_days_sum,
        "paid_count": rec.paid_count,
        "updated_at": now,
    }


def invoice_row(rec: InvoiceRecord, now: datetime) -> dict[str, Any]:
    return {
        "invoice_id": rec.invoice_id,
        "client_id": rec.client_id,
        "number": rec.number,
        "currency": rec.currency,
        "issue_date": rec.issue_date,
        "due_date": rec.due_date,
        "total": rec.total,
        "amount_due": rec.amount_due,
        "status": rec.status,
        "disputes": json.dumps(list(rec.disputes)) if rec.disputes else "[]",
        "pay_link": rec.pay_link,
        "updated_at": now,
    }


# ------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True, slots=True)
class CaseRow:
    case: DunningCase
    next_action_at: datetime | None


async def load_cases(session: AsyncSession, client_ids: Iterable[str], *, lock: bool) -> dict[str, CaseRow]:
    ids = sorted(client_ids)
    if not ids:
        return {}
    t = case_table
    stmt = (
        sa.select(t.c.client_id, t.c.body, t.c.next_action_at)
        .where(t.c.client_id.in_(ids))
        .order_by(t.c.client_id)
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    rows = await session.execute(stmt)
    return {r.client_id: CaseRow(load_case(r.body), r.next_action_at) for r in rows}


async def claim_due_cases(session: AsyncSession, now: datetime, limit: int) -> list[CaseRow]:
    """Due cases, oldest timer first; on PostgreSQL locked with SKIP LOCKED so replicas share the work.

    The rows stay locked until the caller's transaction ends: a crash before the commit releases them
    untouched (the step is taken again), and a second scheduler skips them instead of firing them twice.
    """
    if _is_pg(session):
        rows: Iterable[Any] = await session.execute(_PG_CLAIM, {"now": now, "limit": limit})
    else:
        t = case_table
        rows = await session.execute(
            sa.select(t.c.body, t.c.next_action_at)
            .where(t.c.next_action_at.is_not(None), t.c.next_action_at <= now)
            .order_by(t.c.next_action_at)
            .limit(limit)
        )
    return [CaseRow(load_case(body), at) for body, at in rows]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A scheduler batch: the claimed cases (locked until the transaction ends) and each claimed client's
    ledger (the domain's view of its projection rows, as ``projection.ledger_of`` makes it)."""

    cases: list[CaseRow]
    ledgers: dict[str, Ledger]


async def claim_due_batch(session: AsyncSession, now: datetime, limit: int) -> Claimed:
    """:func:`claim_due_cases` with the ledgers of the claimed clients (their profile and open invoices):
    one statement on PostgreSQL (SKIP LOCKED claim, joined; sent straight to the driver through ``PgDriver``,
    which begins the session's transaction and raises SQLAlchemy's errors), three on SQLite."""
    if not _is_pg(session):
        rows = await claim_due_cases(session, now, limit)
        ids = [r.case.client_id for r in rows]
        clients, invoices = await load_clients(session, ids), await load_invoices(session, ids)
        return Claimed(
            rows,
            {cid: ledger_of(clients.get(cid) or ClientRecord(cid), invoices.get(cid, {})) for cid in ids},
        )
    cases: list[CaseRow] = []
    ledgers: dict[str, Ledger] = {}
    driver = await PgDriver.of(session)
    for body, at, has_client, profile, late_days_sum, paid_count, open_invoices in await driver.fetch(
        PG_CLAIM_SQL, now, limit
    ):
        case = load_case(body)
        cid = case.client_id
        cases.append(CaseRow(case, at))
        ledgers[cid] = _claimed_ledger(
            cid,
            load_profile(profile) if has_client and profile else None,
            late_days_sum / paid_count if has_client and paid_count else None,
            open_invoices,
        )
    return Claimed(cases, ledgers)


def _invoice_of(client_id: str, i: Any) -> InvoiceRecord:
    """An invoice record from a
    ``ROW(invoice_id, number, currency, issue_date, due_date, total, amount_due, status, disputes, pay_link)``."""
    disputes = _NO_DISPUTES if i[8] == "[]" else tuple(json.loads(i[8]))
    return InvoiceRecord(i[0], client_id, i[1], i[2], i[3], i[4], i[5], int(i[6]), i[7], disputes, i[9])


_by_invoice_id = attrgetter("invoice_id")


def _claimed_ledger(
    client_id: str, profile: ClientProfile | None, avg_payment_delay: float | None, rows: Sequence[Any]
) -> Ledger:
    """``ledger_of`` for the claim's open invoices, each a
    ``ROW(invoice_id, number, currency, issue_date, due_date, total, amount_due, status, disputes, pay_link)``,
    without the intermediate projection records (tests/unit/test_claim_ledger.py compares the two)."""
    invoices: list[OpenInvoice] = []
    pay_link: str | None = None
    for invoice_id, number, currency, issue_date, due_date, total, amount_due, status, disputes, link in rows:
        if status != "open":
            continue
        if pay_link is None and link:
            pay_link = link
        if amount_due > 0 and due_date is not None:
            disputed = disputes != "[]" and bool(json.loads(disputes))
            invoices.append(
                OpenInvoice(
                    invoice_id, number, currency, due_date, int(amount_due), issue_date, total, disputed
                )
            )
    if len(invoices) > 1:
        invoices.sort(key=_by_invoice_id)
    return Ledger(client_id, profile, tuple(invoices), avg_payment_delay, pay_link)


#: the partial index ix_dunning_case_next_action serves both the filter and the order
_PG_CLAIM = sa.text(
    "SELECT body, next_action_at FROM dunning_case WHERE next_action_at IS NOT NULL AND next_action_at <= :now"
    " ORDER BY next_action_at LIMIT :limit FOR UPDATE SKIP LOCKED"
).columns(sa.column("body", sa.Text), sa.column("next_action_at", UtcDateTime))


#: the claim (the same SKIP LOCKED query, MATERIALIZED: locked before anything is joined to it) with each
#: claimed client's projection row and open invoices (an array of records, decoded by the driver)
PG_CLAIM_WITH_PROJECTION_SQL = (
    "WITH due AS MATERIALIZED (SELECT client_id, body, next_action_at FROM dunning_case"
    " WHERE next_action_at IS NOT NULL AND next_action_at <= :now"
    " ORDER BY next_action_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " SELECT d.body, d.next_action_at, c.client_id IS NOT NULL, c.profile, c.late_days_sum, c.paid_count,"
    " ARRAY(SELECT ROW(i.invoice_id, i.number, i.currency, i.issue_date, i.due_date, i.total, i.amount_due,"
    " i.status, i.disputes, i.pay_link) FROM dunning_invoice i"
    " WHERE i.client_id = d.client_id AND i.status = 'open')"
    " FROM due d LEFT JOIN dunning_client c ON c.client_id = d.client_id"
)
#: the same for the driver (positional parameters)
PG_CLAIM_SQL = PG_CLAIM_WITH_PROJECTION_SQL.replace(":now", "$1").replace(":limit", "$2")


async def count_due_cases(session: AsyncSession, now: datetime) -> int:
    """How many case timers have come due (a range scan of the next_action_at index)."""
    t = case_table
    stmt = sa.select(sa.func.count()).where(t.c.next_action_at.is_not(None), t.c.next_action_at <= now)
    return int((await session.execute(stmt)).scalar_one())


async def postpone_case(session: AsyncSession, case_id: str, when: datetime) -> None:
    t = case_table
    await session.execute(sa.update(t).where(t.c.case_id == case_id).values(next_action_at=when))


async def earliest_timer(session: AsyncSession) -> datetime | None:
    t = case_table
    stmt = sa.select(sa.func.min(t.c.next_action_at)).where(t.c.next_action_at.is_not(None))
    value: datetime | None = (await session.execute(stmt)).scalar_one_or_none()
    return value


_PG_BULK_UPDATE = sa.text(
    """
    UPDATE dunning_case AS c SET state = v.state, stage = v.stage, cycle = v.cycle, level = v.level,
        policy_name = v.policy_name, policy_version = v.policy_version, next_action_at = v.next_action_at,
        body = v.body, updated_at = v.updated_at
    FROM unnest(CAST(:case_id AS text[]), CAST(:state AS text[]), CAST(:stage AS text[]), CAST(:cycle AS int[]),
                CAST(:level AS int[]), CAST(:policy_name AS text[]), CAST(:policy_version AS int[]),
                CAST(:next_action_at AS timestamptz[]), CAST(:body AS text[]), CAST(:updated_at AS timestamptz[]))
        AS v(case_id, state, stage, cycle, level, policy_name, policy_version, next_action_at, body, updated_at)
    WHERE c.case_id = v.case_id
    """
)


_CASE_UPDATE_ARRAYS = (
    "case_id", "state", "stage", "cycle", "level", "policy_name", "policy_version", "next_action_at", "body",
)  # fmt: skip
_PG_CASE_UPDATE_SQL = """
    UPDATE dunning_case AS c SET state = v.state, stage = v.stage, cycle = v.cycle, level = v.level,
        policy_name = v.policy_name, policy_version = v.policy_version, next_action_at = v.next_action_at,
        body = v.body, updated_at = $10
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::text[], $7::int[],
                $8::timestamptz[], $9::text[])
        AS v(case_id, state, stage, cycle, level, policy_name, policy_version, next_action_at, body)
    WHERE c.case_id = v.case_id
    """


async def save_cases(session: AsyncSession, rows: Sequence[dict[str, Any]], existing: set[str]) -> None:
    new = [r for r in rows if r["client_id"] not in existing]
    old = [r for r in rows if r["client_id"] in existing]
    if new:
        await insert_rows(session, case_table, new)
    if old and session.get_bind().dialect.name == "postgresql":
        # one statement for the whole batch: UPDATE .. FROM unnest(arrays), straight to the driver; a batch's
        # rows share their update time (one parameter, not an array)
        updated_at = old[0]["updated_at"]
        if all(r["updated_at"] == updated_at for r in old):
            driver = await PgDriver.of(session)
            await driver.execute(
                _PG_CASE_UPDATE_SQL, *([r[c] for r in old] for c in _CASE_UPDATE_ARRAYS), updated_at
            )
        else:
            cols = [c for c in old[0] if c != "client_id"]
            await session.execute(_PG_BULK_UPDATE, {c: [r[c] for r in old] for c in cols})
    elif old:
        t = case_table
        cols = [c for c in old[0] if c not in ("case_id", "client_id")]
        stmt = (
            sa.update(t)
            .where(t.c.case_id == sa.bindparam("b_case_id"))
            .values({c: sa.bindparam(f"b_{c}") for c in cols})
        )
        await session.execute(stmt, [{f"b_{k}": v for k, v in r.items() if k != "client_id"} for r in old])


# ------------------------------------------------------------------------------------------ outbox


async def enqueue_events(session: AsyncSession, envelopes: Sequence[Envelope[Any]], now: datetime) -> None:
    """The outbox rows of a batch, in the caller's transaction: ``ar_events.outbox.enqueue`` semantics.

    On PostgreSQL the same per-key advisory locks and NOTIFY (``lock_keys``), then one binary COPY of every
    row: ``enqueue``'s multi-row insert took ~270 ms per 1,000 rows on the development box against ~60-120 ms
    for an ``unnest`` insert, and less again for COPY (the scheduler writes one row per step). Elsewhere
    ``enqueue``.
    """
    if not envelopes:
        return
    if not _is_pg(session):
        await enqueue(session, *envelopes, now=now)
        return
    await lock_keys(session, sorted({env.subject for env in envelopes}))
    created = now.astimezone(UTC)
    records = [
        (env.id, str(type(env.data).TOPIC), env.subject, env.type, encode_envelope(env), created)
        for env in envelopes
    ]
    # COPY assigns the ids in record order: the order of the envelopes (the relay publishes per key in id order)
    driver = await _driver(session)
    await driver.copy_records_to_table(plumbing.outbox.name, records=records, columns=_OUTBOX_COLUMNS)


_OUTBOX_COLUMNS = ("event_id", "topic", "key", "type", "value", "created_at")


def encode_envelope(env: Envelope[Any]) -> bytes:
    """``ar_events.envelope.encode(env)``, byte for byte, without pydantic walking the envelope: the fields in
    the model's order, each string through pydantic's own JSON encoder (same escaping), the time through its
    datetime serializer (``...Z``), ``causationid`` left out when None (``exclude_none``), and ``data`` the
    payload's own ``model_dump_json(exclude_none=True)`` (tests/unit/test_encode.py compares the two)."""
    data = env.data
    causation = b"" if env.causationid is None else b',"causationid":' + to_json(env.causationid)
    return b"".join(
        (
            b'{"specversion":',
            _json_const(env.specversion),
            b',"id":',
            to_json(env.id),
            b',"source":',
            _json_const(env.source),
            b',"type":',
            _json_const(env.type),
            b',"time":',
            _json_time(env.time),
            b',"subject":',
            to_json(env.subject),
            b',"datacontenttype":',
            _json_const(env.datacontenttype),
            b',"correlationid":',
            to_json(env.correlationid),
            causation,
            b',"data":',
            data.__pydantic_serializer__.to_json(data, exclude_none=True),
            b"}",
        )
    )


@lru_cache(maxsize=1024)
def _json_const(value: str) -> bytes:
    """Spec version, source, type, content type: a handful of values."""
    return to_json(value)


def _json_time(value: datetime) -> bytes:
    """A batch's events share their time (always UTC here: equal instants in other offsets compare and hash
    equal but serialize differently, so only UTC values are memoised)."""
    return _json_utc_time(value) if value.tzinfo is UTC else to_json(value)


@lru_cache(maxsize=256)
def _json_utc_time(value: datetime) -> bytes:
    return to_json(value)


# ------------------------------------------------------------------------------------------ tasks / timeline


async def insert_rows(session: AsyncSession, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        await _pg_copy(session, table, rows)
    else:
        await session.execute(sa.insert(table), list(rows))


async def complete_tasks(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    t = task_table
    stmt = (
        sa.update(t)
        # No IN (...) here: an expanding parameter cannot be used with executemany.
        .where(
            t.c.task_id == sa.bindparam("b_task_id"), sa.or_(t.c.status == "open", t.c.status == "claimed")
        )
        .values(
            status="done",
            outcome=sa.bindparam("b_outcome"),
            completed_at=sa.bindparam("b_completed_at"),
            completed_by=sa.bindparam("b_completed_by"),
            outcome_detail=sa.bindparam("b_detail"),
        )
    )
    await session.execute(stmt, list(rows))


async def cancel_open_tasks(session: AsyncSession, case_ids: Sequence[str], now: datetime) -> None:
    if not case_ids:
        return
    t = task_table
    await session.execute(
        sa.update(t)
        .where(
            t.c.case_id.in_(list(case_ids)), t.c.status.in_(("open", "claimed")), t.c.kind != "wrong_contact"
        )
        .values(status="cancelled", completed_at=now, outcome="case_resolved")
    )


async def reassign_open_tasks(session: AsyncSession, case_id: str, name: str, email: str) -> None:
    t = task_table
    await session.execute(
        sa.update(t)
        .where(t.c.case_id == case_id, t.c.status.in_(("open", "claimed")))
        .values(assignee_name=name, assignee_email=email, queue=None)
    )


async def get_task(session: AsyncSession, task_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    stmt = sa.select(task_table).where(task_table.c.task_id == task_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).mappings().first()
    return dict(row) if row else None


async def list_tasks(
    session: AsyncSession,
    *,
    status: str | None,
    assignee: str | None,
    queue: str | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Worklist in priority order (highest first), keyset-paginated on (priority, task_id)."""
    t = task_table
    stmt = sa.select(t)
    if status:
        stmt = stmt.where(t.c.status == status)
    if assignee:
        stmt = stmt.where(t.c.assignee_email == assignee)
    if queue:
        stmt = stmt.where(t.c.queue == queue)
    if after is not None:
        prio, tid = after
        stmt = stmt.where(sa.or_(t.c.priority < prio, sa.and_(t.c.priority == prio, t.c.task_id > tid)))
    stmt = stmt.order_by(t.c.priority.desc(), t.c.task_id).limit(limit)
    return [dict(r) for r in (await session.execute(stmt)).mappings()]


async def claim_task(session: AsyncSession, task_id: str, who: str, now: datetime, *, force: bool) -> int:
    t = task_table
    cond = [t.c.task_id == task_id, t.c.status.in_(("open", "claimed"))]
    if not force:
        cond.append(sa.or_(t.c.claimed_by.is_(None), t.c.claimed_by == who))
    res = await session.execute(
        sa.update(t).where(*cond).values(status="claimed", claimed_by=who, claimed_at=now)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


async def assign_task(
    session: AsyncSession, task_id: str, name: str | None, email: str | None, queue: str | None
) -> int:
    t = task_table
    res = await session.execute(
        sa.update(t)
        .where(t.c.task_id == task_id, t.c.status.in_(("open", "claimed")))
        .values(
            assignee_name=name,
            assignee_email=email,
            queue=queue,
            status="open",
            claimed_by=None,
            claimed_at=None,
        )
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


async def timeline(
    session: AsyncSession, client_id: str, after: int | None, limit: int
) -> list[dict[str, Any]]:
    t = timeline_table
    stmt = sa.select(t).where(t.c.client_id == client_id)
    if after is not None:
        stmt = stmt.where(t.c.id > after)
    stmt = stmt.order_by(t.c.id).limit(limit)
    return [dict(r) for r in (await session.execute(stmt)).mappings()]


async def tasks_of_case(session: AsyncSession, case_id: str) -> list[dict[str, Any]]:
    t = task_table
    stmt = sa.select(t).where(t.c.case_id == case_id).order_by(t.c.created_at, t.c.task_id)
    return [dict(r) for r in (await session.execute(stmt)).mappings()]


async def case_by_client(session: AsyncSession, client_id: str) -> dict[str, Any] | None:
    row = (
        (await session.execute(sa.select(case_table).where(case_table.c.client_id == client_id)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def cases_by_state(
    session: AsyncSession, state: str | None, after: str | None, limit: int
) -> list[dict[str, Any]]:
    t = case_table
    stmt = sa.select(t)
    if state:
        stmt = stmt.where(t.c.state == state)
    if after:
        stmt = stmt.where(t.c.case_id > after)
    stmt = stmt.order_by(t.c.case_id).limit(limit)
    return [dict(r) for r in (await session.execute(stmt)).mappings()]


async def case_counts(session: AsyncSession) -> list[tuple[str, int, int]]:
    t = case_table
    stmt = (
        sa.select(t.c.state, t.c.level, sa.func.count())
        .group_by(t.c.state, t.c.level)
        .order_by(t.c.state, t.c.level)
    )
    return [(r[0], int(r[1]), int(r[2])) for r in (await session.execute(stmt)).all()]


# ------------------------------------------------------------------------------------------ policies


async def policy_versions(session: AsyncSession) -> list[dict[str, Any]]:
    t = policy_table
    rows = await session.execute(sa.select(t).order_by(t.c.name, t.c.version))
    return [dict(r) for r in rows.mappings()]


async def add_policy_version(
    session: AsyncSession, name: str, version: int, digest: str, definition: str, source: str, now: datetime
) -> None:
    await session.execute(
        sa.insert(policy_table).values(
            name=name, version=version, digest=digest, definition=definition, source=source, created_at=now
        )
    )
