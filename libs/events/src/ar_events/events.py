"""One pydantic model per event and command type on the five topics (design.md section 3).

Every payload carries ``client_id``: it is the CloudEvents ``subject`` and the Kafka record key.
Amounts are :class:`~ar_events.money.Money` (integer minor units plus ISO 4217 code). Events that change
what an invoice owes carry the amount due *after* the change, so projections converge even when an event
repeats. Consumers ignore fields they do not know (``extra="ignore"``), which keeps optional additions
compatible within a major version.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from ar_events.jsontypes import IsoDate, JsonBool
from ar_events.money import Money, PositiveMoney
from ar_events.topics import Topic

Id = Annotated[str, Field(min_length=1, max_length=128)]
ClientId = Annotated[str, Field(min_length=1, max_length=128, description="The client id (invoice-svc's id)")]
LanguageTag = Annotated[
    str, Field(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]


class Payload(BaseModel):
    """Base of every event and command payload: frozen, unknown fields ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: CloudEvents ``type``, e.g. ``ar.invoice.issued.v1``.
    TYPE: ClassVar[str]
    #: The topic this type travels on.
    TOPIC: ClassVar[Topic]

    client_id: ClientId


# --------------------------------------------------------------------------------------------------
# Shared value types
# --------------------------------------------------------------------------------------------------


class Person(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(min_length=1, max_length=200)
    email: EmailStr


class ContactRole(StrEnum):
    BILLING = "billing"
    PRIMARY = "primary"
    TECHNICAL = "technical"
    OTHER = "other"


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    phone: str | None = Field(default=None, max_length=40)
    role: ContactRole = ContactRole.BILLING


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


class NotificationPreferences(BaseModel):
    """How the client wants to hear from us."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    channels: tuple[Channel, ...] = (Channel.EMAIL,)
    webhook_url: str | None = Field(default=None, max_length=2000)
    payment_receipts: JsonBool = False


class EarlyPaymentDiscount(BaseModel):
    """e.g. 2% if paid within 10 days of the issue date: ``rate_bp=200, days=10``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    rate_bp: int = Field(gt=0, lt=10_000, description="Discount in basis points (200 = 2%)")
    days: int = Field(gt=0, le=365, description="Days after the issue date the discount stays available")
    until: date = Field(description="Last day (inclusive) a payment earns the discount")
    amount: Money = Field(description="The discount when the whole invoice is paid in the window")


class InvoiceLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    description: str
    quantity: int = Field(gt=0)
    unit_price_minor: int = Field(gt=0)
    tax_rate_bp: int = Field(ge=0, le=10_000)
    net: Money
    tax: Money


class ClientProfile(Payload):
    """The full client snapshot carried by ClientRegistered and ClientUpdated (event-carried state)."""

    external_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=300)
    segment: str = Field(min_length=1, max_length=64, examples=["smb", "enterprise", "high_risk"])
    tags: tuple[str, ...] = ()
    account_manager: Person | None = None
    contacts: tuple[Contact, ...] = Field(min_length=1)
    language: LanguageTag = "en"
    time_zone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Paris")
    country: CountryCode = "US"
    payment_terms_days: int = Field(default=30, ge=0, le=365)
    credit_limit: Money | None = None
    preferences: NotificationPreferences = NotificationPreferences()


# --------------------------------------------------------------------------------------------------
# ar.invoice.events
# --------------------------------------------------------------------------------------------------


class ClientRegistered(ClientProfile):
    TYPE = "ar.client.registered.v1"
    TOPIC = Topic.INVOICE_EVENTS


class ClientUpdated(ClientProfile):
    TYPE = "ar.client.updated.v1"
    TOPIC = Topic.INVOICE_EVENTS


class InvoiceIssued(Payload):
    TYPE = "ar.invoice.issued.v1"
    TOPIC = Topic.INVOICE_EVENTS

    invoice_id: Id
    number: str = Field(min_length=1, max_length=64)
    currency: str = Field(min_length=3, max_length=3)
    issue_date: date
    due_date: date
    lines: tuple[InvoiceLine, ...] = ()
    subtotal: Money
    tax: Money
    total: Money
    amount_due: Money = Field(
        description="What the client still owes after any client credit applied at issue"
    )
    credit_applied: Money | None = None
    early_payment_discount: EarlyPaymentDiscount | None = None
    pay_link: str | None = None


