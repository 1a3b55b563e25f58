"""Immutable values of the dunning domain: the client's ledger snapshot, the case, and a decision."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

from ar_events.events import (
    ClientProfile,
    ContactRole,
    DunningState,
    PauseReason,
    Payload,
    Person,
    Sender,
    SenderKind,
)
from dunning_svc.domain.calendar import BusinessCalendar
from dunning_svc.domain.policy import Policy
from dunning_svc.domain.trusted import maker

_make_person = maker(Person)
T = TypeVar("T")

_CASE_NAMESPACE = uuid.UUID("7b0c3f0e-4d8f-4f57-9a53-2b6c2f4d9e11")


def case_id_for(client_id: str) -> str:
    """One case per client, with an id derived from the client id so every replica agrees on it."""
    return "case_" + uuid.uuid5(_CASE_NAMESPACE, client_id).hex[:20]


@dataclass(frozen=True, slots=True)
class OpenInvoice:
    """An invoice as the dunning projection knows it (amounts in minor units of ``currency``)."""

    invoice_id: str
    number: str
    currency: str
    due_date: date
    amount_due: int
    issue_date: date | None = None
    total: int | None = None
    disputed: bool = False


@dataclass(frozen=True, slots=True)
class Ledger:
    """Everything the domain needs to know about one client, from the projection."""

    client_id: str
    profile: ClientProfile | None = None
    invoices: tuple[OpenInvoice, ...] = ()
    avg_payment_delay: float | None = None
    pay_link: str | None = None

    def open_balances(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for inv in self.invoices:
            if inv.amount_due > 0:
                out[inv.currency] = out.get(inv.currency, 0) + inv.amount_due
        return out

    def recipients(self) -> tuple[Person, ...]:
        """The client's billing contacts; the primary ones, then anyone, when no billing contact is known."""
        if self.profile is None:
            return ()
        return _recipients(self.profile)


def _recipients(profile: ClientProfile) -> tuple[Person, ...]:
    contacts = profile.contacts
    if len(contacts) == 1:  # the common case: whatever its role, the one contact is the recipient
        c = contacts[0]
        return (_person(c.name, c.email),)
    for role in (ContactRole.BILLING, ContactRole.PRIMARY):
        chosen = tuple(c for c in contacts if c.role == role)
        if chosen:
            break
    else:
        chosen = contacts
    # the addresses were validated with the profile: build the values without validating them again
    return tuple(_person(c.name, c.email) for c in chosen)


@lru_cache(maxsize=16_384)
def _person(name: str, email: str) -> Person:
    """Person is frozen: equal contacts share one value."""
    return _make_person(name=name, email=email)


@dataclass(frozen=True, slots=True)
class Pause:
    reason: PauseReason
    since: datetime
    #: hold: resume after this date; promise: the promised date (grace applies)
    until: date | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Promise:
    promise_id: str
    promised_date: date
    currency: str
    amount: int
    grace_days: int
    recorded_at: datetime
    paid: int = 0

    @property
    def deadline(self) -> date:
        return self.promised_date + timedelta(days=self.grace_days)


@dataclass(frozen=True, slots=True)
class PlanInstallment:
    due_date: date
    amount: int


@dataclass(frozen=True, slots=True)
class Plan:
    """A payment plan in one currency; installment ``i`` is met when the cumulative payments since the
    agreement reach the cumulative schedule by its due date plus grace."""

    plan_id: str
    currency: str
    installments: tuple[PlanInstallment, ...]
    grace_days: int
    agreed_at: datetime
    paid: int = 0
    checked: int = 0  # installments already verified as met

    def deadline(self, index: int) -> date:
        return self.installments[index].due_date + timedelta(days=self.grace_days)

    def required_through(self, index: int) -> int:
        return sum(i.amount for i in self.installments[: index + 1])


@dataclass(frozen=True, slots=True)
class BlockingTask:
    """The open manual task of a policy step: it holds back the steps behind it."""

    task_id: str
    step: int
    sla_due_at: datetime | None


@dataclass(frozen=True, slots=True)
class DunningCase:
    """One client's dunning case. ``stage`` is the escalation reached in the cycle; ``state`` adds
    pause and resolution on top of it."""

    case_id: str
    client_id: str
    state: DunningState = DunningState.CURRENT
    stage: DunningState = DunningState.CURRENT
    cycle: int = 0
    level: int = 0
    #: highest policy step index reached in this cycle (-1: none); steps only ever go up
    reached_step: int = -1
    fired_steps: tuple[int, ...] = ()
    policy_name: str | None = None
    policy_version: int | None = None
    opened_at: datetime | None = None
    pause: Pause | None = None
    promise: Promise | None = None
    plan: Plan | None = None
    blocking_task: BlockingTask | None = None
    wrong_contact_task: str | None = None
    last_message_at: datetime | None = None
    escalate_pending: bool = False
    escalation_cause: str | None = None
    agency_deadline: date | None = None
    #: invoices a collector reported as disputed (excluded until resumed or the dispute is resolved)
    local_disputes: frozenset[str] = frozenset()
    collector: Person | None = None
    task_seq: int = 0

    @property
    def is_open(self) -> bool:
        return self.state not in _CLOSED

    @classmethod
    def new(cls, client_id: str) -> DunningCase:
        return cls(case_id=case_id_for(client_id), client_id=client_id)


_CLOSED = frozenset({DunningState.CURRENT, DunningState.RESOLVED})


def make_evolver(cls: type[T]) -> Callable[..., T]:
    """``dataclasses.replace`` for a frozen dataclass without ``__post_init__``, minus its generic walk over
    the fields (it ran on every scheduler step and every projected event): straight-line code generated once
    from the fields, keyword-only so a wrong name still raises."""
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__: use dataclasses.replace")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    lines = [f"def evolve(c, *, {', '.join(f'{n}=_M' for n in names)}):", "    n = _new(_C)"]
    lines += [f"    _set(n, {n!r}, c.{n} if {n} is _M else {n})" for n in names]
    lines.append("    return n")
    scope: dict[str, Any] = {
        "_M": object(),
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_C": cls,
    }
    exec("\n".join(lines), scope)  # noqa: S102  (our own field names, generated at import)
    fn: Callable[..., T] = scope["evolve"]
    return fn


#: ``evolve(case, **changes)``: a copy of the case with ``changes`` (like ``dataclasses.replace``)
evolve: Callable[..., DunningCase] = make_evolver(DunningCase)


@dataclass(frozen=True, slots=True)
class Context:
    """The pure inputs of a decision besides the case and the time."""

    ledger: Ledger
    #: the policy version the open cycle started with (or the matching one when no cycle is open)
    policy: Policy
    #: the latest version of the policy matching the client now: used when a new cycle opens
    new_cycle_policy: Policy
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    ar_sender: Sender = field(
        default_factory=lambda: Sender(
            kind=SenderKind.AR_MAILBOX, name="Accounts Receivable", email="ar@example.com"
        )
    )
    #: memo of derived values within one decision (the inputs above never change inside a Context)
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False, hash=False)


@dataclass(frozen=True, slots=True)
class Decision:
    case: DunningCase
    emit: tuple[Payload, ...] = ()
    next_action_at: datetime | None = None


class Rejected(ValueError):
    """A command the case cannot take in its current state; carries a reason for the caller (409 / DLQ)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
