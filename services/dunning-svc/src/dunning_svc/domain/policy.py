"""Dunning policies as data: which clients a policy matches and the ladder of steps it runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import time, timedelta
from enum import StrEnum

from ar_events.events import ClientProfile, SenderKind


class StepAction(StrEnum):
    REMINDER = "reminder"
    MANUAL_TASK = "manual_task"
    AGENCY_WARNING = "agency_warning"
    AGENCY_HANDOFF = "agency_handoff"


#: Actions that send a message to the client (subject to the contact gap and business hours).
MESSAGE_ACTIONS = frozenset({StepAction.REMINDER, StepAction.AGENCY_WARNING})


@dataclass(frozen=True, slots=True)
class Step:
    """One rung of the ladder, ``at_days`` relative to the carrying invoice's due date."""

    at_days: int
    action: StepAction
    template: str | None = None
    sender: SenderKind = SenderKind.AR_MAILBOX
    #: ``account_manager`` (the case's collector, else the client's account manager) or ``queue:<name>``.
    assignee: str = "account_manager"
    sla: timedelta | None = None
    deadline_days: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyMatch:
    """All given criteria must hold; an empty match is a catch-all."""

    segments: frozenset[str] = frozenset()
    tags_any: frozenset[str] = frozenset()
    #: matches when the open balance in at least one of these currencies reaches the threshold
    open_balance_at_least: tuple[tuple[str, int], ...] = ()
    #: matches when the open balance in every listed currency stays under the threshold
    open_balance_below: tuple[tuple[str, int], ...] = ()
    avg_payment_delay_at_least: float | None = None
    avg_payment_delay_below: float | None = None

    @property
    def is_catch_all(self) -> bool:
        return self == PolicyMatch()


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    version: int
    steps: tuple[Step, ...]
    match: PolicyMatch = field(default_factory=PolicyMatch)
    #: per-currency minimum (minor units) of the dunnable balance; a currency not listed has minimum 1
    min_balance: tuple[tuple[str, int], ...] = ()
    contact_gap: timedelta = timedelta(days=3)
    business_start: time = time(9, 0)
    business_end: time = time(17, 0)
    promise_grace_days: int = 2
    plan_grace_days: int = 3
    queue: str = "collections"
    #: further match rules, any of which also selects the policy
    alternatives: tuple[PolicyMatch, ...] = ()

    def minimum(self, currency: str) -> int:
        for cur, amount in self.min_balance:
            if cur == currency:
                return max(1, amount)
        return 1

    @property
    def first_at(self) -> int:
        return self.steps[0].at_days if self.steps else 1

    @property
    def scope_start_age(self) -> int:
        """Age (days past due) from which an invoice counts for this policy: pre-due steps widen it."""
        return min(self.first_at, 1)


def matches(
    match: PolicyMatch,
    profile: ClientProfile | None,
    open_balances: dict[str, int],
    avg_payment_delay: float | None,
) -> bool:
    """Whether a client (profile, open balance per currency, average days late) fits the match rule."""
    if match.segments and (profile is None or profile.segment not in match.segments):
        return False
    if match.tags_any and (profile is None or not match.tags_any.intersection(profile.tags)):
        return False
    if match.open_balance_at_least and not any(
        open_balances.get(cur, 0) >= amount for cur, amount in match.open_balance_at_least
    ):
        return False
    if match.open_balance_below and not all(
        open_balances.get(cur, 0) < amount for cur, amount in match.open_balance_below
    ):
        return False
    if match.avg_payment_delay_at_least is not None and (
        avg_payment_delay is None or avg_payment_delay < match.avg_payment_delay_at_least
    ):
        return False
    return not (
        match.avg_payment_delay_below is not None
        and avg_payment_delay is not None
        and avg_payment_delay >= match.avg_payment_delay_below
    )


def select_policy(
    policies: Sequence[Policy],
    profile: ClientProfile | None,
    open_balances: dict[str, int],
    avg_payment_delay: float | None,
) -> Policy:
    """The first policy whose match rule fits; the catch-all default otherwise."""
    for policy in policies:
        for rule in (policy.match, *policy.alternatives):
            if matches(rule, profile, open_balances, avg_payment_delay):
                return policy
    raise LookupError("no policy matches and no catch-all default is configured")
