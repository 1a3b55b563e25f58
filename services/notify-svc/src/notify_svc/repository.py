"""Tables of notify-svc and every query on them (SQLAlchemy Core); the unit of work commits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.selectable import Select

from ar_events.envelope import Envelope
from ar_events.events import ClientProfile
from ar_events.outbox import enqueue
from ar_events.tables import BigId, UtcDateTime, add_plumbing_tables
from ar_web.tables import add_web_tables
from notify_svc.domain.delivery import Status
from notify_svc.domain.notifications import Contact, NotificationRequest, notification_id

metadata = MetaData()
plumbing = add_plumbing_tables(metadata)
web_tables = add_web_tables(metadata)

notification = Table(
    "notification",
    metadata,
    Column(
        "id", String(40), primary_key=True, comment="sha256(key, channel, recipient): one row per delivery"
    ),
    Column("notification_key", String(255), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient", Text, nullable=False),
    Column("recipient_name", String(300), nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("client_name", String(300), nullable=False),
    Column("case_id", String(128)),
    Column("cycle", Integer),
    Column("step", Integer),
    Column("kind", String(32), nullable=False),
    Column("template", String(64), nullable=False),
    Column("language", String(35), nullable=False),
    Column("country", String(2)),
    Column("sender_kind", String(32), nullable=False),
    Column("sender_name", String(300)),
    Column("sender_email", String(320)),
    Column("payload", JSON, nullable=False, comment="The source event's data: everything rendering needs"),
    Column("source_event_id", String(64), nullable=False),
    Column("source_event_type", String(255), nullable=False),
    Column("correlation_id", String(64)),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("generation", Integer, nullable=False, default=0, comment="Bumped by a manual resend"),
    Column(
        "recoveries", Integer, nullable=False, default=0, comment="Times found in 'sending' after a crash"
    ),
    Column("next_attempt_at", UtcDateTime),
    Column("lease_until", UtcDateTime),
    Column("message_id", String(255)),
    Column("last_error", Text),
    Column("error_code", String(32)),
    Column("permanent", Boolean),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    comment="One message to one recipient on one channel, and where its delivery stands",
)
Index(
    "ix_notification_due",
    notification.c.next_attempt_at,
    postgresql_where=notification.c.status == Status.PENDING.value,
    sqlite_where=notification.c.status == Status.PENDING.value,
)
Index(
    "ix_notification_lease",
    notification.c.lease_until,
    postgresql_where=notification.c.status == Status.SENDING.value,
    sqlite_where=notification.c.status == Status.SENDING.value,
)
#: The statuses the partial indexes above are defined on, as SQL literals: a bound parameter (``status = $1``)
#: cannot be proven to match an index predicate, so PostgreSQL's generic plan for a prepared statement (used after
#: its fifth execution) fell back to a sequential scan and a sort of every notification ever sent: the claim took
#: 37 ms at 20,000 rows instead of a fraction of a millisecond, and grew with the table.
_IS_PENDING = notification.c.status == literal_column(f"'{Status.PENDING.value}'")
_IS_SENDING = notification.c.status == literal_column(f"'{Status.SENDING.value}'")
Index("ix_notification_client", notification.c.client_id, notification.c.created_at, notification.c.id)
Index("ix_notification_case", notification.c.case_id, notification.c.created_at, notification.c.id)

delivery_attempt = Table(
    "delivery_attempt",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("notification_id", String(40), ForeignKey("notification.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("code", String(16)),
    Column("detail", Text),
    comment="The delivery log: every attempt and how it ended",
)
Index("ix_delivery_attempt_notification", delivery_attempt.c.notification_id, delivery_attempt.c.id)

client_contact = Table(
    "client_contact",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("profile", JSON, nullable=False),
    Column("event_time", UtcDateTime, nullable=False, comment="Time of the event the row comes from"),
    Column("event_id", String(64), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    comment="Contact projection from ClientRegistered/ClientUpdated: the latest by event time wins",
)

client_statement = Table(
    "client_statement",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("statement", JSON, nullable=False),
    Column("event_time", UtcDateTime, nullable=False),
    comment="The latest statement snapshot seen for a client (for template previews)",
)

suppression = Table(
    "suppression",
    metadata,
    Column("address", String(320), primary_key=True, comment="Lower-cased email address"),
    Column("reason", Text, nullable=False),
    Column("code", String(16)),
    Column("notification_id", String(40)),
    Column("created_at", UtcDateTime, nullable=False),
    comment="Addresses that bounced: not mailed again, reported as failed",
)

webhook_endpoint = Table(
    "webhook_endpoint",
    metadata,
    Column("url_hash", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("client_id", String(128)),
    Column("disabled_at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    comment="Webhook endpoints disabled after a 410 Gone",
)


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _insert(session: AsyncSession, table: Table) -> Any:
    return (
        postgresql.insert(table) if session.get_bind().dialect.name == "postgresql" else sqlite.insert(table)
    )


def expired_leases_statement(now: datetime, limit: int) -> Select[Any]:
    """Rows left in 'sending' past their lease (a crashed dispatcher's): an index range on
    ``ix_notification_lease``, whatever plan PostgreSQL caches."""
    return (
        select(notification)
        .where(_IS_SENDING, notification.c.lease_until < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def claim_due_statement(now: datetime, lease_until: datetime, limit: int) -> Update:
    """The claim: up to ``limit`` due pending rows (an index range on ``ix_notification_due``, whatever plan
    PostgreSQL caches), set to sending with attempts + 1 and a lease; rows others hold are skipped."""
    due = (
        select(notification.c.id)
        .where(_IS_PENDING, notification.c.next_attempt_at <= now)
        .order_by(notification.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        update(notification)
        .where(notification.c.id.in_(due.scalar_subquery()))
        .values(
            status=Status.SENDING.value,
            attempts=notification.c.attempts + 1,
            lease_until=lease_until,
            updated_at=now,
        )
        .returning(*notification.c)
    )


class Repository:
    """Every query notify-svc runs, on one session (the caller's transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------------ contacts

    async def save_contact(
        self, profile: dict[str, Any], event_time: datetime, event_id: str, now: datetime
    ) -> bool:
        """Upsert the projection unless a newer event already wrote it (events may come out of order)."""
        ins = _insert(self.session, client_contact).values(
            client_id=profile["client_id"],
            profile=profile,
            event_time=event_time,
            event_id=event_id,
            updated_at=now,
        )
        newer = or_(
            client_contact.c.event_time < ins.excluded.event_time,
            and_(
                client_contact.c.event_time == ins.excluded.event_time,
                client_contact.c.event_id < ins.excluded.event_id,
            ),
        )
        stmt = ins.on_conflict_do_update(
            index_elements=[client_contact.c.client_id],
            set_={
                "profile": ins.excluded.profile,
                "event_time": ins.excluded.event_time,
                "event_id": ins.excluded.event_id,
                "updated_at": ins.excluded.updated_at,
            },
            where=newer,
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def contact_profile(self, client_id: str) -> dict[str, Any] | None:
        row = (
            await self.session.execute(
                select(client_contact.c.profile).where(client_contact.c.client_id == client_id)
            )
        ).first()
        return dict(row.profile) if row else None

    async def contact_profiles(self, client_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored profiles of several clients (those without one are absent), in one query."""
        wanted = sorted(set(client_ids))
        if not wanted:
            return {}
        if self.session.get_bind().dialect.name == "postgresql":
            # one statement text (and prepared plan) whatever the number of clients
            stmt = select(client_contact.c.client_id, client_contact.c.profile).where(
                client_contact.c.client_id.in_(select(func.unnest(bindparam("ids", type_=ARRAY(String)))))
            )
            rows = (await self.session.execute(stmt, {"ids": wanted})).all()
        else:
            stmt = select(client_contact.c.client_id, client_contact.c.profile).where(
                client_contact.c.client_id.in_(wanted)
            )
            rows = (await self.session.execute(stmt)).all()
        return {r.client_id: dict(r.profile) for r in rows}

    async def save_statement(self, client_id: str, statement: dict[str, Any], event_time: datetime) -> None:
        ins = _insert(self.session, client_statement).values(
            client_id=client_id, statement=statement, event_time=event_time
        )
        await self.session.execute(
            ins.on_conflict_do_update(
                index_elements=[client_statement.c.client_id],
                set_={"statement": ins.excluded.statement, "event_time": ins.excluded.event_time},
                where=client_statement.c.event_time <= ins.excluded.event_time,
            )
        )

    async def statement(self, client_id: str) -> dict[str, Any] | None:
        row = (
            await self.session.execute(
                select(client_statement.c.statement).where(client_statement.c.client_id == client_id)
            )
        ).first()
        return dict(row.statement) if row else None

    # ------------------------------------------------------------------ notifications

    async def add_requests(
        self, requests: Sequence[NotificationRequest], envelope: Envelope[Any], now: datetime
    ) -> int:
        """Insert pending rows; a key already known (a redelivered or repeated event) adds nothing."""
        if not requests:
            return 0
        rows = [_row(r, envelope, now, status=Status.PENDING, next_attempt_at=now) for r in requests]
        stmt = _insert(self.session, notification).on_conflict_do_nothing(index_elements=[notification.c.id])
        result = await self.session.execute(stmt, rows)
        return int(getattr(result, "rowcount", 0) or 0)

    async def add_failed(self, row: dict[str, Any]) -> bool:
        stmt = (
            _insert(self.session, notification)
            .values(**row)
            .on_conflict_do_nothing(index_elements=[notification.c.id])
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[Row[Any]]:
        """Take up to ``limit`` due rows: status -> sending, attempts + 1, leased. Skips rows others hold."""
        return list((await self.session.execute(claim_due_statement(now, lease_until, limit))).all())

    async def owned(self, keys: Iterable[tuple[str, int, int]]) -> set[str]:
        """Of (id, attempts, generation), the rows still ours: in 'sending' with that attempt (locked)."""
        keys = list(keys)
        if not keys:
            return set()
        stmt = (
            select(notification.c.id)
            .where(
                notification.c.status == Status.SENDING.value,
                tuple_(notification.c.id, notification.c.attempts, notification.c.generation).in_(keys),
            )
            .with_for_update()
        )
        return set((await self.session.execute(stmt)).scalars())

    async def record_results(self, updates: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> None:
        if updates:
            stmt = (
                update(notification)
                .where(notification.c.id == bindparam("b_id"))
                .values(
                    {
                        "status": bindparam("status"),
                        "next_attempt_at": bindparam("next_attempt_at"),
                        "lease_until": None,
                        "message_id": bindparam("message_id"),
                        "last_error": bindparam("last_error"),
                        "error_code": bindparam("error_code"),
                        "permanent": bindparam("permanent"),
                        "sent_at": bindparam("sent_at"),
                        "updated_at": bindparam("updated_at"),
                        "recoveries": bindparam("recoveries"),
                    }
                )
            )
            await self.session.execute(stmt.execution_options(synchronize_session=False), updates)
        if attempts:
            await self.session.execute(insert(delivery_attempt), attempts)

    async def expired_leases(self, now: datetime, limit: int = 500) -> list[Row[Any]]:
        return list((await self.session.execute(expired_leases_statement(now, limit))).all())

    async def get(self, nid: str, *, lock: bool = False) -> Row[Any] | None:
        stmt = select(notification).where(notification.c.id == nid)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).first()

    async def requeue(self, nid: str, now: datetime) -> None:
        """A manual resend: a new generation (new Message-ID), attempts counted from zero."""
        await self.session.execute(
            update(notification)
            .where(notification.c.id == nid)
            .values(
                status=Status.PENDING.value,
                generation=notification.c.generation + 1,
                attempts=0,
                recoveries=0,
                next_attempt_at=now,
                lease_until=None,
                last_error=None,
                error_code=None,
                permanent=None,
                updated_at=now,
            )
        )

    async def attempts_of(self, ids: Sequence[str]) -> dict[str, list[Row[Any]]]:
        out: dict[str, list[Row[Any]]] = {i: [] for i in ids}
        if not ids:
            return out
        rows = await self.session.execute(
            select(delivery_attempt)
            .where(delivery_attempt.c.notification_id.in_(ids))
            .order_by(delivery_attempt.c.id)
        )
        for r in rows:
            out[r.notification_id].append(r)
        return out

    async def log_page(
        self, *, client_id: str | None, case_id: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[Row[Any]]:
        """The delivery log, newest first, keyset-paginated on (created_at, id)."""
        stmt = select(notification)
        if client_id is not None:
            stmt = stmt.where(notification.c.client_id == client_id)
        if case_id is not None:
            stmt = stmt.where(notification.c.case_id == case_id)
        if after is not None:
            at, nid = after
            stmt = stmt.where(
                or_(
                    notification.c.created_at < at,
                    and_(notification.c.created_at == at, notification.c.id < nid),
                )
            )
        stmt = stmt.order_by(notification.c.created_at.desc(), notification.c.id.desc()).limit(limit)
        return list((await self.session.execute(stmt)).all())

    # ------------------------------------------------------------------ suppression, endpoints

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, str]:
        addrs = list({a.lower() for a in addresses})
        if not addrs:
            return {}
        rows = await self.session.execute(
            select(suppression.c.address, suppression.c.reason).where(suppression.c.address.in_(addrs))
        )
        return {r.address: r.reason for r in rows}

    async def suppress(
        self, address: str, reason: str, code: str | None, nid: str | None, now: datetime
    ) -> None:
        stmt = (
            _insert(self.session, suppression)
            .values(address=address.lower(), reason=reason, code=code, notification_id=nid, created_at=now)
            .on_conflict_do_nothing(index_elements=[suppression.c.address])
        )
        await self.session.execute(stmt)

    async def unsuppress(self, address: str) -> None:
        await self.session.execute(delete(suppression).where(suppression.c.address == address.lower()))

    async def disabled_endpoints(self, urls: Iterable[str]) -> dict[str, str]:
        by_hash = {url_hash(u): u for u in urls}
        if not by_hash:
            return {}
        rows = await self.session.execute(
            select(webhook_endpoint.c.url_hash, webhook_endpoint.c.reason).where(
                webhook_endpoint.c.url_hash.in_(list(by_hash))
            )
        )
        return {by_hash[r.url_hash]: r.reason for r in rows}

    async def disable_endpoint(self, url: str, client_id: str, reason: str, now: datetime) -> None:
        stmt = (
            _insert(self.session, webhook_endpoint)
            .values(url_hash=url_hash(url), url=url, client_id=client_id, disabled_at=now, reason=reason)
            .on_conflict_do_nothing(index_elements=[webhook_endpoint.c.url_hash])
        )
        await self.session.execute(stmt)

    async def enable_endpoint(self, url: str) -> None:
        await self.session.execute(
            delete(webhook_endpoint).where(webhook_endpoint.c.url_hash == url_hash(url))
        )

    async def emit(self, *envelopes: Envelope[Any], now: datetime) -> None:
        await enqueue(self.session, *envelopes, now=now)


def _row(
    r: NotificationRequest,
    envelope: Envelope[Any],
    now: datetime,
    *,
    status: Status,
    next_attempt_at: datetime | None,
) -> dict[str, Any]:
    return {
        "id": notification_id(r.key, r.channel.value, r.recipient),
        "notification_key": r.key,
        "channel": r.channel.value,
        "recipient": r.recipient,
        "recipient_name": r.recipient_name,
        "client_id": r.client_id,
        "client_name": r.client_name,
        "case_id": r.case_id,
        "cycle": r.cycle,
        "step": r.step,
        "kind": r.kind.value,
        "template": r.template,
        "language": r.language,
        "country": r.country,
        "sender_kind": r.sender_kind,
        "sender_name": r.sender_name,
        "sender_email": r.sender_email,
        "payload": r.payload,
        "source_event_id": envelope.id,
        "source_event_type": envelope.type,
        "correlation_id": envelope.correlationid,
        "status": status.value,
        "attempts": 0,
        "generation": 0,
        "recoveries": 0,
        "next_attempt_at": next_attempt_at,
        "lease_until": None,
        "message_id": None,
        "last_error": None,
        "error_code": None,
        "permanent": None,
        "created_at": now,
        "updated_at": now,
        "sent_at": None,
    }


def contact_from_profile(profile: dict[str, Any] | None) -> Contact | None:
    if profile is None:
        return None
    return Contact.from_profile(ClientProfile.model_validate(profile))


class UnitOfWork:
    """One transaction: ``async with uow: ...; await uow.commit()`` (rolls back when not committed)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.session: AsyncSession | None = None
        self.repo: Repository

    async def __aenter__(self) -> UnitOfWork:
        self.session = self.sessionmaker()
        await self.session.begin()
        self.repo = Repository(self.session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.session is not None
        try:
            if self.session.in_transaction():
                await self.session.rollback()
        finally:
            await self.session.close()
            self.session = None

    async def commit(self) -> None:
        assert self.session is not None
        await self.session.commit()
