"""Processor payloads to instructions: Stripe events and the generic Standard Webhooks payload."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ar_events.events import ChargebackOutcome, FailureKind, PaymentMethod
from payment_svc.domain import declines, standard, stripe
from payment_svc.domain.model import (
    ChargebackClosedIn,
    PayloadError,
    PaymentFailedIn,
    PaymentIn,
    RefundIn,
)
from payment_svc.domain.payments import payment_id_for


def _stripe(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {"id": "evt_1", "type": event_type, "created": 1_760_000_000, "data": {"object": obj}}
    ).encode()


PI = {"id": "pi_1", "amount": 500, "amount_received": 500, "currency": "usd", "metadata": {"client_id": "c1"}}


def test_payment_intent_succeeded_maps_amount_client_and_invoices() -> None:
    obj = {
        **PI,
        "metadata": {"client_id": "c1", "invoice_ids": "i1, i2,i1"},
        "payment_method_types": ["sepa_debit"],
    }
    [instr] = stripe.parse(_stripe("payment_intent.succeeded", obj)).instructions
    assert isinstance(instr, PaymentIn)
    assert (instr.amount.amount_minor, instr.amount.currency) == (500, "USD")
    assert instr.invoice_ids == ("i1", "i2") and instr.method is PaymentMethod.DIRECT_DEBIT
    assert instr.hint.client_id == "c1"


def test_single_invoice_id_and_customer_hint() -> None:
    obj = {**PI, "metadata": {"invoice_id": "i9"}, "customer": "cus_1"}
    [instr] = stripe.parse(_stripe("payment_intent.succeeded", obj)).instructions
    assert instr.invoice_ids == ("i9",) and instr.hint.client_id is None and instr.hint.customer_id == "cus_1"


@pytest.mark.parametrize(
    ("code", "kind", "retry"),
    [
        ("stolen_card", FailureKind.HARD, False),
        ("insufficient_funds", FailureKind.SOFT, True),
        (None, FailureKind.SOFT, True),
    ],
)
def test_payment_failed_classifies_declines(code: str | None, kind: FailureKind, retry: bool) -> None:
    obj = {**PI, "last_payment_error": {"decline_code": code} if code else {}}
    [instr] = stripe.parse(_stripe("payment_intent.payment_failed", obj)).instructions
    assert isinstance(instr, PaymentFailedIn)
    assert (instr.failure_kind, instr.retry_possible, instr.decline_code) == (kind, retry, code)


def test_refund_without_list_uses_the_running_total() -> None:
    charge = {"id": "ch_1", "amount_refunded": 300, "currency": "eur", "payment_intent": "pi_1"}
    [instr] = stripe.parse(_stripe("charge.refunded", charge)).instructions
    assert isinstance(instr, RefundIn) and instr.cumulative and instr.amount.amount_minor == 300
    assert instr.payment_reference == "pi_1"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("won", ChargebackOutcome.MERCHANT_WON),
        ("warning_closed", ChargebackOutcome.MERCHANT_WON),
        ("lost", ChargebackOutcome.CLIENT_WON),
    ],
)
def test_dispute_closed_outcome(status: str, outcome: ChargebackOutcome) -> None:
    dispute = {"id": "dp_1", "amount": 100, "currency": "eur", "charge": "ch_1", "status": status}
    [instr] = stripe.parse(_stripe("charge.dispute.closed", dispute)).instructions
    assert (
        isinstance(instr, ChargebackClosedIn)
        and instr.outcome is outcome
        and instr.payment_reference == "ch_1"
    )


def test_unknown_type_is_ignored_without_reading_the_object() -> None:
    event = stripe.parse(json.dumps({"id": "evt_2", "type": "invoice.created"}).encode())
    assert event.ignored and event.event_type == "invoice.created"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({**PI, "amount_received": 0, "amount": 0}, "data.object.amount"),
        ({**PI, "currency": "zzz"}, "data.object.currency"),
        ({**PI, "metadata": {"client_id": "a\x00b"}}, "data.object.metadata.client_id"),
        ({k: v for k, v in PI.items() if k != "id"}, "data.object.id"),
    ],
)
def test_bad_payloads_name_the_field(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as err:
        stripe.parse(_stripe("payment_intent.succeeded", obj))
    assert err.value.field == field


def test_generic_payload_received_failed_returned() -> None:
    base = {"payment_reference": "T1", "amount_minor": 10, "currency": "EUR", "client_id": "c1"}

    def doc(t: str, **d: Any) -> bytes:
        return json.dumps({"type": t, "timestamp": "2026-01-01T00:00:00Z", "data": {**base, **d}}).encode()

    [received] = standard.parse(doc("payment.received", invoice_ids="a,b"), "m1").instructions
    assert isinstance(received, PaymentIn) and received.method is PaymentMethod.TRANSFER
    assert received.invoice_ids == ("a", "b")
    [failed] = standard.parse(
        doc("payment.failed", failure_code="AC04", failure_kind="hard"), "m2"
    ).instructions
    assert isinstance(failed, PaymentFailedIn) and not failed.retry_possible
    [ret] = standard.parse(doc("payment.returned", refund_reference="R1"), "m3").instructions
    assert isinstance(ret, RefundIn) and ret.reason == "returned" and ret.payment_reference == "T1"
    with pytest.raises(PayloadError) as err:
        standard.parse(doc("payment.refunded"), "m4")
    assert err.value.field == "data.refund_reference"
    with pytest.raises(PayloadError):
        standard.parse(doc("payment.received", method="crypto"), "m5")


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_payload_error(body: bytes) -> None:
    for parse in (stripe.parse, lambda b: standard.parse(b, "m")):
        with contextlib.suppress(PayloadError):
            parse(body)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_object_inside_an_event_parses_or_raises_payload_error(obj: Any) -> None:
    for t in stripe.HANDLED_TYPES:
        with contextlib.suppress(PayloadError):
            stripe.parse(
                _stripe(t, obj)
                if isinstance(obj, dict)
                else json.dumps({"id": "e", "type": t, "created": 1, "data": {"object": obj}}).encode()
            )


def test_payment_ids_are_deterministic_per_account_and_reference() -> None:
    assert payment_id_for("stripe", "pi_1") == payment_id_for("stripe", "pi_1")
    assert payment_id_for("stripe", "pi_1") != payment_id_for("bank", "pi_1")
    assert declines.classify("EXPIRED_CARD")[0] is FailureKind.HARD
