"""The invoice ledger of one client: invoices, payments and the allocations that join them. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from invoice_svc.domain.totals import DiscountTerms


class InvoiceStatus(StrEnum):
    OPEN = "open"  # something is still due (or due again after a reversal)
    PAID = "paid"  # brought to zero by a payment
    CREDITED = "credited"  # brought to zero by a credit note
    VOID = "void"  # cancelled while unpaid


class LedgerKind(StrEnum):
    ISSUE = "issue"
    PAYMENT = "payment"  # cash and any early-payment discount granted with it
    REVERSAL = "reversal"  # refund or chargeback putting an amount due back
    CREDIT_NOTE = "credit_note"
    VOID = "void"


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    client_id: str
    number: str
    currency: str
    issue_date: date
    due_date: date
    total: int
    amount_due: int
    status: InvoiceStatus = InvoiceStatus.OPEN
    discount: DiscountTerms | None = None
    paid_amount: int = 0  # net cash plus discount applied
    credited_amount: int = 0
    disputed: bool = False
    paid_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status is InvoiceStatus.OPEN and self.amount_due > 0

    def days_overdue(self, as_of: date) -> int:
        return (as_of - self.due_date).days


@dataclass(frozen=True, slots=True)
class Payment:
    """Money received for a client. What is neither allocated nor undone is the client's credit."""

    id: str
    client_id: str
    currency: str
    amount: int
    received_at: datetime
    invoice_ids: tuple[str, ...] = ()
    allocated: int = 0  # net cash sitting on invoices
    refunded: int = 0  # gone for good: refunds and chargebacks lost
    held: int = 0  # under an open chargeback

    @property
    def unapplied(self) -> int:
        return self.amount - self.allocated - self.refunded - self.held

    @property
    def undoable(self) -> int:
        return self.amount - self.refunded - self.held


@dataclass(frozen=True, slots=True)
class Allocation:
    """Cash from one payment on one invoice; a reversal is a negative row pointing at the row it undoes."""

    id: int | None  # assigned by storage; ``None`` for rows not yet stored (ids grow with time)
    payment_id: str
    invoice_id: str
    client_id: str
    currency: str
    amount: int  # cash; negative on a reversal
    discount: int  # early-payment discount granted with it; negative on a reversal
    value_date: date  # the day the money counts for (days late, discount window)
    days_late: int  # value_date - due_date
    created_at: datetime
    cause: str  # payment | credit | restore:<chargeback id> | refund:<id> | chargeback:<id>
    reverses: int | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A dated change of an invoice's amount due; sums to the amount due on any date (aging as of a date)."""

    invoice_id: str
    client_id: str
    currency: str
    due_date: date  # copied from the invoice so as-of reports read the ledger alone
    entry_date: date
    kind: LedgerKind
    amount: int  # signed change of the amount due
