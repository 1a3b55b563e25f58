"""The delivery state machine, retry schedule and failure classification (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from notify_svc.domain.delivery import (
    Outcome,
    Result,
    Status,
    after_attempt,
    backoff,
    classify_http_status,
    classify_smtp_reply,
    recover,
)

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SCHEDULE = (5.0, 300.0, 1800.0)


def _after(result: Result, attempts: int = 1) -> object:
    return after_attempt(
        result, attempts=attempts, schedule=SCHEDULE, jitter=0.0, now=NOW, rng=random.Random(1)
    )


def test_sent_is_final_and_reported() -> None:
    t = _after(Result(Outcome.SENT))
    assert t.status == Status.SENT and t.emit_sent and not t.emit_failed


def test_transient_failure_is_retried_on_the_schedule_then_given_up() -> None:
    first = _after(Result(Outcome.TRANSIENT), attempts=1)
    assert first.status == Status.PENDING and first.next_attempt_at == NOW + timedelta(seconds=5)
    third = _after(Result(Outcome.TRANSIENT), attempts=3)
    assert third.next_attempt_at == NOW + timedelta(seconds=1800)
    last = _after(Result(Outcome.TRANSIENT), attempts=4)
    assert last.status == Status.FAILED and last.emit_failed and not last.permanent


def test_550_is_permanent_and_suppresses_the_address() -> None:
    t = _after(Result(Outcome.PERMANENT, "550 no such user", code="550"))
    assert t.status == Status.FAILED and t.permanent and t.suppress_recipient


def test_552_is_permanent_but_not_a_bad_address() -> None:
    t = _after(Result(Outcome.PERMANENT, "552 too big", code="552"))
    assert t.permanent and not t.suppress_recipient


def test_410_disables_the_endpoint() -> None:
    t = _after(Result(Outcome.ENDPOINT_GONE, code="410"))
    assert t.status == Status.FAILED and t.permanent and t.disable_endpoint


def test_template_error_fails_without_blaming_the_contact() -> None:
    t = _after(Result(Outcome.TEMPLATE_ERROR))
    assert t.status == Status.FAILED and t.emit_failed and not t.permanent


def test_first_crash_resends_second_crash_stops() -> None:
    assert recover(0, NOW).status == Status.PENDING
    second = recover(1, NOW)
    assert second.status == Status.UNKNOWN and second.emit_failed and not second.permanent


def test_smtp_reply_classes() -> None:
    assert classify_smtp_reply(250) == Outcome.SENT
    assert classify_smtp_reply(421) == Outcome.TRANSIENT
    assert classify_smtp_reply(451) == Outcome.TRANSIENT
    assert classify_smtp_reply(550) == Outcome.PERMANENT


def test_http_status_classes() -> None:
    assert classify_http_status(204) == Outcome.SENT
    assert classify_http_status(410) == Outcome.ENDPOINT_GONE
    assert classify_http_status(429) == Outcome.TRANSIENT
    assert classify_http_status(503) == Outcome.TRANSIENT
    assert classify_http_status(400) == Outcome.PERMANENT
    assert classify_http_status(301) == Outcome.PERMANENT


@given(
    attempt=st.integers(min_value=1, max_value=8),
    jitter=st.floats(min_value=0, max_value=1),
    seed=st.integers(),
)
def test_backoff_stays_within_the_jitter_band(attempt: int, jitter: float, seed: int) -> None:
    schedule = (5, 300, 1800, 7200, 18000, 36000, 36000)
    delay = backoff(attempt, schedule, jitter, random.Random(seed))
    if attempt > len(schedule):
        assert delay is None
        return
    assert delay is not None
    base = schedule[attempt - 1]
    assert base * (1 - jitter) - 1e-6 <= delay.total_seconds() <= base * (1 + jitter) + 1e-6


def test_lost_reply_after_data_shares_the_single_resend_with_crashes() -> None:
    lost = Result(Outcome.UNCERTAIN, "connection lost during DATA", code="uncertain")
    first = after_attempt(lost, attempts=1, schedule=SCHEDULE, jitter=0.0, now=NOW, rng=random.Random(1))
    assert first.status == Status.PENDING and first.uses_recovery
    again = after_attempt(
        lost, attempts=2, schedule=SCHEDULE, jitter=0.0, now=NOW, rng=random.Random(1), recoveries=1
    )
    assert again.status == Status.UNKNOWN and again.emit_failed and not again.permanent
