"""What is dunnable today: per-currency balances, minimums, disputes and the carrying invoice."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from dunning_svc.domain.model import OpenInvoice
from dunning_svc.domain.policy import Policy


@dataclass(frozen=True, slots=True)
class Exposure:
    """The client's position on one day under one policy."""

    #: overdue, undisputed amount per currency (every currency with something overdue)
    overdue: dict[str, int]
    #: overdue undisputed invoices in currencies at or above the policy minimum
    dunnable_overdue: tuple[OpenInvoice, ...]
    #: undisputed invoices within the policy's scope (overdue, plus due within the pre-due lead)
    #: in currencies at or above the minimum
    dunnable_in_scope: tuple[OpenInvoice, ...]
    #: the same as dunnable_in_scope but counting disputed invoices: tells "all disputed" from "all paid"
    in_scope_with_disputes: tuple[OpenInvoice, ...]
    #: ids of the in-scope invoices that are not overdue yet (the pre-due anchors)
    upcoming_ids: frozenset[str] = frozenset()
    #: the carrying invoice (see :func:`carrying_invoice`), computed once by :func:`exposure`
    anchor: OpenInvoice | None = None

    @property
    def has_overdue(self) -> bool:
        return bool(self.dunnable_overdue)

    @property
    def has_in_scope(self) -> bool:
        return bool(self.dunnable_in_scope)

    @property
    def only_disputed(self) -> bool:
        return not self.dunnable_in_scope and bool(self.in_scope_with_disputes)


def age(inv: OpenInvoice, today: date) -> int:
    """Days past due (1 on the first late day, negative before the due date)."""
    return (today - inv.due_date).days


def _above_minimum(
    invs: list[OpenInvoice], totals: dict[str, int], minimums: tuple[tuple[str, int], ...]
) -> tuple[OpenInvoice, ...]:
    """The invoices in currencies whose ``totals`` reach the policy minimum (unlisted currencies: any amount)."""
    if not invs:
        return ()
    if len(totals) == 1:  # the common case: one currency
        for cur, total in totals.items():
            return tuple(invs) if total >= _minimum(minimums, cur) else ()
    ok = {cur for cur, total in totals.items() if total >= _minimum(minimums, cur)}
    if len(ok) == len(totals):
        return tuple(invs)
    return tuple(inv for inv in invs if inv.currency in ok)


def _minimum(minimums: tuple[tuple[str, int], ...], currency: str) -> int:
    """``max(1, dict(minimums).get(currency, 1))`` without building the dict (the last entry wins, as there)."""
    found = 1
    for cur, amount in minimums:
        if cur == currency:
            found = amount
    return max(1, found)


def exposure(
    invoices: Iterable[OpenInvoice], policy: Policy, today: date, local_disputes: frozenset[str] = frozenset()
) -> Exposure:
    """Split the open invoices into what may be dunned today, per currency and minimum."""
    scope_age = policy.scope_start_age  # <= 1: every overdue invoice is in scope
    in_scope: list[OpenInvoice] = []  # disputed or not
    undisputed: list[OpenInvoice] = []  # in scope
    overdue_undisputed: list[OpenInvoice] = []
    upcoming: list[str] = []
    # amount per currency of each of the three lists (overdue: of overdue_undisputed), in the same pass
    in_scope_totals: dict[str, int] = {}
    undisputed_totals: dict[str, int] = {}
    overdue: dict[str, int] = {}
    for inv in invoices:
        amount = inv.amount_due
        if amount <= 0:
            continue
        a = (today - inv.due_date).days
        if a < scope_age:
            continue
        cur = inv.currency
        in_scope.append(inv)
        in_scope_totals[cur] = in_scope_totals.get(cur, 0) + amount
        if inv.disputed or inv.invoice_id in local_disputes:
            continue
        undisputed.append(inv)
        undisputed_totals[cur] = undisputed_totals.get(cur, 0) + amount
        if a >= 1:
            overdue_undisputed.append(inv)
            overdue[cur] = overdue.get(cur, 0) + amount
        else:
            upcoming.append(inv.invoice_id)
    minimums = policy.min_balance
    dunnable_overdue = _above_minimum(overdue_undisputed, overdue, minimums)
    dunnable_in_scope = _above_minimum(undisputed, undisputed_totals, minimums)
    upcoming_ids = frozenset(upcoming) if upcoming else _NONE
    return Exposure(
        overdue=overdue,
        dunnable_overdue=dunnable_overdue,
        dunnable_in_scope=dunnable_in_scope,
        in_scope_with_disputes=_above_minimum(in_scope, in_scope_totals, minimums),
        upcoming_ids=upcoming_ids,
        anchor=_carrying(dunnable_overdue, dunnable_in_scope, upcoming_ids),
    )


_NONE: frozenset[str] = frozenset()


def carrying_invoice(exp: Exposure) -> OpenInvoice | None:
    """The anchor: the oldest unpaid overdue invoice (largest on a tie); before anything is overdue,
    the invoice with the earliest upcoming due date."""
    return exp.anchor


def _carrying(
    dunnable_overdue: tuple[OpenInvoice, ...],
    dunnable_in_scope: tuple[OpenInvoice, ...],
    upcoming: frozenset[str],
) -> OpenInvoice | None:
    pool = dunnable_overdue or tuple(i for i in dunnable_in_scope if i.invoice_id in upcoming)
    if not pool:
        return None
    if len(pool) == 1:
        return pool[0]
    return min(pool, key=lambda i: (i.due_date, -i.amount_due, i.invoice_id))


def entry_date(
    invoices: Iterable[OpenInvoice], policy: Policy, local_disputes: frozenset[str]
) -> date | None:
    """The earliest day on which some currency's undisputed balance enters the policy's scope at or
    above its minimum, and the first step could be due (a lower bound used to set the next wake-up)."""
    by_currency: dict[str, list[OpenInvoice]] = {}
    for inv in invoices:
        if inv.amount_due > 0 and not (inv.disputed or inv.invoice_id in local_disputes):
            by_currency.setdefault(inv.currency, []).append(inv)
    best: date | None = None
    for currency, invs in by_currency.items():
        invs.sort(key=lambda i: i.due_date)
        cumulative = 0
        for inv in invs:
            cumulative += inv.amount_due
            if cumulative >= policy.minimum(currency):
                entry = inv.due_date + timedelta(days=policy.scope_start_age)
                first = invs[0].due_date + timedelta(days=policy.first_at)
                day = max(entry, first)
                best = day if best is None else min(best, day)
                break
    return best
