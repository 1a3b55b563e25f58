"""Application layer: one function per incoming message (webhook, manual payment, parked assignment).

Each runs in one unit of work: the raw webhook, the payment (or refund, chargeback, failure), the parked
row and the outbox rows commit together, so an accepted webhook always ends as exactly one event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_events.clock import Clock
from ar_events.context import correlation_scope, current_correlation_id
from ar_events.envelope import new_event
from ar_events.events import EVENT_TYPES, Payload, PaymentMethod, PaymentReceived
from ar_events.money import Money
from payment_svc.accounts import Account, SecretStore
from payment_svc.domain import standard, stripe
from payment_svc.domain.model import (
    ChargebackClosedIn,
    ChargebackOpenedIn,
    ClientHint,
    Instruction,
    PaymentFailedIn,
    PaymentIn,
    RefundIn,
    WebhookEvent,
)
from payment_svc.domain.payments import child_id_for, payment_id_for, to_payload
from payment_svc.domain.signatures import RejectReason, SignatureError, verify_standard, verify_stripe
from payment_svc.group_commit import GroupCommit
from payment_svc.repository import UnitOfWork
from payment_svc.settings import AccountKind

SOURCE = "payment-svc"
UNASSIGNED = "__unassigned__"
_EVENT_NS = uuid.UUID("0d8f6a52-4b0e-4b8e-9f1c-6c3d2a9e7b44")
_PRIVATE_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "proxy-authorization"})


class Outcome(StrEnum):
    PROCESSED = "processed"
    IGNORED = "ignored"
    PARKED = "parked"
    DUPLICATE = "duplicate"


class UnknownAccount(LookupError):
    """No processor account of that name and kind (404)."""


@dataclass
class Deps:
    """What the handlers need, built once by bootstrap."""

    sessionmaker: async_sessionmaker[AsyncSession]
    clock: Clock
    secrets: SecretStore
    tolerance_s: int = 300
    after_commit: Callable[[], None] = field(default=lambda: None)
    #: Set by bootstrap when webhooks share transactions (``webhooks.group_commit_max`` > 1).
    group_commit: GroupCommit[VerifiedWebhook, WebhookResult] | None = None

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)


@dataclass(frozen=True, slots=True)
class WebhookResult:
    outcome: Outcome
    event_id: str
    event_type: str
    webhook_id: str | None = None


def _event_id(record_id: str, type_name: str) -> str:
    """Deterministic envelope id: the outbox's unique event id is a last guard against a double emit."""
    return str(uuid.uuid5(_EVENT_NS, f"{record_id}/{type_name}"))


