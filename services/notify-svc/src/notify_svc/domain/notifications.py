"""Turn incoming events into notification requests: one per (notification key, channel, recipient).

Pure functions of the event and the contact projection; the handler persists what they return.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ar_events.events import (
    AgencyWarningIssued,
    Channel,
    ClientProfile,
    ContactRole,
    InvoiceIssued,
    ManualTaskCreated,
    MessageRequest,
    PaymentReceived,
    SenderKind,
)


class Kind(StrEnum):
    REMINDER = "reminder"
    AGENCY_WARNING = "agency_warning"
    TASK = "task"
    INVOICE = "invoice"
    RECEIPT = "receipt"


@dataclass(frozen=True, slots=True)
class Contact:
    """What notify-svc keeps of a client (the contact projection)."""

    client_id: str
    name: str
    language: str
    country: str
    emails: tuple[tuple[str, str], ...]  # (name, address), billing contacts first
    channels: tuple[Channel, ...]
    webhook_url: str | None
    payment_receipts: bool
    account_manager: tuple[str, str] | None = None

    @classmethod
    def from_profile(cls, p: ClientProfile) -> Contact:
        ordered = sorted(p.contacts, key=lambda c: c.role != ContactRole.BILLING)
        billing = [c for c in ordered if c.role == ContactRole.BILLING] or ordered[:1]
        return cls(
            client_id=p.client_id,
            name=p.name,
            language=p.language,
            country=p.country,
            emails=tuple((c.name, str(c.email)) for c in billing),
            channels=tuple(p.preferences.channels),
            webhook_url=p.preferences.webhook_url,
            payment_receipts=p.preferences.payment_receipts,
            account_manager=(p.account_manager.name, str(p.account_manager.email))
            if p.account_manager
            else None,
        )


@dataclass(frozen=True, slots=True)
class NotificationRequest:
    """One message to one recipient on one channel; ``key`` is the event's notification key."""

    key: str
    channel: Channel
    recipient: str
    recipient_name: str
    client_id: str
    kind: Kind
    template: str
    language: str
    sender_name: str | None
    sender_email: str | None
    sender_kind: str
    payload: dict[str, Any]
    client_name: str
    country: str | None = None
    case_id: str | None = None
    cycle: int | None = None
    step: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A channel that cannot be served (no address, no URL); reported as NotificationFailed at once."""

    key: str
    channel: Channel
    recipient: str
    reason: str
    error_code: str


@dataclass(frozen=True, slots=True)
class Plan:
    requests: tuple[NotificationRequest, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _fan_out(
    *,
    key: str,
    channels: tuple[Channel, ...],
    emails: tuple[tuple[str, str], ...],
    webhook_url: str | None,
    base: dict[str, Any],
) -> Plan:
    requests: list[NotificationRequest] = []
    rejections: list[Rejection] = []
    for channel in dict.fromkeys(channels):  # keep order, drop repeats
        if channel == Channel.EMAIL:
            if not emails:
                rejections.append(Rejection(key, channel, "", "no email address known", "no_recipient"))
            for name, address in dict.fromkeys(emails):
                requests.append(
                    NotificationRequest(
                        key=key, channel=channel, recipient=address.lower(), recipient_name=name, **base
                    )
                )
        elif channel == Channel.WEBHOOK:
            if not webhook_url:
                rejections.append(
                    Rejection(key, channel, "", "webhook channel without a URL", "no_webhook_url")
                )
            else:
                requests.append(
                    NotificationRequest(
                        key=key,
                        channel=channel,
                        recipient=webhook_url,
                        recipient_name=base["client_name"],
                        **base,
                    )
                )
    return Plan(tuple(requests), tuple(rejections))


def plan_message_request(event: MessageRequest, contact: Contact | None) -> Plan:
    """A reminder or agency warning: to every recipient the event names, on the channels it names."""
    kind = Kind.AGENCY_WARNING if isinstance(event, AgencyWarningIssued) else Kind.REMINDER
    base: dict[str, Any] = {
        "client_id": event.client_id,
        "kind": kind,
        "template": event.template,
        "language": event.language,
        "sender_name": event.sender.name,
        "sender_email": str(event.sender.email),
        "sender_kind": event.sender.kind.value,
        "payload": event.model_dump(mode="json"),
        "client_name": contact.name if contact else event.recipients[0].name,
        "country": contact.country if contact else None,
        "case_id": event.case_id,
        "cycle": event.cycle,
        "step": event.step,
    }
    emails = tuple((p.name, str(p.email)) for p in event.recipients)
    return _fan_out(
        key=event.notification_key,
        channels=tuple(event.channels),
        emails=emails,
        webhook_url=event.webhook_url,
        base=base,
    )


def plan_task(event: ManualTaskCreated, contact: Contact | None) -> Plan:
    """A manual task: an email to the assignee; a queue with no person gets nothing from us."""
    if event.assignee is None:
        return Plan()
    base: dict[str, Any] = {
        "client_id": event.client_id,
        "kind": Kind.TASK,
        "template": "task-assigned",
        "language": event.language,
        "sender_name": None,
        "sender_email": None,
        "sender_kind": SenderKind.AR_MAILBOX.value,
        "payload": event.model_dump(mode="json"),
        "client_name": event.client_name or (contact.name if contact else event.client_id),
        "country": contact.country if contact else None,
        "case_id": event.case_id,
        "cycle": event.cycle,
        "step": event.step,
    }
    emails = ((event.assignee.name, str(event.assignee.email)),)
    return _fan_out(
        key=event.notification_key, channels=(Channel.EMAIL,), emails=emails, webhook_url=None, base=base
    )


def _client_base(contact: Contact, kind: Kind, template: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "client_id": contact.client_id,
        "kind": kind,
        "template": template,
        "language": contact.language,
        "sender_name": None,
        "sender_email": None,
        "sender_kind": SenderKind.AR_MAILBOX.value,
        "payload": payload,
        "client_name": contact.name,
        "country": contact.country,
    }


def invoice_notice_key(event: InvoiceIssued) -> str:
    return f"invoice:{event.invoice_id}:issued"


def receipt_key(event: PaymentReceived) -> str:
    return f"payment:{event.payment_id}:receipt"


def plan_invoice_notice(event: InvoiceIssued, contact: Contact | None) -> Plan:
    """An issued invoice: the notice goes to the client's billing contacts on the channels it prefers."""
    key = invoice_notice_key(event)
    if contact is None:
        return Plan(
            rejections=(Rejection(key, Channel.EMAIL, "", "client unknown to notify-svc", "no_contact"),)
        )
    base = _client_base(contact, Kind.INVOICE, "invoice-issued", event.model_dump(mode="json"))
    return _fan_out(
        key=key, channels=contact.channels, emails=contact.emails, webhook_url=contact.webhook_url, base=base
    )


def plan_receipt(event: PaymentReceived, contact: Contact | None) -> Plan:
    """A payment: a receipt only when the client's preferences ask for one."""
    if contact is None or not contact.payment_receipts:
        return Plan()
    base = _client_base(contact, Kind.RECEIPT, "payment-receipt", event.model_dump(mode="json"))
    return _fan_out(
        key=receipt_key(event),
        channels=contact.channels,
        emails=contact.emails,
        webhook_url=contact.webhook_url,
        base=base,
    )


def notification_id(key: str, channel: str, recipient: str) -> str:
    """Deterministic id of a delivery: the same event always maps to the same row."""
    digest = hashlib.sha256(f"{key}\x1f{channel}\x1f{recipient}".encode()).hexdigest()
    return f"ntf_{digest[:26]}"


def message_id(notification: str, generation: int, domain: str) -> str:
    """Deterministic RFC 5322 Message-ID: a resend after a crash carries the same id, so mail clients collapse it."""
    return f"<{notification}.{generation}@{domain}>"
