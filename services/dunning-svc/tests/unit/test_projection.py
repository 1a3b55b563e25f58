"""The projection converges whatever the order of first sight and however often an event repeats."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from ar_events.events import (
    DisputeOpened,
    DisputeResolved,
    InvoiceIssued,
    InvoicePaid,
    InvoicePaymentApplied,
    Payload,
)
from ar_events.money import Money
from dunning_svc.projection import ClientRecord, InvoiceRecord, ledger_of, project

AT = datetime(2026, 3, 2, tzinfo=UTC)
EUR = "EUR"


def m(n: int) -> Money:
    return Money(amount_minor=n, currency=EUR)


ISSUED = InvoiceIssued(client_id="c", invoice_id="i1", number="F-1", currency=EUR, issue_date=date(2026, 1, 1),
                       due_date=date(2026, 2, 1), subtotal=m(1000), tax=m(0), total=m(1000), amount_due=m(1000))  # fmt: skip
PART = InvoicePaymentApplied(client_id="c", payment_id="p1", invoice_id="i1", amount=m(400), amount_due_after=m(600),
                             applied_at=AT)  # fmt: skip
DISPUTE = DisputeOpened(client_id="c", dispute_id="d1", invoice_id="i1", reason="billing_error", opened_at=AT)  # type: ignore[arg-type]
UNDISPUTE = DisputeResolved(
    client_id="c", dispute_id="d1", invoice_id="i1", outcome="rejected", resolved_at=AT
)  # type: ignore[arg-type]
PAID = InvoicePaid(client_id="c", invoice_id="i1", number="F-1", total=m(1000), due_date=date(2026, 2, 1), paid_at=AT,
                   days_late=29)  # fmt: skip


def run(events: list[Payload]) -> tuple[ClientRecord, dict[str, InvoiceRecord]]:
    client, invoices = ClientRecord("c"), {}
    for ev in events:
        client, inv = project(client, invoices, ev)
        if inv is not None:
            invoices[inv.invoice_id] = inv
    return client, invoices


@given(st.lists(st.sampled_from([0, 1, 2]), max_size=6))
def test_repeats_converge(repeats: list[int]) -> None:
    base = [ISSUED, PART, DISPUTE]
    once = run(base)
    noisy = list(base)
    for i in repeats:
        noisy.insert(noisy.index(base[i]) + 1, base[i])
    assert run(noisy) == once


def test_payment_before_issue_for_unseen_client_converges() -> None:
    _, invoices = run([PART, ISSUED])
    assert invoices["i1"].amount_due == 600 and invoices["i1"].due_date == date(2026, 2, 1)
    assert run([ISSUED, PART])[1] == invoices


def test_dispute_flag_and_paid_average() -> None:
    client, invoices = run([ISSUED, DISPUTE])
    assert ledger_of(client, invoices).invoices[0].disputed
    client, invoices = run([ISSUED, DISPUTE, UNDISPUTE, PAID, PAID])
    assert not ledger_of(client, invoices).invoices  # paid: no longer open
    assert client.paid_count == 1 and client.avg_payment_delay == 29