def _envelope(payload: Payload, record_id: str, now: datetime) -> Any:
    return new_event(payload, source=SOURCE, time=now, event_id=_event_id(record_id, payload.TYPE))


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers worth keeping with the raw webhook (credentials dropped)."""
    return {k.lower(): v for k, v in headers.items() if k.lower() not in _PRIVATE_HEADERS}


# --------------------------------------------------------------------------------------------------
# Webhooks
# --------------------------------------------------------------------------------------------------


async def resolve_account(deps: Deps, name: str, kind: AccountKind) -> Account:
    account = await deps.secrets.get(name)
    if account is None or account.kind is not kind:
        raise UnknownAccount(name)
    return account


def verify_and_parse(
    account: Account, body: bytes, headers: Mapping[str, str], now: datetime, tolerance_s: int
) -> WebhookEvent:
    """Signature first (on the raw bytes), then the payload; raises SignatureError or PayloadError."""
    if account.kind is AccountKind.STRIPE:
        verify_stripe(body, headers.get("stripe-signature"), account.secrets, now, tolerance_s)
        return stripe.parse(body)
    verified = verify_standard(body, headers, account.secrets, now, tolerance_s)
    assert verified.message_id is not None
    return standard.parse(body, verified.message_id)


@dataclass(slots=True)
class VerifiedWebhook:
    """A webhook whose signature and payload checked out: what the transaction records and applies."""

    account: str
    event: WebhookEvent
    body: bytes
    headers: dict[str, str]
    received_at: datetime
    correlation_id: str | None


async def on_webhook(
    deps: Deps, account_name: str, kind: AccountKind, body: bytes, headers: Mapping[str, str]
) -> WebhookResult:
    """A webhook arrived: verify it, record it raw, apply it and queue its events, all in one commit."""
    account = await resolve_account(deps, account_name, kind)
    now = deps.clock.now()
    lowered = {k.lower(): v for k, v in headers.items()}
    event = verify_and_parse(account, body, lowered, now, deps.tolerance_s)
    job = VerifiedWebhook(account.name, event, body, lowered, now, current_correlation_id())
    if deps.group_commit is not None:
        return await deps.group_commit.submit(job)  # shares a transaction with webhooks arriving alongside
    async with deps.uow() as uow:
        result = await record_webhook(uow, job)
        await uow.commit(now)
    deps.after_commit()
    return result


async def record_webhook(uow: UnitOfWork, job: VerifiedWebhook) -> WebhookResult:
    """Inside ``uow``: record the raw webhook (a duplicate stops here), apply its instructions, emit."""
    event, now = job.event, job.received_at
    with correlation_scope(job.correlation_id):
        webhook_id = "whk_" + uuid.uuid4().hex
        fresh = await uow.webhooks.record(
            {
                "id": webhook_id,
                "account": job.account,
                "processor_event_id": event.event_id[:256],
                "event_type": event.event_type[:128],
                "outcome": Outcome.IGNORED.value if event.ignored else Outcome.PROCESSED.value,
                "raw_body": job.body,
                "headers": safe_headers(job.headers),
                "received_at": now,
            }
        )
        if not fresh:
            return WebhookResult(Outcome.DUPLICATE, event.event_id, event.event_type)
        outcomes = [
            await _apply(uow, job.account, webhook_id, event.event_id, i, now) for i in event.instructions
        ]
        outcome = _overall(outcomes) if outcomes else Outcome.IGNORED
        if outcome not in (Outcome.PROCESSED, Outcome.IGNORED):
            await uow.webhooks.set_outcome(webhook_id, outcome.value)
    return WebhookResult(outcome, event.event_id, event.event_type, webhook_id)


def _overall(outcomes: list[Outcome]) -> Outcome:
    for candidate in (Outcome.PARKED, Outcome.PROCESSED, Outcome.DUPLICATE):
        if candidate in outcomes:
            return candidate
    return Outcome.IGNORED


async def _client(
    uow: UnitOfWork, processor: str, hint: ClientHint, payment_id: str | None = None
) -> str | None:
    """Resolve the client: the linked payment's client, then metadata, then the customer mapping."""
    if payment_id is not None:
        linked = await uow.payments.client_of(payment_id)
        if linked:
            return linked
    if hint.client_id:
        return hint.client_id
    if hint.customer_id:
        return await uow.customers.client_for(processor, hint.customer_id)
    return None


async def _emit_or_park(
    uow: UnitOfWork,
    payload_for: Callable[[str], Payload],
    *,
    client_id: str | None,
    table: str,
    record_id: str,
    processor: str,
    webhook_id: str,
    hint: ClientHint,
    reason: str,
    now: datetime,
) -> Outcome:
    if client_id is not None:
        uow.emit(_envelope(payload_for(client_id), record_id, now))
        return Outcome.PROCESSED
    pending = payload_for(UNASSIGNED)
    await uow.parked.add(
        {
            "id": "prk_" + uuid.uuid4().hex,
            "webhook_event_id": webhook_id,
            "processor": processor,
            "event_type": pending.TYPE,
            "record_table": table,
            "record_id": record_id,
            "customer_id": hint.customer_id,
            "payload": pending.model_dump(mode="json"),
            "reason": reason,
            "parked_at": now,
        }
    )
    return Outcome.PARKED


