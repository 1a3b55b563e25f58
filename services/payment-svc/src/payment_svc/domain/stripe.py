"""Stripe event payloads to instructions (payment intents, refunds, disputes).

Client and invoice references come from the object's ``metadata`` (``client_id``; ``invoice_ids``
comma-separated, or ``invoice_id``); otherwise the handler looks the ``customer`` up in the customer mapping,
or, for refunds and disputes, follows the payment they belong to.
"""

from __future__ import annotations

import json
from typing import Any

from ar_events.events import ChargebackOutcome, PaymentMethod
from payment_svc.domain import declines
from payment_svc.domain.fields import free_text, id_list, integer, money, obj, req_text, text, unix_time
from payment_svc.domain.model import (
    ChargebackClosedIn,
    ChargebackOpenedIn,
    ClientHint,
    Instruction,
    PayloadError,
    PaymentFailedIn,
    PaymentIn,
    RefundIn,
    WebhookEvent,
)

HANDLED_TYPES = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
)

_DEBIT_TYPES = frozenset(
    {"sepa_debit", "us_bank_account", "bacs_debit", "au_becs_debit", "acss_debit", "ach_debit"}
)
_TRANSFER_TYPES = frozenset({"customer_balance", "bank_transfer", "ach_credit_transfer", "sofort", "ideal"})


