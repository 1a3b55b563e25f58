"""Receivables report formulas, pure (the service README states the same formulas).

All figures are per currency: amounts in different currencies are never added.

- Aging as of D: an invoice's balance on D is the sum of its ledger entries dated on or before D; days past due
  = D - due date; buckets ``current`` (<= 0), ``1-30``, ``31-60``, ``61-90``, ``90+`` (> 90).
- DSO, countback method: take the receivables on D; walk back month by month (the month of D counts D.day days,
  earlier months their full length) subtracting each month's credit sales while they are covered, adding that
  month's days; the first month that is not covered adds ``days * remaining / sales``.
- Standard DSO over the period of P days ending on D: ``receivables(D) / sales(period) * P``.
- Best-possible DSO: ``current (not yet due) receivables(D) / sales(period) * P``.
- Average days delinquent (ADD): standard DSO - best-possible DSO.
- CEI (the standard single-period variant), in percent:
  ``(receivables(start) + sales(period) - receivables(D)) / (receivables(start) + sales(period) - current
  receivables(D)) * 100``, where start is the day before the period.
- Average payment delay of a client: amount-weighted ``sum(cash * (value date - due date)) / sum(cash)`` over the
  cash applied to its invoices (reversals subtract); negative means early on average.
- Pareto: clients with an overdue balance on D ranked by it; the top ``ceil(20% of them)`` and their share of
  the overdue total.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

BUCKETS: tuple[str, ...] = ("current", "1-30", "31-60", "61-90", "90+")
_BOUNDS: tuple[tuple[str, int], ...] = (("current", 0), ("1-30", 30), ("31-60", 60), ("61-90", 90))


def bucket_of(days_past_due: int) -> str:
    for name, upper in _BOUNDS:
        if days_past_due <= upper:
            return name
    return "90+"


def bucket_cutoffs(as_of: date) -> tuple[tuple[str, date], ...]:
    """Each bucket but the last with the earliest due date that still falls in it (for SQL ``CASE``)."""
    return tuple((name, as_of - timedelta(days=upper)) for name, upper in _BOUNDS)


@dataclass(frozen=True, slots=True)
class Period:
    start: date  # inclusive
    end: date  # inclusive
    days: int


def month_periods(as_of: date, months: int) -> list[Period]:
    """The month of ``as_of`` up to that day, then ``months - 1`` full calendar months before it, newest first."""
    periods = [Period(as_of.replace(day=1), as_of, as_of.day)]
    y, m = as_of.year, as_of.month
    for _ in range(months - 1):
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        last = calendar.monthrange(y, m)[1]
        periods.append(Period(date(y, m, 1), date(y, m, last), last))
    return periods


def dso_countback(receivables: int, sales_newest_first: Sequence[tuple[int, int]]) -> float:
    """Days of sales the receivables represent, counting back through ``(days, sales)`` periods."""
    remaining = receivables
    days = 0.0
    if remaining <= 0:
        return 0.0
    for period_days, sales in sales_newest_first:
        if sales <= 0:
            days += period_days
            continue
        if remaining > sales:
            remaining -= sales
            days += period_days
        else:
            return days + period_days * remaining / sales
    return days


def ratio_days(amount: int, sales: int, days: int) -> float | None:
    """``amount / sales * days``; None when there were no sales."""
    return None if sales <= 0 else amount * days / sales


def cei(begin: int, sales: int, end: int, end_current: int) -> float | None:
    """Collection effectiveness index in percent; None when nothing was collectible."""
    denominator = begin + sales - end_current
    if denominator <= 0:
        return None
    return (begin + sales - end) * 100 / denominator


def weighted_delay(rows: Iterable[tuple[int, int]]) -> float | None:
    """Amount-weighted average of ``days`` over ``(amount, days)`` rows; None when no amount."""
    total = 0
    weighted = 0
    for amount, days in rows:
        total += amount
        weighted += amount * days
    return None if total <= 0 else weighted / total


@dataclass(frozen=True, slots=True)
class ParetoView:
    clients_with_overdue: int
    top_count: int
    top_overdue: int
    total_overdue: int
    top_share: float | None  # 0..1
    top_clients: tuple[tuple[str, int], ...]


def pareto(overdue_by_client: Mapping[str, int], fraction: float = 0.2) -> ParetoView:
    """Share of the overdue balance held by the top ``fraction`` of the clients that have one."""
    ranked = sorted(((c, a) for c, a in overdue_by_client.items() if a > 0), key=lambda ca: (-ca[1], ca[0]))
    n = len(ranked)
    k = math.ceil(n * fraction) if n else 0
    top = tuple(ranked[:k])
    top_total = sum(a for _, a in top)
    total = sum(a for _, a in ranked)
    return ParetoView(
        clients_with_overdue=n,
        top_count=k,
        top_overdue=top_total,
        total_overdue=total,
        top_share=None if total == 0 else top_total / total,
        top_clients=top,
    )
