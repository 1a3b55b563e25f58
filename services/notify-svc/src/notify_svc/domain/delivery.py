"""How a delivery attempt's outcome moves a notification, and how rows left in ``sending`` are resolved.

States::

    pending --claim--> sending --250/2xx--> sent
       ^                  |  --transient--> pending (next_attempt_at = backoff) ... --> failed (attempts used up)
       |                  |  --permanent / template error / suppressed / 410--> failed
       +--- recover ------+  (lease expired: the process died mid-send; first time only, else -> unknown)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Outcome(StrEnum):
    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    TEMPLATE_ERROR = "template_error"
    SUPPRESSED = "suppressed"
    ENDPOINT_GONE = "endpoint_gone"
    UNCERTAIN = "uncertain"  # the connection broke after the message was handed over, before the reply
    CRASHED = "crashed"


#: Outcomes that mean the address or endpoint is wrong: dunning opens a wrong-contact task.
CONTACT_FAULTS = frozenset({Outcome.PERMANENT, Outcome.SUPPRESSED, Outcome.ENDPOINT_GONE})


#: SMTP replies that say the mailbox itself is bad (RFC 5321): the address goes on the suppression list.
BOUNCE_CODES = frozenset({"550", "551", "553"})


@dataclass(frozen=True, slots=True)
class Result:
    """What one delivery attempt produced."""

    outcome: Outcome
    detail: str = ""
    code: str | None = None  # SMTP reply code or HTTP status
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    status: Status
    next_attempt_at: datetime | None = None
    emit_sent: bool = False
    emit_failed: bool = False
    permanent: bool = False
    suppress_recipient: bool = False
    disable_endpoint: bool = False
    uses_recovery: bool = False  # spends the one resend allowed when delivery may already have happened


def backoff(attempt: int, schedule: Sequence[float], jitter: float, rng: random.Random) -> timedelta | None:
    """Delay before retry number ``attempt`` (1 = first retry), or None when the schedule is used up."""
    if attempt < 1 or attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    spread = base * jitter
    return timedelta(seconds=max(0.0, base + rng.uniform(-spread, spread)))


def after_attempt(
    result: Result,
    *,
    attempts: int,
    schedule: Sequence[float],
    jitter: float,
    now: datetime,
    rng: random.Random,
    recoveries: int = 0,
) -> Transition:
    """Where a notification goes after attempt number ``attempts`` ended with ``result``."""
    if result.outcome == Outcome.UNCERTAIN:
        return _uncertain(recoveries, now)
    if result.outcome == Outcome.SENT:
        return Transition(Status.SENT, emit_sent=True)
    if result.outcome == Outcome.TRANSIENT:
        delay = backoff(attempts, schedule, jitter, rng)
        if delay is None:
            return Transition(Status.FAILED, emit_failed=True, permanent=False)
        return Transition(Status.PENDING, next_attempt_at=now + delay)
    if result.outcome == Outcome.TEMPLATE_ERROR:
        return Transition(Status.FAILED, emit_failed=True, permanent=False)
    if result.outcome == Outcome.ENDPOINT_GONE:
        return Transition(Status.FAILED, emit_failed=True, permanent=True, disable_endpoint=True)
    if result.outcome == Outcome.PERMANENT:
        bounced = result.code in BOUNCE_CODES
        return Transition(Status.FAILED, emit_failed=True, permanent=True, suppress_recipient=bounced)
    if result.outcome == Outcome.SUPPRESSED:
        return Transition(Status.FAILED, emit_failed=True, permanent=True)
    raise ValueError(f"not an attempt outcome: {result.outcome}")


def recover(recoveries: int, now: datetime) -> Transition:
    """A row found in ``sending`` after its lease: the sender died between claim and record.

    The message may or may not have reached the server. The first time, send again (same Message-ID):
    at most one duplicate. A second crash in the same window stops retrying: ``unknown``, reported as a
    non-permanent failure for a person to check and resend by hand.
    """
    return _uncertain(recoveries, now)


def _uncertain(recoveries: int, now: datetime) -> Transition:
    """Delivery may have happened: one resend per notification in total (crash or lost reply), then stop."""
    if recoveries == 0:
        return Transition(Status.PENDING, next_attempt_at=now, uses_recovery=True)
    return Transition(Status.UNKNOWN, emit_failed=True, permanent=False, uses_recovery=True)


def classify_smtp_reply(code: int) -> Outcome:
    """RFC 5321: 2xx accepted, 4xx try again later, 5xx do not repeat."""
    if 200 <= code < 300:
        return Outcome.SENT
    if 400 <= code < 500:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


def classify_http_status(status: int) -> Outcome:
    """Webhook replies: 2xx delivered; 410 endpoint gone; 408/429/5xx retry; other 3xx/4xx permanent."""
    if 200 <= status < 300:
        return Outcome.SENT
    if status == 410:
        return Outcome.ENDPOINT_GONE
    if status in (408, 425, 429) or status >= 500:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT
