from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from invoice_svc.domain.allocation import (
    Decision,
    InvoiceReopened,
    InvoiceSettled,
    PaymentApplied,
    apply_credit,
    apply_payment,
    close_chargeback,
    undo_payment,
)
from invoice_svc.domain.model import Allocation, Invoice, InvoiceStatus, Payment
from invoice_svc.domain.totals import discount_terms

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
C = "cli_1"


def inv(
    i: str, due: date, amount: int, currency: str = "EUR", issued: date | None = None, **kw: object
) -> Invoice:
    return Invoice(
        id=i,
        client_id=C,
        number=i.upper(),
        currency=currency,
        issue_date=issued or due - timedelta(days=30),
        due_date=due,
        total=amount,
        amount_due=amount,
        **kw,  # type: ignore[arg-type]
    )


def pay(
    pid: str, amount: int, currency: str = "EUR", named: tuple[str, ...] = (), at: datetime = NOW
) -> Payment:
    return Payment(id=pid, client_id=C, currency=currency, amount=amount, received_at=at, invoice_ids=named)


class Book:
    """A test harness that stores decisions like the repository does (ids in creation order)."""

    def __init__(self, invoices: list[Invoice]) -> None:
        self.invoices = {i.id: i for i in invoices}
        self.payments: dict[str, Payment] = {}
        self.allocations: list[Allocation] = []

    def store(self, d: Decision) -> Decision:
        for i in d.invoices:
            self.invoices[i.id] = i
        for p in d.payments:
            self.payments[p.id] = p
        for a in d.allocations:
            self.allocations.append(replace(a, id=len(self.allocations) + 1))
        return d

    def open(self) -> list[Invoice]:
        return [i for i in self.invoices.values() if i.is_open]

    def receive(self, p: Payment) -> Decision:
        return self.store(apply_payment(p, self.open(), NOW))

    def undo(self, pid: str, amount: int, hold: bool = False, cause: str = "refund:r") -> Decision:
        p = self.payments[pid]
        allocs = [a for a in self.allocations if a.payment_id == pid]
        return self.store(
            undo_payment(p, amount, allocs, self.invoices, cause=cause, reason="refund", hold=hold, now=NOW)
        )

    def issue(self, i: Invoice) -> Decision:
        self.invoices[i.id] = i
        return self.store(apply_credit(i, list(self.payments.values()), NOW))

    def net_allocated(self, pid: str) -> int:
        return sum(a.amount for a in self.allocations if a.payment_id == pid)


def test_named_invoices_first_then_oldest_due_then_largest() -> None:
    book = Book(
        [
            inv("a", date(2026, 1, 10), 100),
            inv("b", date(2026, 1, 5), 50),
            inv("c", date(2026, 1, 5), 70),
            inv("d", date(2026, 2, 1), 40),
        ]
    )
    d = book.receive(pay("p1", 40 + 70 + 30, named=("d",)))
    applied = [(f.invoice.id, f.amount) for f in d.facts if isinstance(f, PaymentApplied)]
    assert applied == [("d", 40), ("c", 70), ("b", 30)]
    assert book.invoices["a"].amount_due == 100
    assert book.invoices["b"].amount_due == 20
    assert book.payments["p1"].unapplied == 0


def test_overpayment_is_credit_for_the_next_invoice_issued() -> None:
    book = Book([inv("a", date(2026, 1, 10), 100)])
    d = book.receive(pay("p1", 130))
    assert [f.invoice.id for f in d.facts if isinstance(f, InvoiceSettled)] == ["a"]
    assert book.payments["p1"].unapplied == 30
    d2 = book.issue(inv("b", date(2026, 4, 1), 50))
    assert book.invoices["b"].amount_due == 20
    assert book.payments["p1"].unapplied == 0
    assert [(a.invoice_id, a.amount, a.cause) for a in d2.allocations] == [("b", 30, "credit")]


