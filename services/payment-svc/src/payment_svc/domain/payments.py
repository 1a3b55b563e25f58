"""From an understood instruction and a resolved client to the event payload payment-svc emits."""

from __future__ import annotations

import uuid

from ar_events.events import (
    ChargebackClosed,
    ChargebackOpened,
    Payload,
    PaymentFailed,
    PaymentReceived,
    PaymentRefunded,
)
from ar_events.money import Money
from payment_svc.domain.model import (
    ChargebackClosedIn,
    ChargebackOpenedIn,
    Instruction,
    PaymentFailedIn,
    PaymentIn,
    RefundIn,
)

_NS = uuid.UUID("5b0f4c1e-8a7e-4d53-9a0e-3c1f5e2b7a10")


def payment_id_for(processor: str, reference: str) -> str:
    """Deterministic payment id for a processor payment: a refund seen first names the same id."""
    return "pay_" + uuid.uuid5(_NS, f"{processor}\x00payment\x00{reference}").hex


def child_id_for(prefix: str, processor: str, reference: str) -> str:
    """Deterministic id of a refund (``ref_``), chargeback (``cbk_``) or failed attempt (``pfl_``)."""
    return f"{prefix}_" + uuid.uuid5(_NS, f"{processor}\x00{prefix}\x00{reference}").hex


def to_payload(
    instr: Instruction,
    *,
    client_id: str,
    processor: str,
    payment_id: str,
    own_id: str,
    amount: Money | None = None,
) -> Payload:
    """The event for one instruction; ``own_id`` is the refund/chargeback id; ``amount`` overrides (refund deltas)."""
    if isinstance(instr, PaymentIn):
        return PaymentReceived(
            client_id=client_id,
            payment_id=payment_id,
            amount=instr.amount,
            method=instr.method,
            processor=processor,
            reference=instr.reference,
            invoice_ids=instr.invoice_ids,
            received_at=instr.occurred_at,
        )
    if isinstance(instr, PaymentFailedIn):
        return PaymentFailed(
            client_id=client_id,
            payment_id=payment_id,
            amount=instr.amount,
            method=instr.method,
            processor=processor,
            reference=instr.reference,
            invoice_ids=instr.invoice_ids,
            decline_code=instr.decline_code,
            failure_kind=instr.failure_kind,
            retry_possible=instr.retry_possible,
            failed_at=instr.occurred_at,
        )
    if isinstance(instr, RefundIn):
        return PaymentRefunded(
            client_id=client_id,
            refund_id=own_id,
            payment_id=payment_id,
            amount=amount or instr.amount,
            reason=instr.reason,
            refunded_at=instr.occurred_at,
        )
    if isinstance(instr, ChargebackOpenedIn):
        return ChargebackOpened(
            client_id=client_id,
            chargeback_id=own_id,
            payment_id=payment_id,
            amount=instr.amount,
            reason=instr.reason,
            opened_at=instr.occurred_at,
        )
    assert isinstance(instr, ChargebackClosedIn)
    return ChargebackClosed(
        client_id=client_id,
        chargeback_id=own_id,
        payment_id=payment_id,
        amount=instr.amount,
        outcome=instr.outcome,
        closed_at=instr.occurred_at,
    )
