"""Request and response bodies of the REST API (pydantic). Money is ``{"amount_minor": int, "currency": "EUR"}``."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ar_events.events import (
    Contact,
    ContactRole,
    CountryCode,
    DisputeOutcome,
    DisputeReason,
    LanguageTag,
    NotificationPreferences,
    Person,
)
from ar_events.jsontypes import IsoDate, JsonInt
from ar_events.money import CurrencyCode, Money
from invoice_svc.domain.invoicing import Dispute
from invoice_svc.domain.model import InvoiceStatus
from invoice_svc.repository import ClientRecord, CreditNoteRecord, InvoiceRecord

MAX_MINOR = 10**15


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


def _bounded(m: Money) -> Money:
    if abs(m.amount_minor) > MAX_MINOR:
        raise ValueError(f"amount_minor must be within +/-{MAX_MINOR}")
    return m


def _non_negative(m: Money) -> Money:
    if m.amount_minor < 0:
        raise ValueError("amount_minor must not be negative")
    return _bounded(m)


TimeZone = Annotated[
    str, Field(min_length=1, max_length=64, examples=["Europe/Paris"]), AfterValidator(_time_zone)
]
AmountIn = Annotated[Money, AfterValidator(_bounded)]
NonNegativeMoney = Annotated[Money, AfterValidator(_non_negative)]
Tag = Annotated[str, Field(min_length=1, max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------- clients


class ClientIn(_In):
    external_id: str = Field(min_length=1, max_length=128, description="The billing system's id; unique")
    name: str = Field(min_length=1, max_length=300)
    segment: str = Field(min_length=1, max_length=64, examples=["smb", "enterprise"])
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    account_manager: Person | None = None
    contacts: list[Contact] = Field(min_length=1, max_length=50, description="At least one with role billing")
    language: LanguageTag = "en"
    time_zone: TimeZone = "UTC"
    country: CountryCode = "US"
    payment_terms_days: JsonInt = Field(default=30, ge=0, le=365)
    credit_limit: NonNegativeMoney | None = None
    preferences: NotificationPreferences = NotificationPreferences()

    @field_validator("contacts")
    @classmethod
    def _billing_contact(cls, contacts: list[Contact]) -> list[Contact]:
        if not any(c.role is ContactRole.BILLING for c in contacts):
            raise ValueError("at least one contact must have the role 'billing'")
        return contacts


class ClientPatch(_In):
    """Fields to change; absent fields stay as they are."""

    external_id: str | None = Field(default=None, min_length=1, max_length=128)
    name: str | None = Field(default=None, min_length=1, max_length=300)
    segment: str | None = Field(default=None, min_length=1, max_length=64)
    tags: list[Tag] | None = Field(default=None, max_length=50)
    account_manager: Person | None = None
    contacts: list[Contact] | None = Field(default=None, min_length=1, max_length=50)
    language: LanguageTag | None = None
    time_zone: TimeZone | None = None
    country: CountryCode | None = None
    payment_terms_days: JsonInt | None = Field(default=None, ge=0, le=365)
    credit_limit: NonNegativeMoney | None = None
    preferences: NotificationPreferences | None = None

    @field_validator("contacts")
    @classmethod
    def _billing_contact(cls, contacts: list[Contact] | None) -> list[Contact] | None:
        return None if contacts is None else ClientIn._billing_contact(contacts)


class ClientOut(BaseModel):
    id: str
    external_id: str
    name: str
    segment: str
    tags: list[str]
    account_manager: Person | None
    contacts: list[Contact]
    language: str
    time_zone: str
    country: str
    payment_terms_days: int
    credit_limit: Money | None
    preferences: NotificationPreferences
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: ClientRecord) -> ClientOut:
        return cls(
            id=c.id,
            external_id=c.external_id,
            name=c.name,
            segment=c.segment,
            tags=list(c.tags),
            account_manager=Person.model_validate(c.account_manager) if c.account_manager else None,
            contacts=[Contact.model_validate(x) for x in c.contacts],
            language=c.language,
            time_zone=c.time_zone,
            country=c.country,
            payment_terms_days=c.payment_terms_days,
            credit_limit=Money(amount_minor=c.credit_limit[0], currency=c.credit_limit[1])
            if c.credit_limit
            else None,
            preferences=NotificationPreferences.model_validate(c.preferences),
            created_at=c.created_at,
            updated_at=c.updated_at,
        )


# -------------------------------------------------------------------------------------------- invoices


class LineIn(_In):
    description: str = Field(min_length=1, max_length=500)
    quantity: JsonInt = Field(gt=0, le=1_000_000_000)
    unit_price: AmountIn = Field(description="Price of one unit in minor units; same currency as the invoice")
    tax_rate_bp: JsonInt = Field(
        default=0, ge=0, le=10_000, description="Tax rate in basis points (2000 = 20%)"
    )


class DiscountIn(_In):
    rate_bp: JsonInt = Field(gt=0, lt=10_000, description="200 = 2%")
    days: JsonInt = Field(gt=0, le=365, description="Days after the issue date the discount stays available")


class InvoiceIn(_In):
    client_id: str = Field(min_length=1, max_length=64)
    number: str = Field(min_length=1, max_length=64, description="Unique per client")
    currency: CurrencyCode
    issue_date: IsoDate | None = Field(default=None, description="Defaults to today (service clock, UTC)")
    due_date: IsoDate | None = Field(default=None, description="Defaults to issue date + the client's terms")
    lines: list[LineIn] = Field(min_length=1, max_length=500)
    early_payment_discount: DiscountIn | None = None


class LineOut(BaseModel):
    description: str
    quantity: int
    unit_price: Money
    tax_rate_bp: int
    net: Money
    tax: Money


class DiscountOut(BaseModel):
    rate_bp: int
    days: int
    until: date
    amount: Money


class InvoiceOut(BaseModel):
    id: str
    client_id: str
    number: str
    currency: str
    status: InvoiceStatus
    issue_date: date
    due_date: date
    lines: list[LineOut]
    subtotal: Money
    tax: Money
    total: Money
    amount_due: Money
    paid: Money = Field(description="Cash and early-payment discount applied")
    credited: Money = Field(description="Credit notes")
    credit_applied: Money = Field(description="Client credit consumed when the invoice was issued")
    disputed: bool
    early_payment_discount: DiscountOut | None
    paid_at: datetime | None
    voided_at: datetime | None
    void_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, r: InvoiceRecord) -> InvoiceOut:
        i = r.invoice

        def m(v: int) -> Money:
            return Money(amount_minor=v, currency=i.currency)

        d = i.discount
        return cls(
            id=i.id,
            client_id=i.client_id,
            number=i.number,
            currency=i.currency,
            status=i.status,
            issue_date=i.issue_date,
            due_date=i.due_date,
            lines=[
                LineOut(
                    description=li.description,
                    quantity=li.quantity,
                    unit_price=m(li.unit_price_minor),
                    tax_rate_bp=li.tax_rate_bp,
                    net=m(li.net),
                    tax=m(li.tax),
                )
                for li in r.lines
            ],
            subtotal=m(r.subtotal),
            tax=m(r.tax),
            total=m(i.total),
            amount_due=m(i.amount_due),
            paid=m(i.paid_amount),
            credited=m(i.credited_amount),
            credit_applied=m(r.credit_applied),
            disputed=i.disputed,
            early_payment_discount=DiscountOut(
                rate_bp=d.rate_bp, days=d.days, until=d.until, amount=m(d.amount)
            )
            if d
            else None,
            paid_at=i.paid_at,
            voided_at=r.voided_at,
            void_reason=r.void_reason,
            created_at=r.created_at,
        )


class VoidIn(_In):
    reason: str | None = Field(default=None, max_length=1000)


class CreditNoteIn(_In):
    amount: AmountIn = Field(description="Positive; at most what the invoice still owes; invoice currency")
    reason: str | None = Field(default=None, max_length=1000)


class CreditNoteOut(BaseModel):
    id: str
    invoice_id: str
    client_id: str
    amount: Money
    reason: str | None
    dispute_id: str | None
    issued_at: datetime
    amount_due_after: Money | None = None

    @classmethod
    def of(cls, cn: CreditNoteRecord, amount_due_after: int | None = None) -> CreditNoteOut:
        return cls(
            id=cn.id,
            invoice_id=cn.invoice_id,
            client_id=cn.client_id,
            amount=Money(amount_minor=cn.amount, currency=cn.currency),
            reason=cn.reason,
            dispute_id=cn.dispute_id,
            issued_at=cn.issued_at,
            amount_due_after=Money(amount_minor=amount_due_after, currency=cn.currency)
            if amount_due_after is not None
            else None,
        )


# -------------------------------------------------------------------------------------------- disputes


class DisputeIn(_In):
    reason: DisputeReason
    note: str | None = Field(default=None, max_length=2000)
    amount: AmountIn | None = Field(
        default=None, description="Disputed amount; the whole amount due if absent"
    )


class ResolutionCreditNote(_In):
    amount: AmountIn | None = Field(
        default=None, description="Default: the disputed amount (capped at what is due)"
    )
    reason: str | None = Field(default=None, max_length=1000)


class DisputeResolutionIn(_In):
    outcome: DisputeOutcome
    credit_note: ResolutionCreditNote | None = Field(default=None, description="Only with outcome upheld")
    note: str | None = Field(default=None, max_length=2000)


class DisputeOut(BaseModel):
    id: str
    invoice_id: str
    client_id: str
    reason: str
    status: Literal["open", "upheld", "rejected"]
    note: str | None
    amount: Money | None
    opened_at: datetime
    resolved_at: datetime | None
    resolution_note: str | None
    credit_note_id: str | None

    @classmethod
    def of(cls, d: Dispute, currency: str) -> DisputeOut:
        return cls(
            id=d.id,
            invoice_id=d.invoice_id,
            client_id=d.client_id,
            reason=d.reason,
            status=d.status.value,
            note=d.note,
            amount=Money(amount_minor=d.amount, currency=currency) if d.amount is not None else None,
            opened_at=d.opened_at,
            resolved_at=d.resolved_at,
            resolution_note=d.resolution_note,
            credit_note_id=d.credit_note_id,
        )


# ------------------------------------------------------------------------------------ statement, reports


class StatementItem(BaseModel):
    invoice_id: str
    number: str
    issue_date: date
    due_date: date
    total: Money
    amount_due: Money
    days_overdue: int = Field(description="Negative before the due date")
    disputed: bool


class StatementOut(BaseModel):
    client_id: str
    as_of: date
    open_items: list[StatementItem]
    balances: list[Money] = Field(description="Open balance per currency")
    overdue: list[Money] = Field(description="Overdue balance per currency")
    oldest_overdue: StatementItem | None
    unapplied_credit: list[Money] = Field(description="Client credit per currency")


class AgingGroup(BaseModel):
    key: str | None = Field(description="Client id, account manager email, or segment")
    label: str | None = None
    buckets: dict[str, int] = Field(description="current, 1-30, 31-60, 61-90, 90+ in minor units")
    total: int


class AgingCurrency(BaseModel):
    currency: str
    totals: dict[str, int]
    total: int
    groups: list[AgingGroup]


class AgingOut(BaseModel):
    as_of: date
    group_by: Literal["client", "account_manager", "segment"]
    buckets: list[str]
    currencies: list[AgingCurrency]


class KpiCurrency(BaseModel):
    currency: str
    receivables: int
    current_receivables: int
    overdue_receivables: int
    sales_in_period: int
    dso_countback: float | None
    dso_standard: float | None
    best_possible_dso: float | None
    average_days_delinquent: float | None
    cei_percent: float | None
    beginning_receivables: int


class KpiOut(BaseModel):
    as_of: date
    period_days: int
    countback_months: int
    cei_variant: str = "single-period: (begin + sales - end) / (begin + sales - end current) * 100"
    currencies: list[KpiCurrency]


class DelayRow(BaseModel):
    client_id: str
    client_name: str | None
    currency: str
    cash_applied: int
    average_days_late: float | None = Field(description="Amount-weighted; negative means early")


class DelayOut(BaseModel):
    as_of: date
    since: date | None
    clients: list[DelayRow]


class ParetoClient(BaseModel):
    client_id: str
    client_name: str | None
    overdue: int


class ParetoCurrency(BaseModel):
    currency: str
    clients_with_overdue: int
    top_count: int
    top_overdue: int
    total_overdue: int
    top_share: float | None = Field(description="0..1")
    top_clients: list[ParetoClient]


class ParetoOut(BaseModel):
    as_of: date
    fraction: float
    currencies: list[ParetoCurrency]


def money(amount: int, currency: str) -> Money:
    return Money(amount_minor=amount, currency=currency)


def as_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
