"""Encode/decode of the envelope; every catalogued type round-trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ar_events.envelope import DecodeError, Envelope, UnknownEventType, decode, encode, new_event
from ar_events.events import ALL_TYPES, EVENT_TYPES, Payload, PaymentReceived, types_on
from ar_events.money import Money
from ar_events.topics import Topic

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _payment(amount: int = 1234, currency: str = "EUR") -> PaymentReceived:
    return PaymentReceived(
        client_id="cli_1",
        payment_id="pay_1",
        amount=Money(amount_minor=amount, currency=currency),
        method="card",  # type: ignore[arg-type]
        processor="stripe",
        received_at=NOW,
    )


def test_every_design_type_has_a_model_on_its_topic() -> None:
    expected = {
        Topic.INVOICE_EVENTS: 11,
        Topic.PAYMENT_EVENTS: 5,
        Topic.DUNNING_EVENTS: 13,
        Topic.DUNNING_COMMANDS: 6,
        Topic.NOTIFY_EVENTS: 2,
    }
    assert {t: len(types_on(t)) for t in Topic} == expected
    assert len(EVENT_TYPES) == len(ALL_TYPES)
    assert all(name.startswith("ar.") and name.endswith(".v1") for name in EVENT_TYPES)


def test_envelope_is_cloudevents_structured_json() -> None:
    env = new_event(_payment(), source="payment-svc", time=NOW)
    raw = json.loads(encode(env))
    assert raw["specversion"] == "1.0"
    assert raw["type"] == "ar.payment.received.v1"
    assert raw["subject"] == "cli_1"
    assert raw["source"] == "payment-svc"
    assert raw["time"] == "2026-03-02T09:30:00Z"
    assert raw["correlationid"] == raw["id"]
    assert raw["data"]["amount"] == {"amount_minor": 1234, "currency": "EUR"}


def test_correlation_follows_the_cause() -> None:
    cause = new_event(_payment(), source="payment-svc", time=NOW)
    effect = new_event(_payment(), source="invoice-svc", time=NOW, caused_by=cause)
    assert effect.correlationid == cause.correlationid
    assert effect.causationid == cause.id


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        new_event(_payment(), source="x", time=datetime(2026, 1, 1))


@given(
    amount=st.integers(min_value=1, max_value=10**15), currency=st.sampled_from(["EUR", "USD", "JPY", "BHD"])
)
def test_round_trip_keeps_money_exact(amount: int, currency: str) -> None:
    env = new_event(_payment(amount, currency), source="payment-svc", time=NOW)
    back = decode(encode(env))
    assert back == env
    assert isinstance(back.data, PaymentReceived)
    assert back.data.amount.amount_minor == amount


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (None, "tombstone"),
        (b'{"specversion": "0.3", "type": "ar.payment.received.v1"}', "specversion"),
        (b'{"specversion": "1.0"}', "no 'type'"),
    ],
)
def test_malformed_records_raise_a_typed_error_with_the_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        decode(value)
    assert not isinstance(info.value, UnknownEventType)


def test_invalid_payload_names_the_field() -> None:
    raw = json.loads(encode(new_event(_payment(), source="payment-svc", time=NOW)))
    raw["data"]["amount"]["currency"] = "XXY"
    with pytest.raises(DecodeError, match=r"data\.amount\.currency") as info:
        decode(json.dumps(raw).encode())
    assert info.value.event_type == "ar.payment.received.v1"


def test_float_money_is_refused() -> None:
    raw = json.loads(encode(new_event(_payment(), source="payment-svc", time=NOW)))
    raw["data"]["amount"]["amount_minor"] = 12.5
    with pytest.raises(DecodeError, match="amount_minor"):
        decode(json.dumps(raw).encode())


def test_subject_must_be_the_client() -> None:
    raw = json.loads(encode(new_event(_payment(), source="payment-svc", time=NOW)))
    raw["subject"] = "someone-else"
    with pytest.raises(DecodeError, match="subject"):
        decode(json.dumps(raw).encode())


def test_unknown_type_is_its_own_error() -> None:
    raw = json.loads(encode(new_event(_payment(), source="payment-svc", time=NOW)))
    raw["type"] = "ar.payment.teleported.v9"
    with pytest.raises(UnknownEventType):
        decode(json.dumps(raw).encode())


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = json.loads(encode(new_event(_payment(), source="payment-svc", time=NOW)))
    raw["data"]["added_in_v1_7"] = {"anything": True}
    raw["newextension"] = "x"
    assert decode(json.dumps(raw).encode()).data == _payment()


def _sample(cls: type[Payload]) -> dict[str, Any]:
    """A minimal valid payload for any type, built from its JSON schema."""
    from ar_events.samples import sample_payload

    return sample_payload(cls)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.TYPE)
def test_every_type_round_trips(cls: type[Payload]) -> None:
    payload = cls.model_validate(_sample(cls))
    env: Envelope[Any] = new_event(payload, source="test", time=NOW)
    back = decode(encode(env))
    assert back == env
    assert type(back.data) is cls
    assert back.data.model_dump() == payload.model_dump()


def test_a_nested_type_key_cannot_pick_the_wrong_model() -> None:
    env = new_event(_payment(), source="payment-svc", time=NOW)
    raw = json.loads(encode(env))
    raw["data"]["type"] = "ar.client.registered.v1"
    reordered = {"data": raw.pop("data"), **raw}  # the nested "type" now comes first in the bytes
    back = decode(json.dumps(reordered).encode())
    assert isinstance(back.data, PaymentReceived)
    assert back.data == env.data


def test_pretty_printed_records_from_other_tools_decode_too() -> None:
    env = new_event(_payment(), source="payment-svc", time=NOW)
    assert decode(json.dumps(json.loads(encode(env)), indent=2)) == env


def test_an_event_without_a_cause_takes_the_current_request_correlation_id() -> None:
    from ar_events.context import correlation_scope

    with correlation_scope("req-42"):
        inside = new_event(_payment(), source="payment-svc", time=NOW)
        caused = new_event(_payment(), source="invoice-svc", time=NOW, caused_by=inside)
    outside = new_event(_payment(), source="payment-svc", time=NOW)
    assert inside.correlationid == "req-42"
    assert caused.correlationid == "req-42"
    assert outside.correlationid == outside.id
