"""The per-client projection of the invoice topic, as pure functions over small records.

Events carry the amount due *after* each change, so applying an event twice, or an event for an invoice or a
client not seen yet, still converges on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import cast

from ar_events.events import (
    ClientProfile,
    ClientRegistered,
    ClientUpdated,
    CreditNoteIssued,
    DisputeOpened,
    DisputeResolved,
    InvoiceIssued,
    InvoicePaid,
    InvoicePaymentApplied,
    InvoiceReopened,
    InvoiceVoided,
    LateFeeCharged,
    Payload,
)
from dunning_svc.domain import Ledger, OpenInvoice
from dunning_svc.domain.model import make_evolver

OPEN, PAID, VOIDED = "open", "paid", "voided"


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    invoice_id: str
    client_id: str
    number: str = "?"
    currency: str = "EUR"
    issue_date: date | None = None
    due_date: date | None = None
    total: int | None = None
    amount_due: int = 0
    status: str = OPEN
    disputes: tuple[str, ...] = ()
    pay_link: str | None = None


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    profile: ClientProfile | None = None
    late_days_sum: int = 0
    paid_count: int = 0

    @property
    def avg_payment_delay(self) -> float | None:
        return self.late_days_sum / self.paid_count if self.paid_count else None


#: ``dataclasses.replace`` for the records, without its generic walk (once or twice per consumed event)
_client_with = make_evolver(ClientRecord)
_invoice_with = make_evolver(InvoiceRecord)

#: the invoice-topic types that change the projection
PROJECTED = (
    ClientRegistered, ClientUpdated, InvoiceIssued, InvoiceVoided, CreditNoteIssued, InvoicePaymentApplied,
    InvoicePaid, InvoiceReopened, DisputeOpened, DisputeResolved, LateFeeCharged,
)  # fmt: skip


def _status(amount_due: int) -> str:
    return OPEN if amount_due > 0 else PAID


# What kind of change an event is, remembered per payload class: a model's isinstance goes through
# ABCMeta.__instancecheck__, and project() asked up to eight times per consumed event.
_CLIENT, _ISSUED, _VOIDED, _AMOUNT, _PAID, _REOPENED, _DISPUTE_OPENED, _DISPUTE_RESOLVED, _OTHER = range(9)
_KINDS: dict[type, int] = {}


def _kind(event: Payload) -> int:
    cls = type(event)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = _classify(event)
    return kind


def _classify(event: Payload) -> int:
    if isinstance(event, ClientRegistered | ClientUpdated):
        return _CLIENT
    if isinstance(event, InvoiceIssued):
        return _ISSUED
    if isinstance(event, InvoiceVoided):
        return _VOIDED
    if isinstance(event, CreditNoteIssued | InvoicePaymentApplied | LateFeeCharged):
        return _AMOUNT
    if isinstance(event, InvoicePaid):
        return _PAID
    if isinstance(event, InvoiceReopened):
        return _REOPENED
    if isinstance(event, DisputeOpened):
        return _DISPUTE_OPENED
    if isinstance(event, DisputeResolved):
        return _DISPUTE_RESOLVED
    return _OTHER


_PROFILE_FIELDS = tuple(ClientProfile.model_fields)
_Amount = CreditNoteIssued | InvoicePaymentApplied | LateFeeCharged


def project(
    client: ClientRecord, invoices: dict[str, InvoiceRecord], event: Payload
) -> tuple[ClientRecord, InvoiceRecord | None]:
    """Apply one invoice-topic event; returns the client record and the invoice record it changed (if any)."""
    kind = _kind(event)
    if kind == _CLIENT:
        fields = {name: getattr(event, name) for name in _PROFILE_FIELDS}
        return _client_with(client, profile=ClientProfile.model_construct(**fields)), None
    invoice_id = getattr(event, "invoice_id", None)
    if invoice_id is None:
        return client, None
    inv = invoices.get(invoice_id) or InvoiceRecord(invoice_id=invoice_id, client_id=client.client_id)
    if kind == _ISSUED:
        event = cast(InvoiceIssued, event)
        known = invoice_id in invoices
        inv = _invoice_with(
            inv,
            number=event.number,
            currency=event.currency,
            issue_date=event.issue_date,
            due_date=event.due_date,
            total=event.total.amount_minor,
            pay_link=event.pay_link,
            amount_due=inv.amount_due if known else event.amount_due.amount_minor,
            status=inv.status if known else _status(event.amount_due.amount_minor),
        )
    elif kind == _VOIDED:
        event = cast(InvoiceVoided, event)
        inv = _invoice_with(inv, number=event.number, amount_due=0, status=VOIDED)
    elif kind == _AMOUNT:
        event = cast(_Amount, event)
        amount = event.amount_due_after
        inv = _invoice_with(inv, currency=amount.currency, amount_due=amount.amount_minor,
                      status=VOIDED if inv.status == VOIDED else _status(amount.amount_minor))  # fmt: skip
    elif kind == _PAID:
        event = cast(InvoicePaid, event)
        if inv.status != PAID:
            client = _client_with(client, late_days_sum=client.late_days_sum + event.days_late,
                             paid_count=client.paid_count + 1)  # fmt: skip
        inv = _invoice_with(inv, number=event.number, due_date=inv.due_date or event.due_date, amount_due=0, status=PAID,
                      currency=event.total.currency, total=inv.total if inv.total is not None else event.total.amount_minor)  # fmt: skip
    elif kind == _REOPENED:
        event = cast(InvoiceReopened, event)
        amount = event.amount_due_after
        inv = _invoice_with(inv, number=event.number, due_date=event.due_date, currency=amount.currency,
                      amount_due=amount.amount_minor, status=_status(amount.amount_minor))  # fmt: skip
    elif kind == _DISPUTE_OPENED:
        event = cast(DisputeOpened, event)
        if event.dispute_id not in inv.disputes:
            inv = _invoice_with(inv, disputes=(*inv.disputes, event.dispute_id))
    elif kind == _DISPUTE_RESOLVED:
        event = cast(DisputeResolved, event)
        inv = _invoice_with(inv, disputes=tuple(d for d in inv.disputes if d != event.dispute_id))
    return client, inv


def ledger_of(client: ClientRecord, invoices: dict[str, InvoiceRecord]) -> Ledger:
    """The domain's view: open invoices with a known due date."""
    open_invoices = tuple(
        OpenInvoice(
            invoice_id=i.invoice_id,
            number=i.number,
            currency=i.currency,
            due_date=i.due_date,
            amount_due=i.amount_due,
            issue_date=i.issue_date,
            total=i.total,
            disputed=bool(i.disputes),
        )
        for i in sorted(invoices.values(), key=lambda r: r.invoice_id)
        if i.status == OPEN and i.amount_due > 0 and i.due_date is not None
    )
    pay_link = next((i.pay_link for i in invoices.values() if i.pay_link and i.status == OPEN), None)
    return Ledger(
        client_id=client.client_id,
        profile=client.profile,
        invoices=open_invoices,
        avg_payment_delay=client.avg_payment_delay,
        pay_link=pay_link,
    )
