"""Invoice life cycle rules: void, credit notes and disputes. Pure: state and time in, new state out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from invoice_svc.domain.errors import conflict, invalid
from invoice_svc.domain.model import Invoice, InvoiceStatus, LedgerEntry, LedgerKind


class DisputeStatus(StrEnum):
    OPEN = "open"
    UPHELD = "upheld"
    REJECTED = "rejected"


DISPUTE_REASONS = ("billing_error", "wrong_contact", "technical", "service_quality", "cash_flow", "other")


@dataclass(frozen=True, slots=True)
class Dispute:
    id: str
    invoice_id: str
    client_id: str
    reason: str
    opened_at: datetime
    status: DisputeStatus = DisputeStatus.OPEN
    amount: int | None = None
    note: str | None = None
    resolved_at: datetime | None = None
    resolution_note: str | None = None
    credit_note_id: str | None = None


def ledger_entry(inv: Invoice, kind: LedgerKind, amount: int, on: date) -> LedgerEntry:
    """A dated change of the amount due; never dated before the invoice exists."""
    return LedgerEntry(
        invoice_id=inv.id,
        client_id=inv.client_id,
        currency=inv.currency,
        due_date=inv.due_date,
        entry_date=max(on, inv.issue_date),
        kind=kind,
        amount=amount,
    )


def void(inv: Invoice, now: datetime) -> tuple[Invoice, LedgerEntry]:
    """Cancel an invoice that has no payment on it; what it still owed leaves the ledger."""
    if inv.status is InvoiceStatus.VOID:
        raise conflict("invoice_id", "the invoice is already void")
    if inv.paid_amount > 0 or inv.status is InvoiceStatus.PAID:
        raise conflict("invoice_id", "the invoice has payments applied; only unpaid invoices can be voided")
    voided = replace(inv, status=InvoiceStatus.VOID, amount_due=0)
    return voided, ledger_entry(inv, LedgerKind.VOID, -inv.amount_due, now.date())


def credit(inv: Invoice, amount: int, now: datetime) -> tuple[Invoice, LedgerEntry]:
    """A credit note reduces the amount due; it may not exceed what remains (never below zero)."""
    if inv.status is InvoiceStatus.VOID:
        raise conflict("invoice_id", "the invoice is void")
    if amount <= 0:
        raise invalid("amount.amount_minor", "must be greater than zero")
    if amount > inv.amount_due:
        raise invalid(
            "amount.amount_minor",
            f"credit note of {amount} exceeds the amount still due ({inv.amount_due})",
        )
    due_after = inv.amount_due - amount
    updated = replace(
        inv,
        amount_due=due_after,
        credited_amount=inv.credited_amount + amount,
        status=InvoiceStatus.CREDITED if due_after == 0 else inv.status,
    )
    return updated, ledger_entry(inv, LedgerKind.CREDIT_NOTE, -amount, now.date())


def open_dispute(
    inv: Invoice,
    dispute_id: str,
    reason: str,
    amount: int | None,
    note: str | None,
    has_open: bool,
    now: datetime,
) -> tuple[Invoice, Dispute]:
    """A client contests an open invoice (one open dispute per invoice at a time)."""
    if reason not in DISPUTE_REASONS:
        raise invalid("reason", f"must be one of {', '.join(DISPUTE_REASONS)}")
    if not inv.is_open:
        raise conflict("invoice_id", f"cannot dispute an invoice that is {inv.status.value} with nothing due")
    if has_open:
        raise conflict("invoice_id", "the invoice already has an open dispute")
    if amount is not None and not 0 < amount <= inv.amount_due:
        raise invalid("amount.amount_minor", f"must be between 1 and the amount due ({inv.amount_due})")
    dispute = Dispute(
        id=dispute_id,
        invoice_id=inv.id,
        client_id=inv.client_id,
        reason=reason,
        amount=amount,
        note=note,
        opened_at=now,
    )
    return replace(inv, disputed=True), dispute


def resolve_dispute(
    dispute: Dispute, inv: Invoice, upheld: bool, credit_amount: int | None, note: str | None, now: datetime
) -> tuple[Dispute, int]:
    """Upheld: returns the credit note amount to issue (the requested amount, else the disputed amount, else
    everything still due; 0 when nothing is left to credit). Rejected: 0."""
    if dispute.status is not DisputeStatus.OPEN:
        raise conflict("dispute_id", f"the dispute is already {dispute.status.value}")
    amount = 0
    if upheld:
        if credit_amount is not None:
            if credit_amount <= 0:
                raise invalid("credit_note.amount_minor", "must be greater than zero")
            if credit_amount > inv.amount_due:
                raise invalid(
                    "credit_note.amount_minor",
                    f"credit note of {credit_amount} exceeds the amount still due ({inv.amount_due})",
                )
            amount = credit_amount
        else:
            amount = min(dispute.amount if dispute.amount is not None else inv.amount_due, inv.amount_due)
    elif credit_amount is not None:
        raise invalid("credit_note", "a rejected dispute carries no credit note")
    resolved = replace(
        dispute,
        status=DisputeStatus.UPHELD if upheld else DisputeStatus.REJECTED,
        resolved_at=now,
        resolution_note=note,
    )
    return resolved, amount
