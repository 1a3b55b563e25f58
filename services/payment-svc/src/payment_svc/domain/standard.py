"""The generic payload a bank-transfer or direct-debit processor sends over Standard Webhooks.

Envelope (the Standard Webhooks convention)::

    {"type": "payment.received", "timestamp": "2026-11-22T08:00:00Z", "data": {...}}

``type`` is one of ``payment.received``, ``payment.failed``, ``payment.returned``, ``payment.refunded``;
other types are acknowledged and ignored. ``data``:

==================== ======== =====================================================================
field                required meaning
==================== ======== =====================================================================
payment_reference    yes      the processor's id for the payment (refunds and returns name the payment)
amount_minor         yes      integer minor units, > 0
currency             yes      ISO 4217 code
method               no       transfer (default), direct_debit, card, check, cash, other
client_id            no       our client id; else customer_reference is looked up in the mapping
customer_reference   no       the processor's id for the payer
invoice_ids          no       list of invoice ids (or a comma-separated string)
occurred_at          no       RFC 3339; defaults to ``timestamp``
failure_code         no       payment.failed: the bank's or processor's code (e.g. AM04, insufficient_funds)
failure_kind         no       payment.failed: hard or soft (default: from failure_code, else soft)
retry_possible       no       payment.failed: bool (default: true for soft, false for hard)
refund_reference     yes*     payment.returned / payment.refunded: the id of the return or refund
reason               no       payment.returned / payment.refunded: free text or the return code
==================== ======== =====================================================================

The Standard Webhooks ``webhook-id`` header is the event id used for deduplication.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ar_events.events import FailureKind, PaymentMethod
from payment_svc.domain import declines
from payment_svc.domain.fields import id_list, integer, iso_time, money, obj, req_text, text
from payment_svc.domain.model import (
    ClientHint,
    PayloadError,
    PaymentFailedIn,
    PaymentIn,
    RefundIn,
    WebhookEvent,
)

HANDLED_TYPES = ("payment.received", "payment.failed", "payment.returned", "payment.refunded")


def parse(body: bytes, message_id: str) -> WebhookEvent:
    """Map a verified generic payload; ``message_id`` is the webhook-id header."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PayloadError("body", "is not JSON") from None
    if not isinstance(doc, dict):
        raise PayloadError("body", "must be a JSON object")
    event_type = req_text(doc, "type", "type")
    if event_type not in HANDLED_TYPES:
        return WebhookEvent(event_id=message_id, event_type=event_type)
    stamp = iso_time(doc.get("timestamp"), "timestamp")
    d = obj(doc, "data", "data")
    occurred = iso_time(d["occurred_at"], "data.occurred_at") if d.get("occurred_at") else stamp
    reference = req_text(d, "payment_reference", "data.payment_reference")
    amount = money(integer(d, "amount_minor", "data.amount_minor"), d.get("currency"), "data")
    hint = ClientHint(
        client_id=text(d, "client_id", "data.client_id", required=False),
        customer_id=text(d, "customer_reference", "data.customer_reference", required=False),
    )
    if event_type == "payment.received":
        return WebhookEvent(
            message_id,
            event_type,
            (PaymentIn(reference, amount, _method(d), _invoices(d), occurred, hint),),
        )
    if event_type == "payment.failed":
        return WebhookEvent(message_id, event_type, (_failed(d, reference, amount, occurred, hint),))
    reason = text(d, "reason", "data.reason", required=False) or event_type.removeprefix("payment.")
    refund = RefundIn(
        reference=req_text(d, "refund_reference", "data.refund_reference"),
        payment_reference=reference,
        amount=amount,
        reason=reason,
        occurred_at=occurred,
        hint=hint,
    )
    return WebhookEvent(message_id, event_type, (refund,))


def _method(d: dict[str, Any]) -> PaymentMethod:
    raw = d.get("method", "transfer")
    try:
        return PaymentMethod(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in PaymentMethod)
        raise PayloadError("data.method", f"must be one of {allowed}") from None


def _invoices(d: dict[str, Any]) -> tuple[str, ...]:
    return id_list(d.get("invoice_ids"), "data.invoice_ids")


def _failed(
    d: dict[str, Any], reference: str, amount: Any, occurred: datetime, hint: ClientHint
) -> PaymentFailedIn:
    code = text(d, "failure_code", "data.failure_code", required=False)
    kind, retry = declines.classify(code)
    if d.get("failure_kind") is not None:
        try:
            kind = FailureKind(d["failure_kind"])
        except ValueError:
            raise PayloadError("data.failure_kind", "must be hard or soft") from None
        retry = kind is FailureKind.SOFT
    if d.get("retry_possible") is not None:
        if not isinstance(d["retry_possible"], bool):
            raise PayloadError("data.retry_possible", "must be a boolean")
        retry = d["retry_possible"]
    return PaymentFailedIn(
        reference=reference,
        amount=amount,
        method=_method(d),
        invoice_ids=_invoices(d),
        decline_code=code,
        failure_kind=kind,
        retry_possible=retry,
        occurred_at=occurred,
        hint=hint,
    )
