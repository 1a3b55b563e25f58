from __future__ import annotations

from datetime import date

import pytest

from invoice_svc.domain.errors import DomainError
from invoice_svc.domain.totals import LineInput, discount_terms, due_date_for, price_lines, round_half_up_div


def test_tax_is_rounded_half_up_per_line() -> None:
    # 1 x 0.05 at 10% -> 0.005 -> 1 minor unit (half-up); 3 x 0.15 at 20% -> 0.09 exact
    totals = price_lines(
        [LineInput("a", 1, 5, 1000), LineInput("b", 3, 15, 2000), LineInput("c", 7, 333, 550)], "EUR"
    )
    assert [line.net for line in totals.lines] == [5, 45, 2331]
    # 2331 * 5.5% = 128.205 -> 128
    assert [line.tax for line in totals.lines] == [1, 9, 128]
    assert totals.subtotal == 2381
    assert totals.tax == 138
    assert totals.total == 2519


def test_half_rounds_up_not_to_even() -> None:
    assert round_half_up_div(25, 10) == 3
    assert round_half_up_div(15, 10) == 2
    assert round_half_up_div(14, 10) == 1
    # 50 at 5% = 2.5 -> 3 (half-even would give 2)
    assert price_lines([LineInput("x", 1, 50, 500)], "EUR").tax == 3


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (LineInput("x", 0, 100, 0), "lines[0].quantity"),
        (LineInput("x", -1, 100, 0), "lines[0].quantity"),
        (LineInput("x", 1, 0, 0), "lines[0].unit_price.amount_minor"),
        (LineInput("x", 1, -5, 0), "lines[0].unit_price.amount_minor"),
        (LineInput("x", 1, 5, 0, currency="USD"), "lines[0].unit_price.currency"),
    ],
)
def test_bad_lines_are_refused_with_their_field(line: LineInput, field: str) -> None:
    with pytest.raises(DomainError) as err:
        price_lines([line], "EUR")
    assert err.value.field == field


def test_due_date_defaults_to_terms_and_may_not_precede_issue() -> None:
    assert due_date_for(date(2026, 1, 31), None, 30) == date(2026, 3, 2)
    with pytest.raises(DomainError) as err:
        due_date_for(date(2026, 1, 31), date(2026, 1, 30), 30)
    assert err.value.field == "due_date"


def test_discount_terms_two_percent_ten_days() -> None:
    terms = discount_terms(123_45, date(2026, 1, 1), 200, 10)
    assert terms.until == date(2026, 1, 11)
    assert terms.amount == 247  # 246.9 -> 247
