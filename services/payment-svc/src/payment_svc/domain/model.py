"""What a verified webhook means, independent of the processor that sent it.

A processor payload is mapped to a :class:`WebhookEvent`: the processor's event id and type plus zero or more
instructions (a payment in, a failed attempt, a refund, a chargeback opened or closed). Instructions carry
client hints; the handler resolves the client (metadata, then the customer mapping, then the linked payment)
and parks the instruction when none resolves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ar_events.events import ChargebackOutcome, FailureKind, PaymentMethod
from ar_events.money import Money


class PayloadError(ValueError):
    """A verified body that does not hold what its event type promises; names the field (400, nothing stored)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClientHint:
    """How the processor points at our client: an explicit id in metadata, or its own customer id."""

    client_id: str | None = None
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentIn:
    reference: str
    amount: Money
    method: PaymentMethod
    invoice_ids: tuple[str, ...]
    occurred_at: datetime
    hint: ClientHint


@dataclass(frozen=True, slots=True)
class PaymentFailedIn:
    reference: str
    amount: Money
    method: PaymentMethod
    invoice_ids: tuple[str, ...]
    decline_code: str | None
    failure_kind: FailureKind
    retry_possible: bool
    occurred_at: datetime
    hint: ClientHint


@dataclass(frozen=True, slots=True)
class RefundIn:
    """Money given back on a payment. ``cumulative`` means ``amount`` is the total refunded so far."""

    reference: str
    payment_reference: str
    amount: Money
    reason: str | None
    occurred_at: datetime
    hint: ClientHint
    cumulative: bool = False


@dataclass(frozen=True, slots=True)
class ChargebackOpenedIn:
    reference: str
    payment_reference: str
    amount: Money
    reason: str | None
    occurred_at: datetime
    hint: ClientHint


@dataclass(frozen=True, slots=True)
class ChargebackClosedIn:
    reference: str
    payment_reference: str
    amount: Money
    outcome: ChargebackOutcome
    occurred_at: datetime
    hint: ClientHint


Instruction = PaymentIn | PaymentFailedIn | RefundIn | ChargebackOpenedIn | ChargebackClosedIn


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified webhook, understood. No instructions: an event type we acknowledge and ignore."""

    event_id: str
    event_type: str
    instructions: tuple[Instruction, ...] = ()

    @property
    def ignored(self) -> bool:
        return not self.instructions
