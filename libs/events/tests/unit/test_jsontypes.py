"""JSON's own types only: the lax coercions pydantic makes in Python mode are refused with a reason."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from ar_events.jsontypes import IsoAwareDateTime, IsoDate, JsonBool, JsonInt
from ar_events.money import Money

pytestmark = pytest.mark.unit


class Body(BaseModel):
    n: JsonInt = 0
    flag: JsonBool = False
    day: IsoDate | None = None
    at: IsoAwareDateTime | None = None


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", "2"), ("n", 2.5), ("n", True), ("flag", "true"), ("flag", 1), ("day", 0), ("day", "0"),
     ("day", "20260316"), ("day", "2026-03-16T00:00:00"), ("at", 1767225600), ("at", "2026-03-16"),
     ("at", "2026-03-16T09:30:00")],
)  # fmt: skip
def test_lax_values_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        Body.model_validate({field: value})
    assert err.value.errors()[0]["loc"] == (field,)


def test_json_types_pass_in_python_and_json_mode() -> None:
    raw = {"n": 2, "flag": True, "day": "2026-03-16", "at": "2026-03-16T09:30:00Z"}
    expected = Body(n=2, flag=True, day=date(2026, 3, 16), at=datetime(2026, 3, 16, 9, 30, tzinfo=UTC))
    assert Body.model_validate(raw) == expected
    assert Body.model_validate_json(Body.model_validate(raw).model_dump_json()) == expected
    assert Body(day=date(2026, 3, 16)).day == date(2026, 3, 16)
    # JSON Schema counts 2.0 as an integer: so do we
    assert Body.model_validate_json('{"n": 2.0}').n == 2
    assert Money.model_validate_json('{"amount_minor": 605.0, "currency": "EUR"}').amount_minor == 605


@pytest.mark.parametrize("value", ["100", True, 1.5])
def test_money_amounts_are_integers_only(value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        Money.model_validate({"amount_minor": value, "currency": "EUR"})
    assert err.value.errors()[0]["loc"] == ("amount_minor",)
    assert "integer" in err.value.errors()[0]["msg"]


def test_money_takes_an_integral_decimal_as_sql_sums_return_it() -> None:
    assert Money(amount_minor=Decimal(1250), currency="EUR").amount_minor == 1250  # type: ignore[arg-type]
