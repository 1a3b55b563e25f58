"""Signature verification, cross-checked against the stripe and standardwebhooks packages."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
from hypothesis import given
from hypothesis import strategies as st

from payment_svc.domain.signatures import (
    RejectReason,
    SignatureError,
    sign_standard,
    sign_stripe,
    verify_standard,
    verify_stripe,
)

STRIPE_SECRET = "whsec_test_0123456789abcdef"
STD_SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
BODY = b'{"id":"evt_1","type":"payment_intent.succeeded"}'


def _now() -> tuple[datetime, int]:
    ts = int(time.time())
    return datetime.fromtimestamp(ts, UTC), ts


def test_stripe_package_accepts_our_signer() -> None:
    _, ts = _now()
    header = sign_stripe(BODY, STRIPE_SECRET, ts)
    assert stripe.WebhookSignature.verify_header(BODY.decode(), header, STRIPE_SECRET, tolerance=300)
    event = stripe.Webhook.construct_event(BODY, header, STRIPE_SECRET)
    assert event["id"] == "evt_1"


def test_we_accept_what_stripe_package_signs() -> None:
    now, ts = _now()
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), STRIPE_SECRET, timestamp=ts)
    assert verify_stripe(BODY, header, [STRIPE_SECRET], now).timestamp == ts


def test_stripe_package_refuses_a_forgery_we_refuse() -> None:
    now, ts = _now()
    header = sign_stripe(BODY, "whsec_other_secret_value", ts)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY.decode(), header, STRIPE_SECRET)
    with pytest.raises(SignatureError) as err:
        verify_stripe(BODY, header, [STRIPE_SECRET], now)
    assert err.value.reason is RejectReason.BAD_SIGNATURE and err.value.status == 401


def test_stripe_any_v1_against_any_secret_passes() -> None:
    now, ts = _now()
    good = sign_stripe(BODY, "whsec_new_secret_xyz", ts).split(",")[1]
    header = f"t={ts},v1={'00' * 32},{good},v0=abc"
    assert verify_stripe(BODY, header, [STRIPE_SECRET, "whsec_new_secret_xyz"], now)


def test_stripe_tampered_body_is_refused() -> None:
    now, ts = _now()
    header = sign_stripe(BODY, STRIPE_SECRET, ts)
    with pytest.raises(SignatureError) as err:
        verify_stripe(BODY + b" ", header, [STRIPE_SECRET], now)
    assert err.value.reason is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(-301, RejectReason.STALE_TIMESTAMP), (301, RejectReason.FUTURE_TIMESTAMP)],
)
def test_stripe_timestamp_outside_300s_is_refused(offset: int, reason: RejectReason) -> None:
    now, ts = _now()
    header = sign_stripe(BODY, STRIPE_SECRET, ts + offset)
    with pytest.raises(SignatureError) as err:
        verify_stripe(BODY, header, [STRIPE_SECRET], now)
    assert err.value.reason is reason


@pytest.mark.parametrize("offset", [-300, 300, 0])
def test_stripe_timestamp_at_the_edge_passes(offset: int) -> None:
    now, ts = _now()
    assert verify_stripe(BODY, sign_stripe(BODY, STRIPE_SECRET, ts + offset), [STRIPE_SECRET], now)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, RejectReason.MISSING_HEADER),
        ("", RejectReason.MISSING_HEADER),
        ("v1=abcd", RejectReason.MALFORMED_HEADER),
        ("t=abc,v1=abcd", RejectReason.MALFORMED_HEADER),
        ("t=123", RejectReason.MALFORMED_HEADER),
        ("garbage", RejectReason.MALFORMED_HEADER),
    ],
)
def test_stripe_malformed_header_is_a_400(header: str | None, reason: RejectReason) -> None:
    now, _ = _now()
    with pytest.raises(SignatureError) as err:
        verify_stripe(BODY, header, [STRIPE_SECRET], now)
    assert err.value.reason is reason and err.value.status == 400


def test_no_active_secret_refuses() -> None:
    now, ts = _now()
    with pytest.raises(SignatureError) as err:
        verify_stripe(BODY, sign_stripe(BODY, STRIPE_SECRET, ts), [], now)
    assert err.value.reason is RejectReason.NO_ACTIVE_SECRET


def _std_headers(body: bytes, secret: str, msg_id: str = "msg_1", ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = standardwebhooks.Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_we_accept_what_standardwebhooks_signs() -> None:
    now, ts = _now()
    verified = verify_standard(BODY, _std_headers(BODY, STD_SECRET, ts=ts), [STD_SECRET], now)
    assert verified.message_id == "msg_1"


def test_standardwebhooks_accepts_our_signer() -> None:
    _, ts = _now()
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard(BODY, STD_SECRET, "m", ts),
    }
    assert standardwebhooks.Webhook(STD_SECRET).verify(BODY, headers)["id"] == "evt_1"


def test_standard_rotation_several_signatures_and_secrets() -> None:
    now, ts = _now()
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    headers = _std_headers(BODY, new, ts=ts)
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    assert verify_standard(BODY, headers, [STD_SECRET, new], now)
    with pytest.raises(SignatureError):
        verify_standard(BODY, headers, [STD_SECRET], now)


def test_standard_message_id_is_signed() -> None:
    now, ts = _now()
    headers = _std_headers(BODY, STD_SECRET, ts=ts)
    headers["webhook-id"] = "msg_2"
    with pytest.raises(SignatureError) as err:
        verify_standard(BODY, headers, [STD_SECRET], now)
    assert err.value.reason is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize("offset", [-301, 301])
def test_standard_stale_or_future_is_refused(offset: int) -> None:
    now, ts = _now()
    with pytest.raises(SignatureError) as err:
        verify_standard(BODY, _std_headers(BODY, STD_SECRET, ts=ts + offset), [STD_SECRET], now)
    assert err.value.reason in (RejectReason.STALE_TIMESTAMP, RejectReason.FUTURE_TIMESTAMP)


def test_standard_missing_headers_is_a_400() -> None:
    now, _ = _now()
    with pytest.raises(SignatureError) as err:
        verify_standard(BODY, {"webhook-id": "x"}, [STD_SECRET], now)
    assert err.value.status == 400


@given(body=st.binary(max_size=200), secret=st.text(min_size=8, max_size=40), ts=st.integers(0, 2**32))
def test_stripe_round_trip_property(body: bytes, secret: str, ts: int) -> None:
    now = datetime.fromtimestamp(ts, UTC)
    assert verify_stripe(body, sign_stripe(body, secret, ts), [secret], now).timestamp == ts


@given(body=st.binary(max_size=200), flip=st.integers(0, 199))
def test_stripe_any_changed_byte_is_refused(body: bytes, flip: int) -> None:
    if not body:
        body = b"x"
    i = flip % len(body)
    changed = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    now, ts = _now()
    with pytest.raises(SignatureError):
        verify_stripe(changed, sign_stripe(body, STRIPE_SECRET, ts), [STRIPE_SECRET], now)
