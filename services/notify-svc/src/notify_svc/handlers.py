"""Application layer: one function per incoming event type, the HANDLERS registry, and the event builders.

Handlers run inside the consumer's transaction (inbox row + effect + outbox in one commit). They only
record what must be sent; the dispatcher sends it. So a redelivered event can never send twice: the second
copy is caught by the inbox, and a repeated request (same notification key) by the primary key.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import await_only

from ar_events.clock import Clock
from ar_events.envelope import Envelope
from ar_events.events import (
    AgencyWarningIssued,
    Channel,
    ClientProfile,
    ClientRegistered,
    ClientUpdated,
    InvoiceIssued,
    ManualTaskCreated,
    MessageRequest,
    NotificationFailed,
    NotificationPreferences,
    NotificationSent,
    Payload,
    PaymentReceived,
    ReminderRequested,
)
from notify_svc.domain.delivery import Status
from notify_svc.domain.notifications import (
    Plan,
    Rejection,
    notification_id,
    plan_invoice_notice,
    plan_message_request,
    plan_receipt,
    plan_task,
)
from notify_svc.repository import Repository, UnitOfWork, contact_from_profile

SOURCE = "notify-svc"
Handler = Callable[[AsyncSession, Envelope[Any]], Awaitable[None]]


async def on_client_profile(session: AsyncSession, envelope: Envelope[Any], *, clock: Clock) -> None:
    """ClientRegistered / ClientUpdated: keep the newest profile (by event time) in the contact projection."""
    profile: ClientProfile = envelope.data
    await Repository(session).save_contact(
        profile.model_dump(mode="json"), envelope.time, envelope.id, clock.now()
    )


async def on_message_request(session: AsyncSession, envelope: Envelope[Any], *, clock: Clock) -> None:
    """ReminderRequested / AgencyWarningIssued: one pending notification per recipient and channel."""
    event: MessageRequest = envelope.data
    repo = Repository(session)
    contact = contact_from_profile(await repo.contact_profile(event.client_id))
    await repo.save_statement(event.client_id, event.statement.model_dump(mode="json"), envelope.time)
    await _record(repo, plan_message_request(event, contact), envelope, clock.now())


async def on_task_created(session: AsyncSession, envelope: Envelope[Any], *, clock: Clock) -> None:
    """ManualTaskCreated: an email to the assignee (task, client, amounts, link to the case)."""
    event: ManualTaskCreated = envelope.data
    repo = Repository(session)
    contact = contact_from_profile(await repo.contact_profile(event.client_id))
    await _record(repo, plan_task(event, contact), envelope, clock.now())


async def on_invoice_issued(session: AsyncSession, envelope: Envelope[Any], *, clock: Clock) -> None:
    """InvoiceIssued: the invoice notice to the client's billing contacts, on the channels they prefer."""
    repo = Repository(session)
    contact = contact_from_profile(await repo.contact_profile(envelope.data.client_id))
    await _record(repo, plan_invoice_notice(envelope.data, contact), envelope, clock.now())


#: ``session.info`` key of the PaymentReceived records a consumer transaction holds back.
_PAYMENTS = "notify.payments_received"


async def on_payment_received(session: AsyncSession, envelope: Envelope[Any], *, clock: Clock) -> None:
    """PaymentReceived: a receipt when the client's preferences want one.

    The payments of a consumer transaction are held back and planned together just before it commits: one
    profile lookup for all of them instead of one each (most clients want no receipt, so that lookup was
    most of what a payment cost here).
    """
    queued: list[Envelope[Any]] | None = session.info.get(_PAYMENTS)
    if queued is None:
        queued = session.info[_PAYMENTS] = []

        def before_commit(_sync_session: Any) -> None:
            # runs inside SQLAlchemy's greenlet: awaiting here is what the asyncio extension does per statement
            held = session.info.pop(_PAYMENTS, None)
            if held:
                await_only(_plan_receipts(session, held, clock.now()))

        event.listen(session.sync_session, "before_commit", before_commit, once=True)
    queued.append(envelope)


