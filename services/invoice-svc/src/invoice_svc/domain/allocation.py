"""Payment allocation, client credit, refunds and chargebacks: pure functions from state to a Decision.

Rules (the service README repeats them):
- A payment goes first to the open invoices it names (in the order named, same currency), then to the client's
  other open invoices in that currency, oldest due date first, then largest amount due (undisputed before
  disputed). What is left is client credit in the payment's currency, used by the next invoice issued.
- Early-payment discount: when a payment whose value date is on or before the discount's last day settles
  the invoice in full net of the discount, the discount is granted with it (recorded on the allocation).
- Undoing (refund, chargeback opened) takes the payment's unused credit first, then its allocations newest
  first; undoing any part of an allocation also takes back the discount granted with it. Undoing a whole
  payment therefore restores every invoice to exactly what it owed before.
- A chargeback the client wins keeps the reversal; one the merchant wins re-applies the amount to the invoices
  it reopened first (with their original value dates), then as a new payment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from invoice_svc.domain.model import Allocation, Invoice, InvoiceStatus, LedgerEntry, LedgerKind, Payment


@dataclass(frozen=True, slots=True)
class PaymentApplied:
    invoice: Invoice
    payment_id: str
    amount: int
    discount: int
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class InvoiceSettled:
    invoice: Invoice
    paid_at: datetime
    days_late: int


@dataclass(frozen=True, slots=True)
class InvoiceReopened:
    invoice: Invoice
    payment_id: str
    reason: str  # refund | chargeback


Fact = PaymentApplied | InvoiceSettled | InvoiceReopened


@dataclass(frozen=True, slots=True)
class Decision:
    invoices: tuple[Invoice, ...] = ()  # changed invoices, final state
    payments: tuple[Payment, ...] = ()  # changed payments, final state
    allocations: tuple[Allocation, ...] = ()  # new rows
    ledger: tuple[LedgerEntry, ...] = ()
    facts: tuple[Fact, ...] = ()


@dataclass
class _Work:
    """Mutable scratch state for one decision; frozen results come out of ``decision()``."""

    now: datetime
    invoices: dict[str, Invoice]
    payments: dict[str, Payment] = field(default_factory=dict)
    touched: dict[str, None] = field(default_factory=dict)
    touched_payments: dict[str, None] = field(default_factory=dict)
    allocations: list[Allocation] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)

    def put(self, inv: Invoice) -> None:
        self.invoices[inv.id] = inv
        self.touched[inv.id] = None

    def put_payment(self, p: Payment) -> None:
        self.payments[p.id] = p
        self.touched_payments[p.id] = None

    def decision(self) -> Decision:
        return Decision(
            invoices=tuple(self.invoices[i] for i in self.touched),
            payments=tuple(self.payments[p] for p in self.touched_payments),
            allocations=tuple(self.allocations),
            ledger=tuple(self.ledger),
            facts=tuple(self.facts),
        )


def auto_order(invoices: Iterable[Invoice]) -> list[Invoice]:
    """Oldest due date first, then largest amount due; disputed invoices after undisputed ones."""
    return sorted(invoices, key=lambda i: (i.disputed, i.due_date, -i.amount_due, i.issue_date, i.id))


def _discount_for(inv: Invoice, value_date: date, available: int) -> int:
    terms = inv.discount
    if terms is None or value_date > terms.until or inv.amount_due <= terms.amount:
        return 0
    return terms.amount if available >= inv.amount_due - terms.amount else 0


def _apply_cash(
    w: _Work,
    payment: Payment,
    order: Sequence[str],
    *,
    value_date: date,
    cause: str,
    paid_at: datetime,
    ledger_date: date | None = None,
    value_dates: Mapping[str, date] | None = None,
) -> Payment:
    """Spread the payment's unapplied cash over ``order``; returns the payment with ``allocated`` updated."""
    available = payment.unapplied
    seen: set[str] = set()
    for inv_id in order:
        if available <= 0:
            break
        if inv_id in seen or inv_id not in w.invoices:
            continue
        seen.add(inv_id)
        inv = w.invoices[inv_id]
        if not inv.is_open or inv.currency != payment.currency or inv.client_id != payment.client_id:
            continue
        vd = max((value_dates or {}).get(inv_id, value_date), inv.issue_date)
        disc = _discount_for(inv, vd, available)
        cash = min(available, inv.amount_due - disc)
        if cash <= 0:
            continue
        due_after = inv.amount_due - cash - disc
        settled = due_after == 0
        days_late = (vd - inv.due_date).days
        new_inv = replace(
            inv,
            amount_due=due_after,
            paid_amount=inv.paid_amount + cash + disc,
            status=InvoiceStatus.PAID if settled else inv.status,
            paid_at=paid_at if settled else inv.paid_at,
        )
        w.put(new_inv)
        w.allocations.append(
            Allocation(
                id=None,
                payment_id=payment.id,
                invoice_id=inv.id,
                client_id=inv.client_id,
                currency=inv.currency,
                amount=cash,
                discount=disc,
                value_date=vd,
                days_late=days_late,
                created_at=w.now,
                cause=cause,
            )
        )
        w.ledger.append(
            LedgerEntry(
                invoice_id=inv.id,
                client_id=inv.client_id,
                currency=inv.currency,
                due_date=inv.due_date,
                entry_date=max(ledger_date or vd, inv.issue_date),
                kind=LedgerKind.PAYMENT,
                amount=-(cash + disc),
            )
        )
        w.facts.append(PaymentApplied(new_inv, payment.id, cash, disc, w.now))
        if settled:
            w.facts.append(InvoiceSettled(new_inv, paid_at, days_late))
        available -= cash
        payment = replace(payment, allocated=payment.allocated + cash)
    return payment