class InvoiceVoided(Payload):
    TYPE = "ar.invoice.voided.v1"
    TOPIC = Topic.INVOICE_EVENTS

    invoice_id: Id
    number: str
    reason: str | None = None
    voided_at: AwareDatetime


class CreditNoteIssued(Payload):
    TYPE = "ar.credit_note.issued.v1"
    TOPIC = Topic.INVOICE_EVENTS

    credit_note_id: Id
    invoice_id: Id
    amount: PositiveMoney
    reason: str | None = None
    amount_due_after: Money
    issued_at: AwareDatetime


class InvoicePaymentApplied(Payload):
    TYPE = "ar.invoice.payment_applied.v1"
    TOPIC = Topic.INVOICE_EVENTS

    payment_id: Id
    invoice_id: Id
    amount: PositiveMoney = Field(description="Cash applied to this invoice")
    discount: Money | None = Field(default=None, description="Early-payment discount granted with it")
    amount_due_after: Money
    applied_at: AwareDatetime


class InvoicePaid(Payload):
    TYPE = "ar.invoice.paid.v1"
    TOPIC = Topic.INVOICE_EVENTS

    invoice_id: Id
    number: str
    total: Money
    due_date: date
    paid_at: AwareDatetime
    days_late: int = Field(description="Days paid after the due date; negative when early")


class ReopenReason(StrEnum):
    REFUND = "refund"
    CHARGEBACK = "chargeback"
    DISPUTE_REJECTED = "dispute_rejected"
    OTHER = "other"


class InvoiceReopened(Payload):
    TYPE = "ar.invoice.reopened.v1"
    TOPIC = Topic.INVOICE_EVENTS

    invoice_id: Id
    number: str
    due_date: date
    amount_due_after: Money
    reason: ReopenReason
    payment_id: Id | None = None
    reopened_at: AwareDatetime


class DisputeReason(StrEnum):
    BILLING_ERROR = "billing_error"
    WRONG_CONTACT = "wrong_contact"
    TECHNICAL = "technical"
    SERVICE_QUALITY = "service_quality"
    CASH_FLOW = "cash_flow"
    OTHER = "other"


class DisputeOpened(Payload):
    TYPE = "ar.dispute.opened.v1"
    TOPIC = Topic.INVOICE_EVENTS

    dispute_id: Id
    invoice_id: Id
    reason: DisputeReason
    note: str | None = None
    amount: Money | None = Field(
        default=None, description="Disputed amount; the whole amount due when absent"
    )
    opened_at: AwareDatetime


class DisputeOutcome(StrEnum):
    UPHELD = "upheld"
    REJECTED = "rejected"


class DisputeResolved(Payload):
    TYPE = "ar.dispute.resolved.v1"
    TOPIC = Topic.INVOICE_EVENTS

    dispute_id: Id
    invoice_id: Id
    outcome: DisputeOutcome
    credit_note_id: Id | None = None
    note: str | None = None
    resolved_at: AwareDatetime


class LateFeeCharged(Payload):
    TYPE = "ar.late_fee.charged.v1"
    TOPIC = Topic.INVOICE_EVENTS

    fee_id: Id
    invoice_id: Id = Field(description="The invoice the fee is charged on")
    amount: PositiveMoney
    amount_due_after: Money
    charged_at: AwareDatetime


# --------------------------------------------------------------------------------------------------
# ar.payment.events
# --------------------------------------------------------------------------------------------------


class PaymentMethod(StrEnum):
    CARD = "card"
    DIRECT_DEBIT = "direct_debit"
    TRANSFER = "transfer"
    CHECK = "check"
    CASH = "cash"
    OTHER = "other"


class PaymentReceived(Payload):
    TYPE = "ar.payment.received.v1"
    TOPIC = Topic.PAYMENT_EVENTS

    payment_id: Id
    amount: PositiveMoney
    method: PaymentMethod
    processor: str = Field(description="stripe, a standard-webhooks account name, or manual")
    reference: str | None = Field(default=None, description="The processor's id for the payment")
    invoice_ids: tuple[Id, ...] = Field(default=(), description="Invoices the payer named, if any")
    received_at: AwareDatetime


class FailureKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"


class PaymentFailed(Payload):
    TYPE = "ar.payment.failed.v1"
    TOPIC = Topic.PAYMENT_EVENTS

    payment_id: Id
    amount: PositiveMoney
    method: PaymentMethod
    processor: str
    reference: str | None = None
    invoice_ids: tuple[Id, ...] = ()
    decline_code: str | None = None
    failure_kind: FailureKind
    retry_possible: bool
    failed_at: AwareDatetime