def _wants_receipts(profile: dict[str, Any]) -> bool:
    """``Contact.payment_receipts`` of a stored profile, read without validating the whole profile."""
    preferences = profile.get("preferences") or {}
    return bool(preferences.get("payment_receipts", _RECEIPTS_DEFAULT))


_RECEIPTS_DEFAULT = NotificationPreferences.model_fields["payment_receipts"].default


async def _plan_receipts(session: AsyncSession, envelopes: list[Envelope[Any]], now: datetime) -> None:
    repo = Repository(session)
    profiles = await repo.contact_profiles(e.data.client_id for e in envelopes)
    for envelope in envelopes:
        profile = profiles.get(envelope.data.client_id)
        if profile is None or not _wants_receipts(profile):
            continue  # plan_receipt plans nothing without a contact that wants receipts
        await _record(repo, plan_receipt(envelope.data, contact_from_profile(profile)), envelope, now)


async def _record(repo: Repository, plan: Plan, envelope: Envelope[Any], now: datetime) -> None:
    await repo.add_requests(plan.requests, envelope, now)
    for rejection in plan.rejections:
        await _reject(repo, rejection, envelope, now)


_DEFAULT_TEMPLATES: dict[type[Payload], str] = {
    InvoiceIssued: "invoice-issued",
    PaymentReceived: "payment-receipt",
    ManualTaskCreated: "task-assigned",
}


async def _reject(repo: Repository, rej: Rejection, envelope: Envelope[Any], now: datetime) -> None:
    """A channel we cannot serve at all: logged as a failed notification and reported once."""
    data = envelope.data
    nid = notification_id(rej.key, rej.channel.value, rej.recipient)
    template = getattr(data, "template", None) or _DEFAULT_TEMPLATES.get(type(data), "unknown")
    row = {
        "id": nid,
        "notification_key": rej.key,
        "channel": rej.channel.value,
        "recipient": rej.recipient,
        "recipient_name": "",
        "client_id": data.client_id,
        "client_name": "",
        "case_id": getattr(data, "case_id", None),
        "cycle": getattr(data, "cycle", None),
        "step": getattr(data, "step", None),
        "kind": "rejected",
        "template": template,
        "language": getattr(data, "language", "en"),
        "country": None,
        "sender_kind": "ar_mailbox",
        "sender_name": None,
        "sender_email": None,
        "payload": data.model_dump(mode="json"),
        "source_event_id": envelope.id,
        "source_event_type": envelope.type,
        "correlation_id": envelope.correlationid,
        "status": Status.FAILED.value,
        "attempts": 0,
        "generation": 0,
        "recoveries": 0,
        "next_attempt_at": None,
        "lease_until": None,
        "message_id": None,
        "last_error": rej.reason,
        "error_code": rej.error_code,
        "permanent": True,
        "created_at": now,
        "updated_at": now,
        "sent_at": None,
    }
    if await repo.add_failed(row):
        await repo.emit(
            failed_event(row, reason=rej.reason, code=rej.error_code, permanent=True, now=now), now=now
        )


def _event_id(nid: str, generation: int, what: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"notify:{nid}:{generation}:{what}"))


def sent_event(row: Any, *, message_id: str | None, now: datetime) -> Envelope[NotificationSent]:
    """NotificationSent for a delivered row; its id is deterministic per (row, generation)."""
    r = _mapping(row)
    payload = NotificationSent(
        client_id=r["client_id"],
        notification_id=r["id"],
        notification_key=r["notification_key"],
        channel=Channel(r["channel"]),
        template=r["template"],
        recipient=r["recipient"],
        case_id=r["case_id"],
        cycle=r["cycle"],
        step=r["step"],
        message_id=message_id,
        source_event_id=r["source_event_id"],
        sent_at=now,
    )
    return _wrap(payload, r, _event_id(r["id"], r["generation"], "sent"), now)


