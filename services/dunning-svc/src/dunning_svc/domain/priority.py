"""Manual task priority: overdue amount, age and client risk (formula in the service README)."""

from __future__ import annotations

import math

from ar_events.events import ClientProfile
from ar_events.money import CURRENCY_EXPONENTS

RISK_TAGS = frozenset({"high_risk", "high-risk", "risky"})


def client_risk(profile: ClientProfile | None, avg_payment_delay: float | None) -> int:
    """0 low, 1 medium, 2 high: segment/tag ``high_risk`` or paying 30+ days late on average is high."""
    delay = avg_payment_delay or 0.0
    if profile is not None and (profile.segment in RISK_TAGS or RISK_TAGS.intersection(profile.tags)):
        return 2
    if delay >= 30:
        return 2
    if delay >= 10:
        return 1
    return 0


def task_priority(overdue: dict[str, int], age_days: int, risk: int) -> int:
    """priority = round(20 * log10(1 + overdue in major units, all currencies summed nominally)
    + 0.5 * min(age of the carrying invoice in days, 180) + 25 * risk); higher comes first."""
    major = sum(amount / (10 ** CURRENCY_EXPONENTS.get(cur, 2)) for cur, amount in overdue.items())
    score = 20 * math.log10(1 + max(major, 0.0)) + 0.5 * min(max(age_days, 0), 180) + 25 * risk
    return max(0, round(score))