class PaymentRefunded(Payload):
    TYPE = "ar.payment.refunded.v1"
    TOPIC = Topic.PAYMENT_EVENTS

    refund_id: Id
    payment_id: Id
    amount: PositiveMoney
    reason: str | None = None
    refunded_at: AwareDatetime


class ChargebackOpened(Payload):
    TYPE = "ar.chargeback.opened.v1"
    TOPIC = Topic.PAYMENT_EVENTS

    chargeback_id: Id
    payment_id: Id
    amount: PositiveMoney
    reason: str | None = None
    opened_at: AwareDatetime


class ChargebackOutcome(StrEnum):
    MERCHANT_WON = "merchant_won"
    CLIENT_WON = "client_won"


class ChargebackClosed(Payload):
    TYPE = "ar.chargeback.closed.v1"
    TOPIC = Topic.PAYMENT_EVENTS

    chargeback_id: Id
    payment_id: Id
    amount: PositiveMoney
    outcome: ChargebackOutcome = Field(
        description="merchant_won: the money stays with us and the payment counts again; "
        "client_won: the money went back to the client and the invoice stays reopened"
    )
    closed_at: AwareDatetime


# --------------------------------------------------------------------------------------------------
# ar.dunning.events
# --------------------------------------------------------------------------------------------------


class DunningState(StrEnum):
    CURRENT = "current"
    REMINDING = "reminding"
    MANUAL_FOLLOWUP = "manual_followup"
    AGENCY_WARNING = "agency_warning"
    IN_COLLECTIONS = "in_collections"
    RESOLVED = "resolved"
    PAUSED = "paused"


class PauseReason(StrEnum):
    DISPUTE = "dispute"
    PROMISE_TO_PAY = "promise_to_pay"
    PAYMENT_PLAN = "payment_plan"
    HOLD = "hold"


class SenderKind(StrEnum):
    AR_MAILBOX = "ar_mailbox"
    ACCOUNT_MANAGER = "account_manager"


