from __future__ import annotations

from datetime import date

import pytest

from invoice_svc.domain.reports import (
    bucket_cutoffs,
    bucket_of,
    cei,
    dso_countback,
    month_periods,
    pareto,
    ratio_days,
    weighted_delay,
)


@pytest.mark.parametrize(
    ("days", "bucket"),
    [(-5, "current"), (0, "current"), (1, "1-30"), (30, "1-30"), (31, "31-60"), (60, "31-60"), (61, "61-90"),
     (90, "61-90"), (91, "90+"), (400, "90+")],
)  # fmt: skip
def test_buckets(days: int, bucket: str) -> None:
    assert bucket_of(days) == bucket


def test_bucket_cutoffs_are_due_dates() -> None:
    assert dict(bucket_cutoffs(date(2026, 3, 31))) == {
        "current": date(2026, 3, 31),
        "1-30": date(2026, 3, 1),
        "31-60": date(2026, 1, 30),
        "61-90": date(2025, 12, 31),
    }


def test_month_periods_count_the_partial_month() -> None:
    ps = month_periods(date(2026, 3, 10), 3)
    assert [(p.start, p.end, p.days) for p in ps] == [
        (date(2026, 3, 1), date(2026, 3, 10), 10),
        (date(2026, 2, 1), date(2026, 2, 28), 28),
        (date(2026, 1, 1), date(2026, 1, 31), 31),
    ]


def test_countback_by_hand() -> None:
    # AR 25,000; March (31 d) sales 10,000, Feb (28 d) 12,000, Jan (31 d) 6,000:
    # 31 + 28 + 31 * 3,000 / 6,000 = 74.5 days
    assert dso_countback(25_000, [(31, 10_000), (28, 12_000), (31, 6_000)]) == pytest.approx(74.5)
    assert dso_countback(5_000, [(31, 10_000)]) == pytest.approx(15.5)
    assert dso_countback(0, [(31, 10_000)]) == 0.0
    # a month without sales counts whole
    assert dso_countback(1_000, [(30, 0), (31, 2_000)]) == pytest.approx(45.5)


def test_standard_best_possible_and_add() -> None:
    dso = ratio_days(30_000, 90_000, 90)
    bpdso = ratio_days(20_000, 90_000, 90)
    assert (dso, bpdso) == (30.0, 20.0)
    assert ratio_days(1, 0, 90) is None


def test_cei_by_hand() -> None:
    # begin 50,000 + sales 100,000 - end 40,000 = 110,000 collected of (150,000 - current 30,000) collectible
    assert cei(50_000, 100_000, 40_000, 30_000) == pytest.approx(110_000 / 120_000 * 100)
    assert cei(0, 0, 0, 0) is None


def test_weighted_delay() -> None:
    assert weighted_delay([(100, 10), (300, -2)]) == pytest.approx((1000 - 600) / 400)
    assert weighted_delay([]) is None


def test_pareto_top_fifth() -> None:
    view = pareto({"a": 500, "b": 100, "c": 100, "d": 50, "e": 50, "f": 200, "z": 0})
    # 6 clients with overdue -> top ceil(1.2) = 2: a (500) + f (200) = 700 of 1,000
    assert view.clients_with_overdue == 6
    assert view.top_count == 2
    assert view.top_clients == (("a", 500), ("f", 200))
    assert view.top_share == pytest.approx(0.7)
    assert pareto({}).top_share is None