async def _apply(
    uow: UnitOfWork, processor: str, webhook_id: str, event_id: str, instr: Instruction, now: datetime
) -> Outcome:
    common = {"processor": processor, "webhook_id": webhook_id, "hint": instr.hint, "now": now}
    if isinstance(instr, PaymentIn):
        pid = payment_id_for(processor, instr.reference)
        client = await _client(uow, processor, instr.hint)
        inserted = await uow.payments.add(
            {
                "id": pid,
                "client_id": client,
                "amount_minor": instr.amount.amount_minor,
                "currency": instr.amount.currency,
                "method": instr.method.value,
                "processor": processor,
                "reference": instr.reference,
                "invoice_ids": list(instr.invoice_ids),
                "received_at": instr.occurred_at,
                "recorded_at": now,
                "webhook_event_id": webhook_id,
            }
        )
        if not inserted:
            return Outcome.DUPLICATE
        return await _emit_or_park(
            uow,
            lambda c: to_payload(instr, client_id=c, processor=processor, payment_id=pid, own_id=pid),
            client_id=client,
            table="payment",
            record_id=pid,
            reason="client_unresolved",
            **common,  # type: ignore[arg-type]
        )
    if isinstance(instr, PaymentFailedIn):
        pid = payment_id_for(processor, instr.reference)
        fid = child_id_for("pfl", processor, event_id)
        client = await _client(uow, processor, instr.hint)
        inserted = await uow.payments.add_failure(
            {
                "id": fid,
                "client_id": client,
                "payment_id": pid,
                "processor": processor,
                "reference": instr.reference,
                "processor_event_id": event_id[:256],
                "amount_minor": instr.amount.amount_minor,
                "currency": instr.amount.currency,
                "method": instr.method.value,
                "decline_code": instr.decline_code,
                "failure_kind": instr.failure_kind.value,
                "retry_possible": instr.retry_possible,
                "failed_at": instr.occurred_at,
                "webhook_event_id": webhook_id,
            }
        )
        if not inserted:
            return Outcome.DUPLICATE
        return await _emit_or_park(
            uow,
            lambda c: to_payload(instr, client_id=c, processor=processor, payment_id=pid, own_id=fid),
            client_id=client,
            table="payment_failure",
            record_id=fid,
            reason="client_unresolved",
            **common,  # type: ignore[arg-type]
        )
    if isinstance(instr, RefundIn):
        return await _refund(uow, instr, **common)  # type: ignore[arg-type]
    return await _chargeback(uow, instr, **common)  # type: ignore[arg-type]


async def _refund(
    uow: UnitOfWork, instr: RefundIn, *, processor: str, webhook_id: str, hint: ClientHint, now: datetime
) -> Outcome:
    pid = payment_id_for(processor, instr.payment_reference)
    rid = child_id_for("ref", processor, instr.reference)
    amount = instr.amount
    if instr.cumulative:
        delta = amount.amount_minor - await uow.payments.refunded_total(pid)
        if delta <= 0:
            return Outcome.DUPLICATE
        amount = Money(amount_minor=delta, currency=amount.currency)
    client = await _client(uow, processor, hint, pid)
    inserted = await uow.payments.add_refund(
        {
            "id": rid,
            "client_id": client,
            "payment_id": pid,
            "processor": processor,
            "reference": instr.reference,
            "amount_minor": amount.amount_minor,
            "currency": amount.currency,
            "reason": instr.reason,
            "refunded_at": instr.occurred_at,
            "webhook_event_id": webhook_id,
        }
    )
    if not inserted:
        return Outcome.DUPLICATE
    return await _emit_or_park(
        uow,
        lambda c: to_payload(
            instr, client_id=c, processor=processor, payment_id=pid, own_id=rid, amount=amount
        ),
        client_id=client,
        table="refund",
        record_id=rid,
        processor=processor,
        webhook_id=webhook_id,
        hint=hint,
        reason="client_unresolved",
        now=now,
    )


