"""Application layer: one function per command or event. HTTP routes and the Kafka consumer call these.

Each function runs inside a UnitOfWork; it loads state through repositories, asks the pure domain for a
decision, stores it and emits the catalogued events (outbox, same transaction). It never commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import event as sa_event
from sqlalchemy.util import await_only

from ar_events import events as ev
from ar_events.envelope import Envelope, new_event
from ar_events.money import Money
from invoice_svc.domain import reports as formulas
from invoice_svc.domain.allocation import (
    Decision,
    Fact,
    InvoiceReopened,
    InvoiceSettled,
    PaymentApplied,
    apply_credit,
    apply_payment,
    close_chargeback,
    undo_payment,
)
from invoice_svc.domain.errors import conflict, invalid, not_found
from invoice_svc.domain.invoicing import credit, ledger_entry
from invoice_svc.domain.invoicing import open_dispute as domain_open_dispute
from invoice_svc.domain.invoicing import resolve_dispute as domain_resolve_dispute
from invoice_svc.domain.invoicing import void as domain_void
from invoice_svc.domain.model import Allocation, Invoice, LedgerEntry, LedgerKind, Payment
from invoice_svc.domain.totals import LineInput, discount_terms, due_date_for, price_lines
from invoice_svc.repository import (
    ClientRecord,
    CreditNoteRecord,
    InvoiceRecord,
    IssueLookup,
    NewPayment,
    UnitOfWork,
)
from invoice_svc.schemas import (
    AgingCurrency,
    AgingGroup,
    AgingOut,
    ClientIn,
    ClientPatch,
    CreditNoteIn,
    DelayOut,
    DelayRow,
    DisputeIn,
    DisputeResolutionIn,
    InvoiceIn,
    KpiCurrency,
    KpiOut,
    ParetoClient,
    ParetoCurrency,
    ParetoOut,
    StatementItem,
    StatementOut,
    money,
)
from invoice_svc.settings import SERVICE

log = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _m(amount: int, currency: str) -> Money:
    return Money(amount_minor=amount, currency=currency)


# --------------------------------------------------------------------------------------------- clients


def _profile(c: ClientRecord) -> dict[str, Any]:
    return {
        "client_id": c.id,
        "external_id": c.external_id,
        "name": c.name,
        "segment": c.segment,
        "tags": c.tags,
        "account_manager": ev.Person.model_validate(c.account_manager) if c.account_manager else None,
        "contacts": tuple(ev.Contact.model_validate(x) for x in c.contacts),
        "language": c.language,
        "time_zone": c.time_zone,
        "country": c.country,
        "payment_terms_days": c.payment_terms_days,
        "credit_limit": _m(*c.credit_limit) if c.credit_limit else None,
        "preferences": ev.NotificationPreferences.model_validate(c.preferences),
    }


def _client_fields(body: ClientIn) -> dict[str, Any]:
    return {
        "external_id": body.external_id,
        "name": body.name,
        "segment": body.segment,
        "tags": tuple(body.tags),
        "account_manager": body.account_manager.model_dump(mode="json") if body.account_manager else None,
        "contacts": tuple(c.model_dump(mode="json") for c in body.contacts),
        "language": body.language,
        "time_zone": body.time_zone,
        "country": body.country,
        "payment_terms_days": body.payment_terms_days,
        "credit_limit": (body.credit_limit.amount_minor, body.credit_limit.currency)
        if body.credit_limit
        else None,
        "preferences": body.preferences.model_dump(mode="json"),
    }


async def register_client(uow: UnitOfWork, body: ClientIn) -> ClientRecord:
    """POST /v1/clients: a new client; its external id must be unused. Emits ClientRegistered."""
    if await uow.clients.by_external_id(body.external_id) is not None:
        raise conflict("external_id", f"a client with external_id {body.external_id!r} already exists")
    now = uow.clock.now()
    rec = ClientRecord(id=new_id("cli"), created_at=now, updated_at=now, **_client_fields(body))
    await uow.clients.add(rec)
    uow.emit(ev.ClientRegistered(**_profile(rec)))
    return rec


async def update_client(uow: UnitOfWork, client_id: str, patch: ClientPatch) -> ClientRecord:
    """PATCH /v1/clients/{id}: change the given fields (the result must still be a valid client)."""
    current = await uow.clients.get(client_id, lock=True)
    if current is None:
        raise not_found("client_id", f"no client {client_id!r}")
    merged = {
        "external_id": current.external_id,
        "name": current.name,
        "segment": current.segment,
        "tags": list(current.tags),
        "account_manager": current.account_manager,
        "contacts": list(current.contacts),
        "language": current.language,
        "time_zone": current.time_zone,
        "country": current.country,
        "payment_terms_days": current.payment_terms_days,
        "credit_limit": {"amount_minor": current.credit_limit[0], "currency": current.credit_limit[1]}
        if current.credit_limit
        else None,
        "preferences": current.preferences,
    }
    merged.update(patch.model_dump(mode="json", exclude_unset=True))
    try:
        body = ClientIn.model_validate(merged)  # re-checks the whole client (billing contact, ...)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "body"
        raise invalid(path, first["msg"]) from None
    if body.external_id != current.external_id:
        other = await uow.clients.by_external_id(body.external_id)
        if other is not None and other.id != client_id:
            raise conflict("external_id", f"a client with external_id {body.external_id!r} already exists")
    rec = ClientRecord(
        id=current.id, created_at=current.created_at, updated_at=uow.clock.now(), **_client_fields(body)
    )
    await uow.clients.save(rec)
    uow.emit(ev.ClientUpdated(**_profile(rec)))
    return rec


# -------------------------------------------------------------------------------------------- invoices


def _fact_events(facts: Iterable[Fact], uow: UnitOfWork) -> list[ev.Payload]:
    now = uow.clock.now()
    out: list[ev.Payload] = []
    for f in facts:
        inv = f.invoice
        if isinstance(f, PaymentApplied):
            out.append(
                ev.InvoicePaymentApplied(
                    client_id=inv.client_id,
                    payment_id=f.payment_id,
                    invoice_id=inv.id,
                    amount=_m(f.amount, inv.currency),
                    discount=_m(f.discount, inv.currency) if f.discount else None,
                    amount_due_after=_m(inv.amount_due, inv.currency),
                    applied_at=f.applied_at,
                )
            )
        elif isinstance(f, InvoiceSettled):
            out.append(
                ev.InvoicePaid(
                    client_id=inv.client_id,
                    invoice_id=inv.id,
                    number=inv.number,
                    total=_m(inv.total, inv.currency),
                    due_date=inv.due_date,
                    paid_at=f.paid_at,
                    days_late=f.days_late,
                )
            )
        elif isinstance(f, InvoiceReopened):
            out.append(
                ev.InvoiceReopened(
                    client_id=inv.client_id,
                    invoice_id=inv.id,
                    number=inv.number,
                    due_date=inv.due_date,
                    amount_due_after=_m(inv.amount_due, inv.currency),
                    reason=ev.ReopenReason(f.reason),
                    payment_id=f.payment_id,
                    reopened_at=now,
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class Links:
    pay_link_base: str | None = None

    def pay_link(self, invoice_id: str) -> str | None:
        return f"{self.pay_link_base}{invoice_id}" if self.pay_link_base else None


async def issue_invoice(
    uow: UnitOfWork, body: InvoiceIn, links: Links = Links(), found: IssueLookup | None = None
) -> InvoiceRecord:
    """POST /v1/invoices: price the lines, apply any client credit, emit InvoiceIssued (and payments).

    ``found``: the result of ``uow.clients.for_issue`` when the caller already read it (with its
    Idempotency-Key reservation).
    """
    found = found or await uow.clients.for_issue(body.client_id, body.currency, body.number)
    client, has_credit, number_taken = found.client, found.has_credit, found.number_taken
    if client is None:
        raise invalid("client_id", f"no client {body.client_id!r}")
    if number_taken:
        raise conflict("number", f"client {client.id} already has an invoice numbered {body.number!r}")
    now = uow.clock.now()
    issue_date = body.issue_date or now.date()
    due = due_date_for(issue_date, body.due_date, client.payment_terms_days)
    totals = price_lines(
        [
            LineInput(
                li.description,
                li.quantity,
                li.unit_price.amount_minor,
                li.tax_rate_bp,
                li.unit_price.currency,
            )
            for li in body.lines
        ],
        body.currency,
    )
    terms = (
        discount_terms(
            totals.total, issue_date, body.early_payment_discount.rate_bp, body.early_payment_discount.days
        )
        if body.early_payment_discount
        else None
    )
    credits = []
    if has_credit:
        # Consuming credit must be serialised with other users of this client's payments (lock, then re-read).
        await uow.clients.get(client.id, lock=True)
        credits = await uow.payments.with_credit(client.id, body.currency)
    fresh = Invoice(
        id=new_id("inv"),
        client_id=client.id,
        number=body.number,
        currency=body.currency,
        issue_date=issue_date,
        due_date=due,
        total=totals.total,
        amount_due=totals.total,
        discount=terms,
    )
    decision = apply_credit(fresh, credits, now)
    final = next((i for i in decision.invoices if i.id == fresh.id), fresh)
    credit_applied = sum(a.amount for a in decision.allocations)
    rec = InvoiceRecord(
        invoice=final,
        subtotal=totals.subtotal,
        tax=totals.tax,
        credit_applied=credit_applied,
        lines=totals.lines,
        created_at=now,
        voided_at=None,
        void_reason=None,
    )
    await uow.invoices.add(rec, [ledger_entry(fresh, LedgerKind.ISSUE, totals.total, issue_date)])
    await uow.store(replace(decision, invoices=()))
    cur = body.currency
    uow.emit(
        ev.InvoiceIssued(
            client_id=client.id,
            invoice_id=fresh.id,
            number=fresh.number,
            currency=cur,
            issue_date=issue_date,
            due_date=due,
            lines=tuple(
                ev.InvoiceLine(
                    description=li.description,
                    quantity=li.quantity,
                    unit_price_minor=li.unit_price_minor,
                    tax_rate_bp=li.tax_rate_bp,
                    net=_m(li.net, cur),
                    tax=_m(li.tax, cur),
                )
                for li in totals.lines
            ),
            subtotal=_m(totals.subtotal, cur),
            tax=_m(totals.tax, cur),
            total=_m(totals.total, cur),
            amount_due=_m(final.amount_due, cur),
            credit_applied=_m(credit_applied, cur) if credit_applied else None,
            early_payment_discount=ev.EarlyPaymentDiscount(
                rate_bp=terms.rate_bp, days=terms.days, until=terms.until, amount=_m(terms.amount, cur)
            )
            if terms
            else None,
            pay_link=links.pay_link(fresh.id),
        ),
        *_fact_events(decision.facts, uow),
    )
    return rec


async def _locked_invoice(uow: UnitOfWork, invoice_id: str) -> Invoice:
    """The invoice, read again after locking its client (serialises changes to one client's ledger)."""
    inv = await uow.invoices.get(invoice_id)
    if inv is None:
        raise not_found("invoice_id", f"no invoice {invoice_id!r}")
    await uow.clients.get(inv.client_id, lock=True)
    again = await uow.invoices.get(invoice_id)
    assert again is not None
    return again


async def void_invoice(uow: UnitOfWork, invoice_id: str, reason: str | None) -> InvoiceRecord:
    """POST /v1/invoices/{id}/void: cancel an unpaid invoice. Emits InvoiceVoided."""
    inv = await _locked_invoice(uow, invoice_id)
    now = uow.clock.now()
    voided, entry = domain_void(inv, now)
    await uow.invoices.save(voided, voided_at=now, void_reason=reason)
    await uow.invoices.add_ledger([entry])
    uow.emit(
        ev.InvoiceVoided(
            client_id=inv.client_id, invoice_id=inv.id, number=inv.number, reason=reason, voided_at=now
        )
    )
    rec = await uow.invoices.record(invoice_id)
    assert rec is not None
    return rec


async def _credit_note(
    uow: UnitOfWork, inv: Invoice, amount: int, reason: str | None, dispute_id: str | None
) -> tuple[CreditNoteRecord, Invoice]:
    now = uow.clock.now()
    updated, entry = credit(inv, amount, now)
    cn = CreditNoteRecord(
        id=new_id("cn"),
        invoice_id=inv.id,
        client_id=inv.client_id,
        currency=inv.currency,
        amount=amount,
        reason=reason,
        dispute_id=dispute_id,
        issued_at=now,
    )
    await uow.invoices.add_credit_note(cn)
    await uow.invoices.save(updated)
    await uow.invoices.add_ledger([entry])
    uow.emit(
        ev.CreditNoteIssued(
            client_id=inv.client_id,
            credit_note_id=cn.id,
            invoice_id=inv.id,
            amount=_m(amount, inv.currency),
            reason=reason,
            amount_due_after=_m(updated.amount_due, inv.currency),
            issued_at=now,
        )
    )
    return cn, updated


async def issue_credit_note(
    uow: UnitOfWork, invoice_id: str, body: CreditNoteIn
) -> tuple[CreditNoteRecord, Invoice]:
    """POST /v1/invoices/{id}/credit-notes: reduce what is due (never below zero). Emits CreditNoteIssued."""
    inv = await _locked_invoice(uow, invoice_id)
    if body.amount.currency != inv.currency:
        raise invalid("amount.currency", f"the invoice is in {inv.currency}, not {body.amount.currency}")
    return await _credit_note(uow, inv, body.amount.amount_minor, body.reason, None)


async def open_dispute(uow: UnitOfWork, invoice_id: str, body: DisputeIn) -> tuple[Any, str]:
    """POST /v1/invoices/{id}/disputes: the client contests an open invoice. Emits DisputeOpened."""
    inv = await _locked_invoice(uow, invoice_id)
    if body.amount is not None and body.amount.currency != inv.currency:
        raise invalid("amount.currency", f"the invoice is in {inv.currency}, not {body.amount.currency}")
    now = uow.clock.now()
    updated, dispute = domain_open_dispute(
        inv,
        new_id("dsp"),
        body.reason.value,
        body.amount.amount_minor if body.amount else None,
        body.note,
        await uow.disputes.has_open(inv.id),
        now,
    )
    await uow.disputes.add(dispute)
    await uow.invoices.save(updated)
    uow.emit(
        ev.DisputeOpened(
            client_id=inv.client_id,
            dispute_id=dispute.id,
            invoice_id=inv.id,
            reason=body.reason,
            note=body.note,
            amount=body.amount,
            opened_at=now,
        )
    )
    return dispute, inv.currency


async def resolve_dispute(uow: UnitOfWork, dispute_id: str, body: DisputeResolutionIn) -> tuple[Any, str]:
    """POST /v1/disputes/{id}/resolve: upheld (with a credit note) or rejected. Emits DisputeResolved."""
    found = await uow.disputes.get(dispute_id)
    if found is None:
        raise not_found("dispute_id", f"no dispute {dispute_id!r}")
    inv = await _locked_invoice(uow, found.invoice_id)
    dispute = await uow.disputes.get(dispute_id)
    assert dispute is not None
    upheld = body.outcome is ev.DisputeOutcome.UPHELD
    requested = body.credit_note.amount if body.credit_note else None
    if requested is not None and requested.currency != inv.currency:
        raise invalid(
            "credit_note.amount.currency", f"the invoice is in {inv.currency}, not {requested.currency}"
        )
    if not upheld and body.credit_note is not None:
        raise invalid("credit_note", "a rejected dispute carries no credit note")
    now = uow.clock.now()
    resolved, amount = domain_resolve_dispute(
        dispute, inv, upheld, requested.amount_minor if requested else None, body.note, now
    )
    current = inv
    if amount > 0:
        reason = (body.credit_note.reason if body.credit_note else None) or f"dispute {dispute.id} upheld"
        cn, current = await _credit_note(uow, inv, amount, reason, dispute.id)
        resolved = replace(resolved, credit_note_id=cn.id)
    await uow.disputes.save(resolved)
    await uow.invoices.save(replace(current, disputed=False))
    uow.emit(
        ev.DisputeResolved(
            client_id=inv.client_id,
            dispute_id=dispute.id,
            invoice_id=inv.id,
            outcome=body.outcome,
            credit_note_id=resolved.credit_note_id,
            note=body.note,
            resolved_at=now,
        )
    )
    return resolved, inv.currency


# ----------------------------------------------------------------------------------- statement, reports


def _item(r: InvoiceRecord, as_of: date) -> StatementItem:
    i = r.invoice
    return StatementItem(
        invoice_id=i.id,
        number=i.number,
        issue_date=i.issue_date,
        due_date=i.due_date,
        total=money(i.total, i.currency),
        amount_due=money(i.amount_due, i.currency),
        days_overdue=i.days_overdue(as_of),
        disputed=i.disputed,
    )


async def statement(uow: UnitOfWork, client_id: str, as_of: date | None) -> StatementOut:
    """GET /v1/clients/{id}/statement: open items, balances, oldest overdue item and unapplied credit."""
    if await uow.clients.get(client_id) is None:
        raise not_found("client_id", f"no client {client_id!r}")
    day = as_of or uow.clock.now().date()
    items = await uow.invoices.open_items(client_id)  # ordered: due date, then largest
    balances: dict[str, int] = {}
    overdue: dict[str, int] = {}
    for r in items:
        i = r.invoice
        balances[i.currency] = balances.get(i.currency, 0) + i.amount_due
        if i.due_date < day:
            overdue[i.currency] = overdue.get(i.currency, 0) + i.amount_due
    oldest = next((r for r in items if r.invoice.due_date < day), None)
    credit_by_cur = await uow.payments.credit_by_currency(client_id)
    return StatementOut(
        client_id=client_id,
        as_of=day,
        open_items=[_item(r, day) for r in items],
        balances=[money(v, c) for c, v in sorted(balances.items())],
        overdue=[money(v, c) for c, v in sorted(overdue.items())],
        oldest_overdue=_item(oldest, day) if oldest else None,
        unapplied_credit=[money(v, c) for c, v in sorted(credit_by_cur.items())],
    )


async def aging_report(uow: UnitOfWork, as_of: date | None, group_by: str) -> AgingOut:
    """GET /v1/reports/aging: balances on ``as_of`` by bucket, grouped, per currency."""
    day = as_of or uow.clock.now().date()
    rows = await uow.reports.aging(day, group_by)
    per_cur: dict[str, dict[str | None, AgingGroup]] = {}
    for r in rows:
        groups = per_cur.setdefault(r.currency, {})
        g = groups.get(r.key)
        if g is None:
            g = groups[r.key] = AgingGroup(
                key=r.key, label=r.label, buckets=dict.fromkeys(formulas.BUCKETS, 0), total=0
            )
        amount = int(r.amount)
        g.buckets[r.bucket] += amount
        g.total += amount
    currencies = []
    for cur in sorted(per_cur):
        ranked = sorted(per_cur[cur].values(), key=lambda g: (-g.total, g.key or ""))
        totals = {b: sum(g.buckets[b] for g in ranked) for b in formulas.BUCKETS}
        currencies.append(
            AgingCurrency(currency=cur, totals=totals, total=sum(totals.values()), groups=ranked)
        )
    return AgingOut(as_of=day, group_by=group_by, buckets=list(formulas.BUCKETS), currencies=currencies)  # type: ignore[arg-type]


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


async def kpi_report(uow: UnitOfWork, as_of: date | None, period_days: int, months: int) -> KpiOut:
    """GET /v1/reports/dso: countback DSO, standard DSO, best-possible DSO, ADD and CEI per currency."""
    day = as_of or uow.clock.now().date()
    start = day - timedelta(days=period_days - 1)
    ar = await uow.reports.receivables(day)
    begin = await uow.reports.receivables(start - timedelta(days=1))
    period_sales = await uow.reports.sales(start, day)
    periods = formulas.month_periods(day, months)
    monthly = [await uow.reports.sales(p.start, p.end) for p in periods]
    out = []
    for cur in sorted(set(ar) | set(period_sales) | set(begin)):
        total, current = ar.get(cur, (0, 0))
        sales = period_sales.get(cur, 0)
        dso = formulas.ratio_days(total, sales, period_days)
        best = formulas.ratio_days(current, sales, period_days)
        out.append(
            KpiCurrency(
                currency=cur,
                receivables=total,
                current_receivables=current,
                overdue_receivables=total - current,
                sales_in_period=sales,
                dso_countback=_round(
                    formulas.dso_countback(
                        total, [(p.days, m.get(cur, 0)) for p, m in zip(periods, monthly, strict=True)]
                    )
                ),
                dso_standard=_round(dso),
                best_possible_dso=_round(best),
                average_days_delinquent=_round(dso - best) if dso is not None and best is not None else None,
                cei_percent=_round(formulas.cei(begin.get(cur, (0, 0))[0], sales, total, current)),
                beginning_receivables=begin.get(cur, (0, 0))[0],
            )
        )
    return KpiOut(as_of=day, period_days=period_days, countback_months=months, currencies=out)


async def payment_delay_report(uow: UnitOfWork, as_of: date | None, since: date | None) -> DelayOut:
    """GET /v1/reports/payment-delay: amount-weighted days paid after due, per client and currency."""
    day = as_of or uow.clock.now().date()
    rows = await uow.reports.payment_delay(since, day)
    clients = [
        DelayRow(
            client_id=r.client_id,
            client_name=r.name,
            currency=r.currency,
            cash_applied=int(r.cash or 0),
            average_days_late=_round(int(r.weighted) / int(r.cash)) if r.cash and int(r.cash) > 0 else None,
        )
        for r in rows
        if r.cash is not None and int(r.cash) > 0
    ]
    clients.sort(key=lambda d: (-(d.average_days_late or 0), d.client_id, d.currency))
    return DelayOut(as_of=day, since=since, clients=clients)


async def pareto_report(uow: UnitOfWork, as_of: date | None, fraction: float) -> ParetoOut:
    """GET /v1/reports/pareto: share of the overdue balance held by the top ``fraction`` of clients."""
    day = as_of or uow.clock.now().date()
    rows = await uow.reports.overdue_by_client(day)
    by_cur: dict[str, dict[str, int]] = {}
    names: dict[str, str | None] = {}
    for r in rows:
        by_cur.setdefault(r.currency, {})[r.client_id] = int(r.amount)
        names[r.client_id] = r.name
    out = []
    for cur in sorted(by_cur):
        view = formulas.pareto(by_cur[cur], fraction)
        out.append(
            ParetoCurrency(
                currency=cur,
                clients_with_overdue=view.clients_with_overdue,
                top_count=view.top_count,
                top_overdue=view.top_overdue,
                total_overdue=view.total_overdue,
                top_share=round(view.top_share, 4) if view.top_share is not None else None,
                top_clients=[
                    ParetoClient(client_id=c, client_name=names.get(c), overdue=a)
                    for c, a in view.top_clients
                ],
            )
        )
    return ParetoOut(as_of=day, fraction=fraction, currencies=out)


# ------------------------------------------------------------------------------- ar.payment.events


async def on_payment_received(event: ev.PaymentReceived, uow: UnitOfWork) -> None:
    """Allocate a payment (idempotent per payment id); the rest is client credit in its currency."""
    await receive_payments(uow, [(event, uow.caused_by)])


async def receive_payments(
    uow: UnitOfWork, batch: Sequence[tuple[ev.PaymentReceived, Envelope[Any] | None]]
) -> None:
    """Allocate payments in order, set-based: a few statements for the whole batch instead of several each.

    Each payment is applied exactly as ``on_payment_received`` alone would (same rules, same events, caused
    by its own record): the payments of one client see the invoices as the previous ones left them. Payment
    ids already stored, or earlier in the batch, are skipped.
    """
    if not batch:
        return
    seen = await uow.payments.lock_for_payments(
        [e.client_id for e, _ in batch], [e.payment_id for e, _ in batch]
    )
    fresh: list[tuple[ev.PaymentReceived, Envelope[Any] | None]] = []
    for event, cause in batch:
        if event.payment_id in seen:
            log.info("payment %s already applied; skipping", event.payment_id)
            continue
        seen.add(event.payment_id)
        fresh.append((event, cause))
    if not fresh:
        return
    open_invoices = await uow.invoices.open_for_clients((e.client_id, e.amount.currency) for e, _ in fresh)
    now = uow.clock.now()
    changed: dict[str, Invoice] = {}
    payments: list[NewPayment] = []
    allocations: list[Allocation] = []
    ledger: list[LedgerEntry] = []
    envelopes: list[Envelope[Any]] = []
    for event, cause in fresh:
        p = Payment(
            id=event.payment_id,
            client_id=event.client_id,
            currency=event.amount.currency,
            amount=event.amount.amount_minor,
            received_at=event.received_at,
            invoice_ids=tuple(event.invoice_ids),
        )
        key = (p.client_id, p.currency)
        current = open_invoices.get(key, [])
        decision = apply_payment(p, current, now)
        if decision.invoices:
            after = {i.id: i for i in decision.invoices}
            changed.update(after)
            open_invoices[key] = [i for i in (after.get(i.id, i) for i in current) if i.is_open]
        payments.append(
            NewPayment(decision.payments[0], event.method.value, event.processor, event.reference)
        )
        allocations.extend(decision.allocations)
        ledger.extend(decision.ledger)
        envelopes.extend(
            new_event(f, source=SERVICE, time=now, caused_by=cause) for f in _fact_events(decision.facts, uow)
        )
    merged = Decision(invoices=tuple(changed.values()), allocations=tuple(allocations), ledger=tuple(ledger))
    await uow.store_received(payments, merged, envelopes)


#: ``session.info`` key of the PaymentReceived records a consumer transaction holds back (``queue_payment``).
_QUEUED = "invoice_svc.payments_received"


async def queue_payment(event: ev.PaymentReceived, uow: UnitOfWork) -> None:
    """The consumer's PaymentReceived handler: hold the record back; the poll's records are applied together
    (``receive_payments``) just before the runner commits, or before any other record of the poll.

    A unit of work that owns its transaction (not the consumer's) applies it at once.
    """
    if uow.owns_transaction:
        await on_payment_received(event, uow)
        return
    session = uow.session
    queued: list[tuple[ev.PaymentReceived, Envelope[Any] | None]] | None = session.info.get(_QUEUED)
    if queued is None:
        queued = session.info[_QUEUED] = []
        clock = uow.clock

        def before_commit(_sync_session: Any) -> None:
            # runs inside SQLAlchemy's greenlet: awaiting here is what the asyncio extension does per statement
            held = session.info.pop(_QUEUED, None)
            if held:
                await_only(receive_payments(UnitOfWork(session, clock, owns_transaction=False), held))

        sa_event.listen(session.sync_session, "before_commit", before_commit, once=True)
    queued.append((event, uow.caused_by))


async def apply_queued(uow: UnitOfWork) -> None:
    """Apply the PaymentReceived records held back in this transaction (before a record that comes after)."""
    held = uow.session.info.get(_QUEUED)
    if held:
        uow.session.info[_QUEUED] = []  # the registered before_commit applies what is queued after this
        await receive_payments(uow, held)


async def _undo(uow: UnitOfWork, adjustment_id: str, kind: str, payment_id: str, amount: int, *, hold: bool,
                status: str) -> None:  # fmt: skip
    await apply_queued(uow)
    if await uow.payments.adjustment(adjustment_id) is not None:
        log.info("%s already applied; skipping", adjustment_id)
        return
    p = await uow.payments.get(payment_id)
    if p is None:
        log.warning("%s names unknown payment %s; nothing to undo", adjustment_id, payment_id)
        return
    await uow.clients.get(p.client_id, lock=True)
    p = await uow.payments.get(payment_id)
    assert p is not None
    allocations = await uow.payments.allocations(payment_id)
    invoices = await uow.invoices.get_many(a.invoice_id for a in allocations)
    decision = undo_payment(
        p, amount, allocations, invoices, cause=adjustment_id, reason=kind, hold=hold, now=uow.clock.now()
    )
    await uow.store(decision)
    await uow.payments.add_adjustment(adjustment_id, kind, p, amount, status, uow.clock.now())
    uow.emit(*_fact_events(decision.facts, uow))


async def on_payment_refunded(event: ev.PaymentRefunded, uow: UnitOfWork) -> None:
    """Take the refunded amount back: unused credit first, then the newest allocations (reopened)."""
    await _undo(
        uow, f"refund:{event.refund_id}", "refund", event.payment_id, event.amount.amount_minor, hold=False,
        status="done",
    )  # fmt: skip


async def on_chargeback_opened(event: ev.ChargebackOpened, uow: UnitOfWork) -> None:
    """The money is held by the card network: reopen what it paid, like a refund, until the outcome."""
    await _undo(
        uow, f"chargeback:{event.chargeback_id}", "chargeback", event.payment_id, event.amount.amount_minor,
        hold=True, status="open",
    )  # fmt: skip


async def on_chargeback_closed(event: ev.ChargebackClosed, uow: UnitOfWork) -> None:
    """Client won: stays reopened. Merchant won: the money counts again and is re-applied."""
    await apply_queued(uow)
    adj_id = f"chargeback:{event.chargeback_id}"
    merchant_won = event.outcome is ev.ChargebackOutcome.MERCHANT_WON
    adj = await uow.payments.adjustment(adj_id)
    if adj is None:
        # We never saw it open: a lost chargeback still takes the money back; a won one changes nothing.
        if not merchant_won:
            await _undo(
                uow, adj_id, "chargeback", event.payment_id, event.amount.amount_minor, hold=False,
                status="client_won",
            )  # fmt: skip
        return
    if adj.status != "open":
        log.info("%s already closed; skipping", adj_id)
        return
    p = await uow.payments.get(event.payment_id)
    if p is None:
        return
    await uow.clients.get(p.client_id, lock=True)
    allocations = await uow.payments.allocations(p.id)
    reversals = [a for a in allocations if a.cause == adj_id]
    originals = {a.id: a for a in allocations if a.id is not None}
    now = uow.clock.now()
    decision = close_chargeback(
        p,
        int(adj.amount),
        merchant_won,
        reversals,
        originals,
        await uow.invoices.open_for_client(p.client_id, p.currency),
        chargeback_id=event.chargeback_id,
        now=now,
    )
    await uow.store(decision)
    await uow.payments.close_adjustment(adj_id, event.outcome.value, now)
    uow.emit(*_fact_events(decision.facts, uow))


EventHandler = Callable[[Any, UnitOfWork], Awaitable[None]]

#: Consumed types of ar.payment.events and their handlers (PaymentFailed changes nothing we own). In the
#: consumer's transaction PaymentReceived records are held back and applied together (``queue_payment``).
PAYMENT_HANDLERS: Mapping[str, EventHandler] = {
    ev.PaymentReceived.TYPE: queue_payment,
    ev.PaymentRefunded.TYPE: on_payment_refunded,
    ev.ChargebackOpened.TYPE: on_chargeback_opened,
    ev.ChargebackClosed.TYPE: on_chargeback_closed,
}


async def dispatch(envelope: Envelope[Any], uow: UnitOfWork) -> None:
    handler = PAYMENT_HANDLERS.get(envelope.type)
    if handler is not None:
        await handler(envelope.data, uow)