class Sender(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: SenderKind
    name: str
    email: EmailStr


class StatementLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    invoice_id: Id
    number: str
    issue_date: date | None = None
    due_date: date
    amount_due: Money
    total: Money | None = None
    days_overdue: int = Field(description="Days past due at the snapshot date; negative before due")
    disputed: bool = False


class StatementSnapshot(BaseModel):
    """What a consolidated message shows: every open invoice of the client and totals per currency."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    as_of: date
    invoices: tuple[StatementLine, ...]
    totals: tuple[Money, ...] = Field(description="Open balance per currency")
    overdue_totals: tuple[Money, ...] = Field(description="Overdue, undisputed balance per currency")
    oldest_overdue_invoice_id: Id | None = None
    pay_link: str | None = None


class CaseRef(Payload):
    """Fields shared by every event about one dunning case."""

    case_id: Id
    cycle: int = Field(ge=1, description="Starts at 1; a new overdue after resolution opens the next cycle")


class DunningCaseOpened(CaseRef):
    TYPE = "ar.dunning.case_opened.v1"
    TOPIC = Topic.DUNNING_EVENTS

    policy: str
    policy_version: int = Field(ge=1)
    overdue_totals: tuple[Money, ...] = ()
    opened_at: AwareDatetime


class MessageRequest(CaseRef):
    """Shared by ReminderRequested and AgencyWarningIssued: all a message to the client needs."""

    notification_key: str = Field(description="Deterministic: one message per (case, step, cycle)")
    step: int = Field(ge=0, description="Index of the policy step")
    level: int = Field(ge=1, description="Reminder level within the cycle (1 = first message)")
    template: str = Field(examples=["overdue-1"])
    language: LanguageTag
    sender: Sender
    recipients: tuple[Person, ...] = Field(min_length=1)
    channels: tuple[Channel, ...] = (Channel.EMAIL,)
    webhook_url: str | None = None
    statement: StatementSnapshot
    requested_at: AwareDatetime


class ReminderRequested(MessageRequest):
    TYPE = "ar.dunning.reminder_requested.v1"
    TOPIC = Topic.DUNNING_EVENTS


class AgencyWarningIssued(MessageRequest):
    TYPE = "ar.dunning.agency_warning_issued.v1"
    TOPIC = Topic.DUNNING_EVENTS

    deadline: date = Field(description="After this date the debt goes to the collections agency")


class TaskKind(StrEnum):
    POLICY_STEP = "policy_step"
    WRONG_CONTACT = "wrong_contact"
    BROKEN_PROMISE = "broken_promise"
    MISSED_INSTALLMENT = "missed_installment"


class ManualTaskCreated(CaseRef):
    TYPE = "ar.dunning.manual_task_created.v1"
    TOPIC = Topic.DUNNING_EVENTS

    task_id: Id
    notification_key: str = Field(description="Deterministic key for the assignee notification")
    kind: TaskKind
    step: int | None = None
    assignee: Person | None = Field(default=None, description="The client's account manager, if any")
    queue: str | None = Field(default=None, description="A team queue when no person is assigned")
    priority: int = Field(ge=0, description="Higher first; see dunning-svc README for the formula")
    sla_due_at: AwareDatetime | None = None
    client_name: str | None = None
    overdue_totals: tuple[Money, ...] = ()
    note: str | None = None
    case_url: str | None = None
    language: LanguageTag = "en"
    created_at: AwareDatetime


class TaskOutcome(StrEnum):
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    PROMISE_TO_PAY = "promise_to_pay"
    DISPUTE = "dispute"
    PAYMENT_PLAN = "payment_plan"
    WRONG_CONTACT = "wrong_contact"
    SKIP = "skip"
    SLA_EXPIRED = "sla_expired"


class ManualTaskCompleted(CaseRef):
    TYPE = "ar.dunning.manual_task_completed.v1"
    TOPIC = Topic.DUNNING_EVENTS

    task_id: Id
    outcome: TaskOutcome
    note: str | None = None
    completed_by: str | None = None
    completed_at: AwareDatetime


class AgencyHandoffRequested(CaseRef):
    TYPE = "ar.dunning.agency_handoff_requested.v1"
    TOPIC = Topic.DUNNING_EVENTS

    step: int
    statement: StatementSnapshot
    requested_at: AwareDatetime


class DunningPaused(CaseRef):
    TYPE = "ar.dunning.paused.v1"
    TOPIC = Topic.DUNNING_EVENTS

    reason: PauseReason
    until: date | None = None
    note: str | None = None
    paused_at: AwareDatetime


class DunningResumed(CaseRef):
    TYPE = "ar.dunning.resumed.v1"
    TOPIC = Topic.DUNNING_EVENTS

    previous_reason: PauseReason
    why: str = Field(description="e.g. resumed_by_ops, promise_broken, dispute_rejected, hold_expired")
    resumed_at: AwareDatetime


class PromiseToPayRecorded(CaseRef):
    TYPE = "ar.dunning.promise_to_pay_recorded.v1"
    TOPIC = Topic.DUNNING_EVENTS

    promise_id: Id
    promised_date: date
    amount: PositiveMoney
    grace_days: int = Field(ge=0)
    recorded_at: AwareDatetime


class PromiseToPayBroken(CaseRef):
    TYPE = "ar.dunning.promise_to_pay_broken.v1"
    TOPIC = Topic.DUNNING_EVENTS

    promise_id: Id
    promised_date: date
    amount: Money
    paid: Money
    broken_at: AwareDatetime


class Installment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    due_date: IsoDate
    amount: PositiveMoney


class PaymentPlanAgreed(CaseRef):
    TYPE = "ar.dunning.payment_plan_agreed.v1"
    TOPIC = Topic.DUNNING_EVENTS

    plan_id: Id
    installments: tuple[Installment, ...] = Field(min_length=1)
    grace_days: int = Field(ge=0)
    agreed_at: AwareDatetime


class InstallmentMissed(CaseRef):
    TYPE = "ar.dunning.installment_missed.v1"
    TOPIC = Topic.DUNNING_EVENTS

    plan_id: Id
    installment: int = Field(ge=0, description="Index in the plan")
    due_date: date
    amount: Money
    paid: Money
    missed_at: AwareDatetime


class ResolutionReason(StrEnum):
    PAID = "paid"
    BELOW_MINIMUM = "below_minimum"
    CREDITED = "credited"
    VOIDED = "voided"
    DISPUTED = "disputed"


class DunningResolved(CaseRef):
    TYPE = "ar.dunning.resolved.v1"
    TOPIC = Topic.DUNNING_EVENTS

    reason: ResolutionReason
    previous_state: DunningState
    was_in_collections: bool = Field(description="True: tell the agency to stop (the debt was handed off)")
    resolved_at: AwareDatetime


# --------------------------------------------------------------------------------------------------
# ar.dunning.commands (imperative; produced by ops with Kafka tooling or the CLI)
# --------------------------------------------------------------------------------------------------


class Command(Payload):
    requested_by: str | None = Field(default=None, description="Who asked, for the case timeline")
    note: str | None = None


class PauseDunning(Command):
    TYPE = "ar.dunning.command.pause.v1"
    TOPIC = Topic.DUNNING_COMMANDS

    reason: Literal["hold"] = "hold"
    until: date | None = Field(default=None, description="Resume by itself after this date")


class ResumeDunning(Command):
    TYPE = "ar.dunning.command.resume.v1"
    TOPIC = Topic.DUNNING_COMMANDS


class EscalateNow(Command):
    TYPE = "ar.dunning.command.escalate_now.v1"
    TOPIC = Topic.DUNNING_COMMANDS


class RecordPromiseToPay(Command):
    TYPE = "ar.dunning.command.record_promise_to_pay.v1"
    TOPIC = Topic.DUNNING_COMMANDS

    promised_date: date
    amount: PositiveMoney
    grace_days: int | None = Field(default=None, ge=0, le=60)


class AgreePaymentPlan(Command):
    TYPE = "ar.dunning.command.agree_payment_plan.v1"
    TOPIC = Topic.DUNNING_COMMANDS

    installments: tuple[Installment, ...] = Field(min_length=1, max_length=120)
    grace_days: int | None = Field(default=None, ge=0, le=60)


class AssignCollector(Command):
    TYPE = "ar.dunning.command.assign_collector.v1"
    TOPIC = Topic.DUNNING_COMMANDS

    collector: Person


# --------------------------------------------------------------------------------------------------
# ar.notify.events
# --------------------------------------------------------------------------------------------------


class NotificationSent(Payload):
    TYPE = "ar.notify.sent.v1"
    TOPIC = Topic.NOTIFY_EVENTS

    notification_id: Id
    notification_key: str
    channel: Channel
    template: str
    recipient: str = Field(description="Email address or webhook URL")
    case_id: Id | None = None
    cycle: int | None = None
    step: int | None = None
    message_id: str | None = None
    source_event_id: str
    sent_at: AwareDatetime


class NotificationFailed(Payload):
    TYPE = "ar.notify.failed.v1"
    TOPIC = Topic.NOTIFY_EVENTS

    notification_id: Id
    notification_key: str
    channel: Channel
    template: str
    recipient: str
    case_id: Id | None = None
    cycle: int | None = None
    step: int | None = None
    permanent: bool = Field(
        description="True for a bounce or a refused address: dunning opens a wrong-contact task"
    )
    reason: str
    error_code: str | None = None
    source_event_id: str
    failed_at: AwareDatetime


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

ALL_TYPES: tuple[type[Payload], ...] = (
    ClientRegistered, ClientUpdated, InvoiceIssued, InvoiceVoided, CreditNoteIssued, InvoicePaymentApplied,
    InvoicePaid, InvoiceReopened, DisputeOpened, DisputeResolved, LateFeeCharged,
    PaymentReceived, PaymentFailed, PaymentRefunded, ChargebackOpened, ChargebackClosed,
    DunningCaseOpened, ReminderRequested, ManualTaskCreated, ManualTaskCompleted, AgencyWarningIssued,
    AgencyHandoffRequested, DunningPaused, DunningResumed, PromiseToPayRecorded, PromiseToPayBroken,
    PaymentPlanAgreed, InstallmentMissed, DunningResolved,
    PauseDunning, ResumeDunning, EscalateNow, RecordPromiseToPay, AgreePaymentPlan, AssignCollector,
    NotificationSent, NotificationFailed,
)  # fmt: skip

EVENT_TYPES: dict[str, type[Payload]] = {cls.TYPE: cls for cls in ALL_TYPES}


def payload_class(type_name: str) -> type[Payload] | None:
    """The model for a CloudEvents type, or None for a type this build does not know."""
    return EVENT_TYPES.get(type_name)


def types_on(topic: Topic) -> tuple[type[Payload], ...]:
    return tuple(cls for cls in ALL_TYPES if cls.TOPIC is topic)