async def _chargeback(
    uow: UnitOfWork,
    instr: ChargebackOpenedIn | ChargebackClosedIn,
    *,
    processor: str,
    webhook_id: str,
    hint: ClientHint,
    now: datetime,
) -> Outcome:
    pid = payment_id_for(processor, instr.payment_reference)
    cid = child_id_for("cbk", processor, instr.reference)
    client = await _client(uow, processor, hint, pid)
    row = {
        "id": cid,
        "client_id": client,
        "payment_id": pid,
        "processor": processor,
        "reference": instr.reference,
        "amount_minor": instr.amount.amount_minor,
        "currency": instr.amount.currency,
    }
    if isinstance(instr, ChargebackOpenedIn):
        inserted = await uow.payments.add_chargeback(
            {**row, "reason": instr.reason, "status": "open", "opened_at": instr.occurred_at}
        )
    else:
        status = instr.outcome.value
        inserted = await uow.payments.close_chargeback(processor, instr.reference, status, instr.occurred_at)
        if not inserted and await uow.payments.chargeback_status(processor, instr.reference) is None:
            inserted = await uow.payments.add_chargeback(
                {**row, "status": status, "closed_at": instr.occurred_at}
            )
    if not inserted:
        return Outcome.DUPLICATE
    record_id = cid if isinstance(instr, ChargebackOpenedIn) else cid + "/closed"
    return await _emit_or_park(
        uow,
        lambda c: to_payload(instr, client_id=c, processor=processor, payment_id=pid, own_id=cid),
        client_id=client,
        table="chargeback",
        record_id=record_id,
        processor=processor,
        webhook_id=webhook_id,
        hint=hint,
        reason="client_unresolved",
        now=now,
    )


# --------------------------------------------------------------------------------------------------
# Parked events and the customer mapping
# --------------------------------------------------------------------------------------------------


class ParkedNotFound(LookupError):
    pass


class AlreadyAssigned(RuntimeError):
    pass


async def on_assign_parked(
    uow: UnitOfWork, parked_id: str, client_id: str, remember_customer: bool, now: datetime
) -> Payload:
    """Ops named the client of a parked event: record it, emit the event (and map the customer if asked)."""
    row = await uow.parked.get_for_update(parked_id)
    if row is None:
        raise ParkedNotFound(parked_id)
    if row.resolved_at is not None or not await uow.parked.resolve(parked_id, client_id, now):
        raise AlreadyAssigned(parked_id)
    cls = EVENT_TYPES[row.event_type]
    payload = cls.model_validate({**row.payload, "client_id": client_id})
    table = row.record_table
    record_id = row.record_id
    await uow.payments.set_client(table, record_id.removesuffix("/closed"), client_id)
    if remember_customer and row.customer_id:
        await uow.customers.put(row.processor, row.customer_id, client_id, now)
    uow.emit(_envelope(payload, record_id, now))
    return payload


# --------------------------------------------------------------------------------------------------
# Manual payments (wire, check, cash)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManualPayment:
    client_id: str
    amount: Money
    method: PaymentMethod
    reference: str | None
    invoice_ids: tuple[str, ...]
    received_at: datetime
    note: str | None


async def on_manual_payment(uow: UnitOfWork, cmd: ManualPayment, now: datetime) -> str:
    """A person recorded money received outside a processor: store it and emit PaymentReceived."""
    pid = "pay_" + uuid.uuid4().hex
    await uow.payments.add(
        {
            "id": pid,
            "client_id": cmd.client_id,
            "amount_minor": cmd.amount.amount_minor,
            "currency": cmd.amount.currency,
            "method": cmd.method.value,
            "processor": "manual",
            "reference": cmd.reference,
            "invoice_ids": list(cmd.invoice_ids),
            "received_at": cmd.received_at,
            "recorded_at": now,
            "note": cmd.note,
        }
    )
    payload = PaymentReceived(
        client_id=cmd.client_id,
        payment_id=pid,
        amount=cmd.amount,
        method=cmd.method,
        processor="manual",
        reference=cmd.reference,
        invoice_ids=cmd.invoice_ids,
        received_at=cmd.received_at,
    )
    uow.emit(_envelope(payload, pid, now))
    return pid


__all__ = [
    "AlreadyAssigned",
    "Deps",
    "ManualPayment",
    "Outcome",
    "ParkedNotFound",
    "RejectReason",
    "SignatureError",
    "UnknownAccount",
    "WebhookResult",
    "on_assign_parked",
    "on_manual_payment",
    "on_webhook",
]