def apply_payment(payment: Payment, open_invoices: Sequence[Invoice], now: datetime) -> Decision:
    """A new payment: named invoices first, then oldest due first, then largest; the rest is client credit."""
    w = _Work(now=now, invoices={i.id: i for i in open_invoices})
    order = list(payment.invoice_ids) + [i.id for i in auto_order(open_invoices)]
    paid = _apply_cash(
        w,
        payment,
        order,
        value_date=payment.received_at.date(),
        cause="payment",
        paid_at=payment.received_at,
    )
    w.put_payment(paid)
    return w.decision()


def apply_credit(invoice: Invoice, payments: Sequence[Payment], now: datetime) -> Decision:
    """A newly issued invoice consumes the client's credit in its currency, oldest payment first."""
    w = _Work(now=now, invoices={invoice.id: invoice})
    for p in sorted(payments, key=lambda p: (p.received_at, p.id)):
        if p.unapplied <= 0 or p.currency != invoice.currency:
            continue
        if not w.invoices[invoice.id].is_open:
            break
        updated = _apply_cash(w, p, [invoice.id], value_date=invoice.issue_date, cause="credit", paid_at=now)
        if updated != p:
            w.put_payment(updated)
    return w.decision()


def undo_payment(
    payment: Payment,
    amount: int,
    allocations: Sequence[Allocation],
    invoices: Mapping[str, Invoice],
    *,
    cause: str,
    reason: str,
    hold: bool,
    now: datetime,
) -> Decision:
    """Refund (``hold=False``) or chargeback opened (``hold=True``): take back ``amount`` of the payment.

    Unused credit goes first, then allocations newest first; each invoice touched is reopened by exactly
    the cash taken back plus the discount that came with it.
    """
    w = _Work(now=now, invoices=dict(invoices))
    amt = max(0, min(amount, payment.undoable))
    from_credit = min(amt, max(payment.unapplied, 0))
    remaining = amt - from_credit
    net_cash: dict[int, int] = {}
    net_disc: dict[int, int] = {}
    for a in allocations:
        if a.reverses is None and a.id is not None:
            net_cash[a.id] = net_cash.get(a.id, 0) + a.amount
            net_disc[a.id] = net_disc.get(a.id, 0) + a.discount
    for a in allocations:
        if a.reverses is not None:
            net_cash[a.reverses] = net_cash.get(a.reverses, 0) + a.amount
            net_disc[a.reverses] = net_disc.get(a.reverses, 0) + a.discount
    originals = sorted(
        (a for a in allocations if a.reverses is None and a.id is not None), key=lambda a: -(a.id or 0)
    )
    taken_from_invoices = 0
    reopened: dict[str, None] = {}
    for a in originals:
        if remaining <= 0:
            break
        assert a.id is not None
        take = min(remaining, net_cash.get(a.id, 0))
        if take <= 0:
            continue
        disc = max(net_disc.get(a.id, 0), 0)
        inv = w.invoices[a.invoice_id]
        w.put(
            replace(
                inv,
                amount_due=inv.amount_due + take + disc,
                paid_amount=inv.paid_amount - take - disc,
                status=InvoiceStatus.OPEN if inv.status is not InvoiceStatus.VOID else inv.status,
                paid_at=None,
            )
        )
        w.allocations.append(
            Allocation(
                id=None,
                payment_id=payment.id,
                invoice_id=a.invoice_id,
                client_id=a.client_id,
                currency=a.currency,
                amount=-take,
                discount=-disc,
                value_date=a.value_date,
                days_late=a.days_late,
                created_at=now,
                cause=cause,
                reverses=a.id,
            )
        )
        w.ledger.append(
            LedgerEntry(
                invoice_id=a.invoice_id,
                client_id=a.client_id,
                currency=a.currency,
                due_date=inv.due_date,
                entry_date=max(now.date(), inv.issue_date),
                kind=LedgerKind.REVERSAL,
                amount=take + disc,
            )
        )
        reopened[a.invoice_id] = None
        remaining -= take
        taken_from_invoices += take
    undone = from_credit + taken_from_invoices
    w.put_payment(
        replace(
            payment,
            allocated=payment.allocated - taken_from_invoices,
            held=payment.held + (undone if hold else 0),
            refunded=payment.refunded + (0 if hold else undone),
        )
    )
    for inv_id in reopened:
        w.facts.append(InvoiceReopened(w.invoices[inv_id], payment.id, reason))
    return w.decision()