def test_payment_in_a_currency_without_invoices_becomes_credit_in_that_currency() -> None:
    book = Book([inv("a", date(2026, 1, 10), 100, "EUR")])
    book.receive(pay("p1", 500, "USD"))
    assert book.invoices["a"].amount_due == 100
    assert book.payments["p1"].unapplied == 500
    book.issue(inv("e", date(2026, 4, 1), 300, "EUR"))
    assert book.invoices["e"].amount_due == 300
    book.issue(inv("u", date(2026, 4, 1), 300, "USD"))
    assert book.invoices["u"].amount_due == 0
    assert book.payments["p1"].unapplied == 200


def test_discount_granted_inside_the_window_only() -> None:
    issued = date(2026, 2, 25)
    terms = discount_terms(10_000, issued, 200, 10)  # until 2026-03-07, 200 off
    inside = Book([inv("a", date(2026, 3, 27), 10_000, issued=issued, discount=terms)])
    d = inside.receive(pay("p1", 9_800))
    applied = [f for f in d.facts if isinstance(f, PaymentApplied)]
    assert (applied[0].amount, applied[0].discount) == (9_800, 200)
    assert inside.invoices["a"].status is InvoiceStatus.PAID
    late = Book([inv("a", date(2026, 3, 27), 10_000, issued=issued, discount=terms)])
    late.receive(pay("p1", 9_800, at=datetime(2026, 3, 8, tzinfo=UTC)))
    assert late.invoices["a"].amount_due == 200
    # on the last day of the window it still counts
    edge = Book([inv("a", date(2026, 3, 27), 10_000, issued=issued, discount=terms)])
    edge.receive(pay("p1", 9_800, at=datetime(2026, 3, 7, 23, 59, tzinfo=UTC)))
    assert edge.invoices["a"].amount_due == 0


def test_refund_takes_credit_first_then_newest_allocation_and_reopens() -> None:
    book = Book([inv("a", date(2026, 1, 10), 100), inv("b", date(2026, 1, 20), 100)])
    book.receive(pay("p1", 250))
    d = book.undo("p1", 80)  # 50 credit + 30 from b (the newest allocation)
    assert book.payments["p1"].unapplied == 0
    assert book.invoices["b"].amount_due == 30
    assert book.invoices["b"].status is InvoiceStatus.OPEN
    assert book.invoices["a"].amount_due == 0
    reopened = [f for f in d.facts if isinstance(f, InvoiceReopened)]
    assert [(f.invoice.id, f.invoice.amount_due) for f in reopened] == [("b", 30)]


def test_refund_of_discounted_payment_takes_back_the_discount() -> None:
    issued = date(2026, 2, 25)
    terms = discount_terms(10_000, issued, 200, 10)
    book = Book([inv("a", date(2026, 3, 27), 10_000, issued=issued, discount=terms)])
    book.receive(pay("p1", 9_800))
    book.undo("p1", 1)
    assert book.invoices["a"].amount_due == 201


def test_chargeback_client_won_stays_reopened_merchant_won_reapplies() -> None:
    for merchant_won, expected_due in ((False, 100), (True, 0)):
        book = Book([inv("a", date(2026, 1, 10), 100)])
        book.receive(pay("p1", 100))
        book.undo("p1", 100, hold=True, cause="chargeback:cb1")
        assert book.invoices["a"].amount_due == 100
        reversals = [a for a in book.allocations if a.cause == "chargeback:cb1"]
        originals = {a.id: a for a in book.allocations if a.id is not None}
        d = close_chargeback(
            book.payments["p1"], 100, merchant_won, reversals, originals, book.open(),
            chargeback_id="cb1", now=NOW,
        )  # fmt: skip
        book.store(d)
        assert book.invoices["a"].amount_due == expected_due
        p = book.payments["p1"]
        assert p.held == 0
        assert p.refunded == (0 if merchant_won else 100)
        # the restored allocation keeps its original value date (days late unchanged)
        if merchant_won:
            assert d.allocations[0].value_date == NOW.date()


# ------------------------------- properties -------------------------------