def parse(body: bytes) -> WebhookEvent:
    """Map a verified Stripe event body; raise PayloadError when it is not a usable Stripe event."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PayloadError("body", "is not JSON") from None
    if not isinstance(doc, dict):
        raise PayloadError("body", "must be a JSON object")
    event_id = req_text(doc, "id", "id")
    event_type = req_text(doc, "type", "type")
    if event_type not in HANDLED_TYPES:
        return WebhookEvent(event_id=event_id, event_type=event_type)
    created = unix_time(doc, "created", "created")
    o = obj(obj(doc, "data", "data"), "object", "data.object")
    instructions: tuple[Instruction, ...]
    if event_type == "payment_intent.succeeded":
        instructions = (_succeeded(o, created),)
    elif event_type == "payment_intent.payment_failed":
        instructions = (_failed(o, created),)
    elif event_type == "charge.refunded":
        instructions = _refunded(o, created, event_id)
    else:
        instructions = (_dispute(o, created, closed=event_type == "charge.dispute.closed"),)
    return WebhookEvent(event_id=event_id, event_type=event_type, instructions=instructions)


def _metadata(o: dict[str, Any]) -> dict[str, Any]:
    meta = o.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _hint(o: dict[str, Any]) -> ClientHint:
    meta = _metadata(o)
    client_id = text(meta, "client_id", "data.object.metadata.client_id", required=False)
    customer = o.get("customer")
    if isinstance(customer, dict):  # expanded customer object
        customer = customer.get("id")
    customer_id = text({"c": customer}, "c", "data.object.customer", required=False) if customer else None
    return ClientHint(client_id=client_id, customer_id=customer_id)


def _invoice_ids(o: dict[str, Any]) -> tuple[str, ...]:
    meta = _metadata(o)
    path = "data.object.metadata.invoice_ids"
    if meta.get("invoice_ids"):
        return id_list(meta.get("invoice_ids"), path)
    return id_list(meta.get("invoice_id"), "data.object.metadata.invoice_id")


def _method(o: dict[str, Any]) -> PaymentMethod:
    kinds: list[str] = []
    charge = o.get("latest_charge")
    if isinstance(charge, dict):
        details = charge.get("payment_method_details")
        if isinstance(details, dict) and isinstance(details.get("type"), str):
            kinds.append(details["type"])
    types = o.get("payment_method_types")
    if isinstance(types, list):
        kinds.extend(t for t in types if isinstance(t, str))
    for kind in kinds:
        if kind in ("card", "card_present", "link"):
            return PaymentMethod.CARD
        if kind in _DEBIT_TYPES:
            return PaymentMethod.DIRECT_DEBIT
        if kind in _TRANSFER_TYPES:
            return PaymentMethod.TRANSFER
    return PaymentMethod.OTHER if kinds else PaymentMethod.CARD


def _succeeded(o: dict[str, Any], created: Any) -> PaymentIn:
    amount = o.get("amount_received") or o.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise PayloadError("data.object.amount_received", "must be an integer (minor units)")
    return PaymentIn(
        reference=req_text(o, "id", "data.object.id"),
        amount=money(amount, o.get("currency"), "data.object"),
        method=_method(o),
        invoice_ids=_invoice_ids(o),
        occurred_at=created,
        hint=_hint(o),
    )


def _failed(o: dict[str, Any], created: Any) -> PaymentFailedIn:
    error = o.get("last_payment_error")
    error = error if isinstance(error, dict) else {}
    decline_code = free_text(error.get("decline_code") or error.get("code"), 128)
    kind, retry = declines.classify(decline_code)
    return PaymentFailedIn(
        reference=req_text(o, "id", "data.object.id"),
        amount=money(integer(o, "amount", "data.object.amount"), o.get("currency"), "data.object"),
        method=_method(o),
        invoice_ids=_invoice_ids(o),
        decline_code=decline_code,
        failure_kind=kind,
        retry_possible=retry,
        occurred_at=created,
        hint=_hint(o),
    )


def _payment_ref(o: dict[str, Any], path: str) -> str:
    """The payment intent a charge or dispute belongs to (our payments are keyed by it), else the charge."""
    pi = o.get("payment_intent")
    if isinstance(pi, dict):
        pi = pi.get("id")
    if isinstance(pi, str) and pi:
        return pi
    charge = o.get("charge")
    if isinstance(charge, dict):
        charge = charge.get("id")
    if isinstance(charge, str) and charge:
        return charge
    raise PayloadError(path, "names neither a payment_intent nor a charge")


def _refunded(o: dict[str, Any], created: Any, event_id: str) -> tuple[RefundIn, ...]:
    currency = o.get("currency")
    payment_ref = _payment_ref(o, "data.object.payment_intent")
    hint = _hint(o)
    refunds = o.get("refunds")
    data = refunds.get("data") if isinstance(refunds, dict) else None
    out: list[RefundIn] = []
    if isinstance(data, list) and data:
        for i, r in enumerate(data):
            if not isinstance(r, dict):
                raise PayloadError(f"data.object.refunds.data[{i}]", "must be an object")
            if r.get("status") in ("failed", "canceled"):
                continue
            out.append(
                RefundIn(
                    reference=req_text(r, "id", f"data.object.refunds.data[{i}].id"),
                    payment_reference=payment_ref,
                    amount=money(
                        integer(r, "amount", f"data.object.refunds.data[{i}].amount"),
                        r.get("currency", currency),
                        f"data.object.refunds.data[{i}]",
                    ),
                    reason=free_text(r.get("reason")),
                    occurred_at=unix_time(r, "created", f"data.object.refunds.data[{i}].created")
                    if "created" in r
                    else created,
                    hint=hint,
                )
            )
        return tuple(out)
    # Newer API versions leave the refund list out: amount_refunded is the running total.
    total = integer(o, "amount_refunded", "data.object.amount_refunded")
    return (
        RefundIn(
            reference=f"{req_text(o, 'id', 'data.object.id')}/refunded/{total}",
            payment_reference=payment_ref,
            amount=money(total, currency, "data.object"),
            reason=None,
            occurred_at=created,
            hint=hint,
            cumulative=True,
        ),
    )


def _dispute(o: dict[str, Any], created: Any, *, closed: bool) -> ChargebackOpenedIn | ChargebackClosedIn:
    reference = req_text(o, "id", "data.object.id")
    payment_ref = _payment_ref(o, "data.object.payment_intent")
    amount = money(integer(o, "amount", "data.object.amount"), o.get("currency"), "data.object")
    hint = _hint(o)
    if not closed:
        return ChargebackOpenedIn(
            reference=reference,
            payment_reference=payment_ref,
            amount=amount,
            reason=free_text(o.get("reason")),
            occurred_at=created,
            hint=hint,
        )
    status = o.get("status")
    if status in ("won", "warning_closed"):
        outcome = ChargebackOutcome.MERCHANT_WON
    elif status == "lost":
        outcome = ChargebackOutcome.CLIENT_WON
    else:
        raise PayloadError("data.object.status", "a closed dispute is won, lost or warning_closed")
    return ChargebackClosedIn(
        reference=reference,
        payment_reference=payment_ref,
        amount=amount,
        outcome=outcome,
        occurred_at=created,
        hint=hint,
    )
