"""Invoice totals in integer minor units.

Rounding (stated): tax is computed and rounded **per line, half-up** (ties away from zero; every amount here is
positive) to the currency's minor unit: ``tax = floor((net * rate_bp + 5000) / 10000)``. Line net is exact
(``quantity * unit_price``). Subtotal and tax are sums of the line figures, so the invoice total equals the sum of
its printed lines. The early-payment discount is ``round_half_up(total * rate_bp / 10000)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from invoice_svc.domain.errors import invalid

BP = 10_000
#: Largest invoice total accepted (fits comfortably in a signed 64-bit column with room for sums).
MAX_TOTAL = 10**15


def round_half_up_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-up, for numerator >= 0 and denominator > 0."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("round_half_up_div takes a non-negative numerator and a positive denominator")
    return (2 * numerator + denominator) // (2 * denominator)


def apply_bp(amount: int, rate_bp: int) -> int:
    """amount * rate_bp / 10000, rounded half-up to the minor unit."""
    return round_half_up_div(amount * rate_bp, BP)


@dataclass(frozen=True, slots=True)
class LineInput:
    description: str
    quantity: int
    unit_price_minor: int
    tax_rate_bp: int
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class PricedLine:
    description: str
    quantity: int
    unit_price_minor: int
    tax_rate_bp: int
    net: int
    tax: int


@dataclass(frozen=True, slots=True)
class Totals:
    lines: tuple[PricedLine, ...]
    subtotal: int
    tax: int
    total: int


@dataclass(frozen=True, slots=True)
class DiscountTerms:
    """Early-payment discount: ``rate_bp`` off when paid in full on or before ``until``."""

    rate_bp: int
    days: int
    until: date
    amount: int


def price_lines(lines: Sequence[LineInput], currency: str) -> Totals:
    """Validate and price the lines of an invoice in ``currency``."""
    if not lines:
        raise invalid("lines", "an invoice needs at least one line")
    priced: list[PricedLine] = []
    for i, line in enumerate(lines):
        if line.quantity <= 0:
            raise invalid(f"lines[{i}].quantity", "must be greater than zero")
        if line.unit_price_minor <= 0:
            raise invalid(f"lines[{i}].unit_price.amount_minor", "must be greater than zero")
        if not 0 <= line.tax_rate_bp <= BP:
            raise invalid(f"lines[{i}].tax_rate_bp", "must be between 0 and 10000 basis points")
        if line.currency is not None and line.currency != currency:
            raise invalid(
                f"lines[{i}].unit_price.currency",
                f"line currency {line.currency} differs from invoice currency {currency}",
            )
        net = line.quantity * line.unit_price_minor
        priced.append(
            PricedLine(
                description=line.description,
                quantity=line.quantity,
                unit_price_minor=line.unit_price_minor,
                tax_rate_bp=line.tax_rate_bp,
                net=net,
                tax=apply_bp(net, line.tax_rate_bp),
            )
        )
    subtotal = sum(p.net for p in priced)
    tax = sum(p.tax for p in priced)
    if subtotal + tax > MAX_TOTAL:
        raise invalid("lines", f"the invoice total exceeds the maximum of {MAX_TOTAL} minor units")
    return Totals(lines=tuple(priced), subtotal=subtotal, tax=tax, total=subtotal + tax)


def due_date_for(issue_date: date, due_date: date | None, payment_terms_days: int) -> date:
    """The explicit due date, or the issue date plus the client's terms; never before the issue date."""
    due = due_date if due_date is not None else issue_date + timedelta(days=payment_terms_days)
    if due < issue_date:
        raise invalid(
            "due_date", f"due date {due.isoformat()} is before the issue date {issue_date.isoformat()}"
        )
    return due


def discount_terms(total: int, issue_date: date, rate_bp: int, days: int) -> DiscountTerms:
    """Early-payment discount terms; ``until`` is the last day (inclusive) that still earns it."""
    if not 0 < rate_bp < BP:
        raise invalid("early_payment_discount.rate_bp", "must be between 1 and 9999 basis points")
    if not 0 < days <= 365:
        raise invalid("early_payment_discount.days", "must be between 1 and 365")
    return DiscountTerms(
        rate_bp=rate_bp, days=days, until=issue_date + timedelta(days=days), amount=apply_bp(total, rate_bp)
    )