def failed_event(
    row: Any, *, reason: str, code: str | None, permanent: bool, now: datetime
) -> Envelope[NotificationFailed]:
    """NotificationFailed; ``permanent`` tells dunning-svc the contact is wrong (it opens a task)."""
    r = _mapping(row)
    payload = NotificationFailed(
        client_id=r["client_id"],
        notification_id=r["id"],
        notification_key=r["notification_key"],
        channel=Channel(r["channel"]),
        template=r["template"],
        recipient=r["recipient"] or "-",
        case_id=r["case_id"],
        cycle=r["cycle"],
        step=r["step"],
        permanent=permanent,
        reason=reason[:1000],
        error_code=code,
        source_event_id=r["source_event_id"],
        failed_at=now,
    )
    return _wrap(payload, r, _event_id(r["id"], r["generation"], f"failed:{r.get('attempts', 0)}"), now)


_ENVELOPES: dict[type[Payload], Any] = {
    NotificationSent: Envelope[NotificationSent],
    NotificationFailed: Envelope[NotificationFailed],
}


def _wrap(payload: Payload, r: Mapping[str, Any], event_id: str, now: datetime) -> Envelope[Any]:
    """Like ``new_event``, with the concrete envelope class resolved once (pydantic generics are slow to look up)."""
    env: Envelope[Any] = _ENVELOPES[type(payload)](
        id=event_id,
        source=SOURCE,
        type=payload.TYPE,
        time=now.astimezone(UTC),
        subject=payload.client_id,
        correlationid=r.get("correlation_id") or event_id,
        causationid=r["source_event_id"],
        data=payload,
    )
    return env


def _mapping(row: Any) -> Mapping[str, Any]:
    return row if isinstance(row, Mapping) else row._mapping


class NotFound(LookupError):
    """No notification with that id."""


class NotResendable(ValueError):
    """The notification is not in a state a resend makes sense for."""

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail


async def resend_notification(uow: UnitOfWork, nid: str, *, clear_suppression: bool, now: datetime) -> Any:
    """A person asked to resend a failed (or unknown) notification: queue it as a new generation (new Message-ID)."""
    async with uow:
        row = await uow.repo.get(nid, lock=True)
        if row is None:
            raise NotFound(nid)
        if row.status not in (Status.FAILED.value, Status.UNKNOWN.value):
            raise NotResendable(
                "Notification is not failed",
                f"status is {row.status!r}; only failed or unknown notifications can be resent",
            )
        if row.kind == "rejected":
            raise NotResendable("Nothing to resend", f"the request had no usable recipient: {row.last_error}")
        if clear_suppression:
            if row.channel == "email":
                await uow.repo.unsuppress(row.recipient)
            else:
                await uow.repo.enable_endpoint(row.recipient)
        await uow.repo.requeue(row.id, now)
        await uow.commit()
        return await uow.repo.get(nid)


def build_handlers(clock: Clock, on_committed: Callable[[], None] | None = None) -> dict[str, Handler]:
    """The HANDLERS registry: CloudEvents type -> handler bound to its dependencies.

    ``on_committed`` (the dispatcher's ``wake``) is called once after each consumer transaction that may have
    recorded notifications commits, so they leave at once instead of at the dispatcher's next poll.
    """
    profile = partial(on_client_profile, clock=clock)

    def sends(handler: Handler) -> Handler:
        return handler if on_committed is None else _waking(handler, on_committed)

    message = sends(partial(on_message_request, clock=clock))
    return {
        ClientRegistered.TYPE: profile,
        ClientUpdated.TYPE: profile,
        ReminderRequested.TYPE: message,
        AgencyWarningIssued.TYPE: message,
        ManualTaskCreated.TYPE: sends(partial(on_task_created, clock=clock)),
        InvoiceIssued.TYPE: sends(partial(on_invoice_issued, clock=clock)),
        PaymentReceived.TYPE: sends(partial(on_payment_received, clock=clock)),
    }


_WAKE_ARMED = "notify.wake_armed"


def _waking(handler: Handler, wake: Callable[[], None]) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope[Any]) -> None:
        await handler(session, envelope)
        if not session.info.get(_WAKE_ARMED):  # once per transaction, however many events it applies
            session.info[_WAKE_ARMED] = True
            event.listen(session.sync_session, "after_commit", lambda _session: wake(), once=True)

    return handle