amounts = st.integers(min_value=1, max_value=50_000)
invoice_specs = st.lists(
    st.tuples(st.integers(min_value=0, max_value=60), amounts, st.sampled_from(["EUR", "USD"])),
    min_size=0,
    max_size=6,
)
payment_specs = st.lists(
    st.tuples(amounts, st.sampled_from(["EUR", "USD"]), st.lists(st.integers(0, 6), max_size=2)),
    min_size=1,
    max_size=5,
)


def _book(specs: list[tuple[int, int, str]]) -> Book:
    return Book(
        [inv(f"i{n}", date(2026, 1, 1) + timedelta(days=d), a, c) for n, (d, a, c) in enumerate(specs)]
    )


def _check_invariants(book: Book) -> None:
    for i in book.invoices.values():
        assert 0 <= i.amount_due <= i.total
        assert i.paid_amount <= i.total
        assert i.total - i.paid_amount == i.amount_due
    for pid, p in book.payments.items():
        net = book.net_allocated(pid)
        assert net == p.allocated
        assert p.unapplied >= 0
        # allocations + credit == payment (less what was undone)
        assert net + p.unapplied == p.amount - p.refunded - p.held
    for i in book.invoices.values():
        applied = sum(a.amount + a.discount for a in book.allocations if a.invoice_id == i.id)
        assert applied == i.paid_amount


@settings(max_examples=150, deadline=None)
@given(invoice_specs, payment_specs, st.lists(invoice_specs, max_size=1))
def test_allocations_plus_credit_equal_payments(
    invs: list[tuple[int, int, str]],
    pays: list[tuple[int, str, list[int]]],
    later: list[list[tuple[int, int, str]]],
) -> None:
    book = _book(invs)
    for n, (amount, cur, named) in enumerate(pays):
        book.receive(pay(f"p{n}", amount, cur, tuple(f"i{k}" for k in named)))
        _check_invariants(book)
    for n, (d, a, c) in enumerate(later[0] if later else []):
        book.issue(inv(f"n{n}", date(2026, 5, 1) + timedelta(days=d), a, c))
        _check_invariants(book)
    total_in = sum(p.amount for p in book.payments.values())
    assert (
        sum(book.net_allocated(pid) for pid in book.payments)
        + sum(p.unapplied for p in book.payments.values())
        == total_in
    )


@settings(max_examples=150, deadline=None)
@given(invoice_specs, payment_specs, st.integers(0, 4), st.booleans(), st.lists(invoice_specs, max_size=1))
def test_full_refund_restores_exact_amounts(
    invs: list[tuple[int, int, str]],
    pays: list[tuple[int, str, list[int]]],
    which: int,
    hold: bool,
    later: list[list[tuple[int, int, str]]],
) -> None:
    book = _book(invs)
    *before, last = pays
    for n, (amount, cur, named) in enumerate(before):
        book.receive(pay(f"p{n}", amount, cur, tuple(f"i{k}" for k in named)))
    snapshot = {i.id: (i.amount_due, i.status) for i in book.invoices.values()}
    amount, cur, named = last
    book.receive(pay("x", amount, cur, tuple(f"i{k}" for k in named)))
    # credit from the payment may flow to invoices issued afterwards; the refund undoes that too
    for n, (d, a, c) in enumerate(later[0] if later else []):
        i = inv(f"n{n}", date(2026, 5, 1) + timedelta(days=d), a, c)
        snapshot[i.id] = (a, InvoiceStatus.OPEN)
        book.store(apply_credit(i, [book.payments["x"]], NOW))
        book.invoices.setdefault(i.id, i)
    book.undo("x", amount, hold=hold)
    _check_invariants(book)
    assert {i.id: (i.amount_due, i.status) for i in book.invoices.values()} == snapshot
    assert book.payments["x"].unapplied == 0


@settings(max_examples=100, deadline=None)
@given(invoice_specs, amounts, st.lists(amounts, min_size=1, max_size=4))
def test_partial_refunds_never_overshoot(
    invs: list[tuple[int, int, str]], amount: int, refunds: list[int]
) -> None:
    book = _book(invs)
    book.receive(pay("x", amount))
    for r in refunds:
        book.undo("x", r)
        _check_invariants(book)
    p = book.payments["x"]
    assert p.refunded == min(sum(refunds), amount)
