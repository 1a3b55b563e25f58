"""The trusted builder gives exactly what pydantic's validation (and model_construct) give."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from ar_events.envelope import decode, encode, new_event
from ar_events.events import (
    Contact,
    ContactRole,
    DunningResolved,
    DunningState,
    ResolutionReason,
    StatementLine,
)
from ar_events.money import Money
from dunning_svc.casework import SOURCE, _envelope
from dunning_svc.domain import DunningCase
from dunning_svc.domain.model import evolve
from dunning_svc.domain.trusted import build, maker


def test_full_build_equals_validated_model_and_serialises_the_same() -> None:
    values = {"invoice_id": "inv_1", "number": "F-1", "issue_date": date(2026, 2, 1), "due_date": date(2026, 3, 1),
              "amount_due": Money(amount_minor=1250, currency="EUR"), "total": None, "days_overdue": 9,
              "disputed": False}  # fmt: skip
    built = build(StatementLine, **values)
    validated = StatementLine.model_validate(values)
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_fields_set == validated.model_fields_set


def test_missing_fields_fall_back_to_model_construct_with_defaults() -> None:
    built = build(Contact, name="Paul", email="paul@example.com")
    assert built.role is ContactRole.BILLING
    assert built.phone is None
    assert built == Contact(name="Paul", email="paul@example.com")


def test_maker_equals_validated_model_and_rejects_a_missing_or_unknown_field() -> None:
    make = maker(Money)
    built = make(amount_minor=1250, currency="EUR")
    validated = Money(amount_minor=1250, currency="EUR")
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_fields_set == validated.model_fields_set
    with pytest.raises(TypeError):
        make(amount_minor=1)
    with pytest.raises(TypeError):
        make(amount_minor=1, currency="EUR", extra=2)


def test_scheduler_envelope_is_the_record_new_event_gives() -> None:
    payload = DunningResolved(client_id="cli_1", case_id="case_1", cycle=1, reason=ResolutionReason.PAID,
                              previous_state=DunningState.REMINDING, was_in_collections=False,
                              resolved_at=datetime(2026, 3, 16, 10, tzinfo=UTC))  # fmt: skip
    now = datetime(2026, 3, 16, 11, tzinfo=UTC)
    fast = _envelope(payload, now, None)
    slow = new_event(payload, source=SOURCE, time=now, event_id=fast.id)
    assert encode(fast) == encode(slow)
    cause = new_event(payload, source="x", time=now, correlation_id="corr-1")
    fast = _envelope(payload, now, cause)
    slow = new_event(payload, source=SOURCE, time=now, caused_by=cause, event_id=fast.id)
    assert encode(fast) == encode(slow)
    assert decode(encode(fast)) == decode(encode(slow))


def test_case_evolve_is_dataclasses_replace() -> None:
    case = DunningCase.new("cli_1")
    assert evolve(case, level=3, state=DunningState.REMINDING) == replace(
        case, level=3, state=DunningState.REMINDING
    )
    assert evolve(case) == case
    with pytest.raises(TypeError):
        evolve(case, no_such_field=1)