def close_chargeback(
    payment: Payment,
    amount: int,
    merchant_won: bool,
    reversals: Sequence[Allocation],
    originals: Mapping[int, Allocation],
    open_invoices: Sequence[Invoice],
    *,
    chargeback_id: str,
    now: datetime,
) -> Decision:
    """Client won: the held money is gone for good. Merchant won: it counts again and is re-applied."""
    held = min(amount, payment.held)
    if not merchant_won:
        w = _Work(now=now, invoices={})
        w.put_payment(replace(payment, held=payment.held - held, refunded=payment.refunded + held))
        return w.decision()
    w = _Work(now=now, invoices={i.id: i for i in open_invoices})
    released = replace(payment, held=payment.held - held)
    ordered = sorted((r for r in reversals if r.reverses is not None), key=lambda r: r.reverses or 0)
    targets = [r.invoice_id for r in ordered]
    value_dates = {
        r.invoice_id: originals[r.reverses].value_date
        for r in ordered
        if r.reverses is not None and r.reverses in originals
    }
    # Only the released amount is re-applied now; anything else unapplied stays credit as it was.
    before = released.unapplied - held
    budget = replace(released, allocated=released.allocated + before)
    after = _apply_cash(
        w,
        budget,
        targets + [i.id for i in auto_order(open_invoices)],
        value_date=now.date(),
        value_dates=value_dates,
        ledger_date=now.date(),
        cause=f"restore:{chargeback_id}",
        paid_at=now,
    )
    w.put_payment(replace(released, allocated=after.allocated - before))
    return w.decision()
