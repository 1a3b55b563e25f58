"""Webhook signature verification: the Stripe scheme and the Standard Webhooks scheme.

Pure functions over the raw request bytes, the headers, the active secrets and ``now``; no I/O. Both schemes
sign a timestamp with the body, so a captured request cannot be replayed outside the tolerance window, and the
processor event id (deduplicated by the repository) stops replays inside it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

#: Both schemes accept timestamps this many seconds in the past or the future.
DEFAULT_TOLERANCE_S = 300
STANDARD_SECRET_PREFIX = "whsec_"
_MAX_HEADER = 8192
_MAX_SIGNATURES = 32


class RejectReason(StrEnum):
    """Why a webhook was refused; also the label of the rejection metric."""

    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    STALE_TIMESTAMP = "stale_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_SIGNATURE = "bad_signature"
    NO_ACTIVE_SECRET = "no_active_secret"


class SignatureError(Exception):
    """The request is not authentic (401) or its signature headers are unreadable (400)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    @property
    def status(self) -> int:
        return 400 if self.reason in (RejectReason.MISSING_HEADER, RejectReason.MALFORMED_HEADER) else 401


@dataclass(frozen=True, slots=True)
class Verified:
    """A request that passed verification: its signed timestamp and, for Standard Webhooks, its message id."""

    timestamp: int
    message_id: str | None = None


def _check_time(ts: int, now: datetime, tolerance_s: int) -> None:
    now_s = int(now.timestamp())
    if ts < now_s - tolerance_s:
        raise SignatureError(RejectReason.STALE_TIMESTAMP, f"timestamp is more than {tolerance_s} s old")
    if ts > now_s + tolerance_s:
        raise SignatureError(RejectReason.FUTURE_TIMESTAMP, f"timestamp is more than {tolerance_s} s ahead")


def _any_match(expected: Sequence[bytes], presented: Sequence[bytes]) -> bool:
    # Compare every pair without short-circuit so the time taken does not tell which secret matched.
    ok = False
    for mac in expected:
        for sig in presented:
            ok |= hmac.compare_digest(mac, sig)
    return ok


# --------------------------------------------------------------------------------------------------
# Stripe: Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]; HMAC-SHA256(secret, "<t>.<body>")
# --------------------------------------------------------------------------------------------------


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    """The hex v1 signature Stripe computes: the secret string (``whsec_...`` included) is the key."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def parse_stripe_header(header: str | None) -> tuple[int, list[bytes]]:
    """``(t, [v1 signatures as bytes])`` from a Stripe-Signature header; other schemes are ignored."""
    if not header:
        raise SignatureError(RejectReason.MISSING_HEADER, "Stripe-Signature header is missing")
    if len(header) > _MAX_HEADER:
        raise SignatureError(RejectReason.MALFORMED_HEADER, "Stripe-Signature header is too long")
    timestamp: int | None = None
    sigs: list[bytes] = []
    saw_v1 = False
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not value.isdigit() or len(value) > 12:
                raise SignatureError(RejectReason.MALFORMED_HEADER, "Stripe-Signature t= is not a unix time")
            timestamp = int(value)
        elif key == "v1" and len(sigs) < _MAX_SIGNATURES:
            saw_v1 = True
            try:
                sigs.append(bytes.fromhex(value))
            except ValueError:
                continue  # an unreadable v1 simply cannot match
    if timestamp is None:
        raise SignatureError(RejectReason.MALFORMED_HEADER, "Stripe-Signature has no t= timestamp")
    if not saw_v1:
        raise SignatureError(RejectReason.MALFORMED_HEADER, "Stripe-Signature has no v1= signature")
    return timestamp, sigs


def verify_stripe(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    now: datetime,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> Verified:
    """Accept when any v1 signature matches any active secret and t is within the tolerance; else raise."""
    timestamp, sigs = parse_stripe_header(header)
    if not secrets:
        raise SignatureError(RejectReason.NO_ACTIVE_SECRET, "the account has no active signing secret")
    _check_time(timestamp, now, tolerance_s)
    expected = [bytes.fromhex(stripe_signature(body, s, timestamp)) for s in secrets]
    if not _any_match(expected, sigs):
        raise SignatureError(RejectReason.BAD_SIGNATURE, "no signature matches an active secret")
    return Verified(timestamp=timestamp)


def sign_stripe(body: bytes, secret: str, timestamp: int) -> str:
    """A Stripe-Signature header value (tests, benchmarks and the demo use it to act as the processor)."""
    return f"t={timestamp},v1={stripe_signature(body, secret, timestamp)}"


# --------------------------------------------------------------------------------------------------
# Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature: "v1,<b64> v1,<b64>"
# --------------------------------------------------------------------------------------------------


def standard_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; raises ValueError for anything else."""
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with whsec_")
    raw = secret[len(STANDARD_SECRET_PREFIX) :]
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ must be base64") from None
    if len(key) < 16:
        raise ValueError("the secret must hold at least 16 bytes")
    return key


def standard_signature(body: bytes, key: bytes, message_id: str, timestamp: int) -> bytes:
    return hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now: datetime,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> Verified:
    """Verify a Standard Webhooks request; ``headers`` keys must be lower case."""
    msg_id = headers.get("webhook-id")
    ts_raw = headers.get("webhook-timestamp")
    sig_raw = headers.get("webhook-signature")
    if not msg_id or not ts_raw or not sig_raw:
        raise SignatureError(
            RejectReason.MISSING_HEADER, "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    if len(msg_id) > 256 or len(sig_raw) > _MAX_HEADER:
        raise SignatureError(RejectReason.MALFORMED_HEADER, "webhook headers are too long")
    if not ts_raw.isdigit() or len(ts_raw) > 12:
        raise SignatureError(RejectReason.MALFORMED_HEADER, "webhook-timestamp is not a unix time")
    timestamp = int(ts_raw)
    sigs: list[bytes] = []
    saw_v1 = False
    for entry in sig_raw.split(" ")[:_MAX_SIGNATURES]:
        version, sep, value = entry.partition(",")
        if not sep or version != "v1":
            continue
        saw_v1 = True
        try:
            sigs.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not saw_v1:
        raise SignatureError(RejectReason.MALFORMED_HEADER, "webhook-signature has no v1 signature")
    keys: list[bytes] = []
    for secret in secrets:
        try:
            keys.append(standard_key(secret))
        except ValueError:
            continue
    if not keys:
        raise SignatureError(RejectReason.NO_ACTIVE_SECRET, "the account has no active signing secret")
    _check_time(timestamp, now, tolerance_s)
    expected = [standard_signature(body, k, msg_id, timestamp) for k in keys]
    if not _any_match(expected, sigs):
        raise SignatureError(RejectReason.BAD_SIGNATURE, "no signature matches an active secret")
    return Verified(timestamp=timestamp, message_id=msg_id)


def sign_standard(body: bytes, secret: str, message_id: str, timestamp: int) -> str:
    """A webhook-signature header value for one secret."""
    sig = standard_signature(body, standard_key(secret), message_id, timestamp)
    return "v1," + base64.b64encode(sig).decode()


def secret_fingerprint(secret: str) -> str:
    """A short, non-reversible label for a secret, safe to show in the admin API and logs."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]
