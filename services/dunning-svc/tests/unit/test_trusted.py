"""The trusted builder gives exactly what pydantic's validation (and model_construct) give."""

from __future__ import annotations

from datetime import date

from ar_events.events import Contact, ContactRole, StatementLine
from ar_events.money import Money
from dunning_svc.domain.trusted import build


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
