"""The per-client dunning state machine (design.md section 5): pure functions of (case, input, context, now).

Every public function returns a :class:`Decision`: the new case, the events to emit (through the outbox)
and when the case next needs the scheduler. Nothing here reads a clock, a database or a broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from ar_events.events import (
    AgencyHandoffRequested,
    AgencyWarningIssued,
    Channel,
    DunningCaseOpened,
    DunningPaused,
    DunningResolved,
    DunningResumed,
    DunningState,
    InstallmentMissed,
    ManualTaskCompleted,
    ManualTaskCreated,
    NotificationFailed,
    PauseReason,
    Payload,
    PaymentPlanAgreed,
    Person,
    PromiseToPayBroken,
    PromiseToPayRecorded,
    ReminderRequested,
    ResolutionReason,
    Sender,
    SenderKind,
    StatementLine,
    StatementSnapshot,
    TaskKind,
    TaskOutcome,
)
from ar_events.events import Installment as InstallmentModel
from ar_events.money import Money
from dunning_svc.domain.balances import Exposure, age, carrying_invoice, entry_date, exposure
from dunning_svc.domain.calendar import next_business_moment
from dunning_svc.domain.model import (
    BlockingTask,
    Context,
    Decision,
    DunningCase,
    Ledger,
    OpenInvoice,
    Pause,
    Plan,
    PlanInstallment,
    Promise,
    Rejected,
    evolve,
)
from dunning_svc.domain.policy import MESSAGE_ACTIONS, Policy, Step, StepAction
from dunning_svc.domain.priority import client_risk, task_priority
from dunning_svc.domain.trusted import maker

_RANK = {
    DunningState.CURRENT: 0,
    DunningState.REMINDING: 1,
    DunningState.MANUAL_FOLLOWUP: 2,
    DunningState.AGENCY_WARNING: 3,
    DunningState.IN_COLLECTIONS: 4,
}
_STAGE_OF = {
    StepAction.REMINDER: DunningState.REMINDING,
    StepAction.MANUAL_TASK: DunningState.MANUAL_FOLLOWUP,
    StepAction.AGENCY_WARNING: DunningState.AGENCY_WARNING,
    StepAction.AGENCY_HANDOFF: DunningState.IN_COLLECTIONS,
}
DEFAULT_WARNING_DEADLINE_DAYS = 10
_DEFAULT_CHANNELS: tuple[Channel, ...] = ReminderRequested.model_fields["channels"].default
#: a wake-up that should never be needed (everything due fires at once); keeps a stuck case from spinning
_SAFETY_DELAY = timedelta(hours=1)


def notification_key(case_id: str, cycle: int, step: int) -> str:
    """One message per (case, cycle, step): notify-svc dedupes on it."""
    return f"{case_id}:{cycle}:{step}"


@dataclass(frozen=True, slots=True)
class TaskCompletion:
    """A person's outcome for a manual task (REST or a command)."""

    task_id: str
    outcome: TaskOutcome
    completed_by: str | None = None
    note: str | None = None
    promised_date: date | None = None
    promised_amount: Money | None = None
    dispute_invoice_ids: tuple[str, ...] = ()
    dispute_reason: str | None = None
    installments: tuple[tuple[date, Money], ...] = ()


# --------------------------------------------------------------------------------------------------
# Public transitions
# --------------------------------------------------------------------------------------------------


def on_tick(case: DunningCase, ctx: Context, now: datetime) -> Decision:
    """Time passed (the scheduler): expire pauses and SLAs, then fire every step that has come due."""
    return _decide(case, [], ctx, now, None)


def tick_fast(case: DunningCase, ctx: Context, now: datetime) -> Decision | None:
    """``on_tick`` for an open case with no pause, promise, plan, blocking task or pending escalation whose
    dunnable balance is alive, when what comes due is at most one reminder; None for every other case (the
    caller then asks ``on_tick``). The decisions are the same: tests/unit/test_fastpath.py compares both paths
    on generated cases and on every tick of the stateful model.

    For such a case ``_expire_timers`` and ``_settle_balance`` change nothing, and after a reminder fires no
    further step can be due (``_candidate`` returns a reminder only when every due step is one, and then the
    last of them), so the loop of ``_fire_due_steps`` ends after one pass: what is left is one exposure, the
    candidate, the message-time check, ``_fire`` and ``next_action_at``.
    """
    if (
        case.pause is not None
        or case.promise is not None
        or case.plan is not None
        or case.blocking_task is not None
        or case.escalate_pending
        or not case.is_open
    ):
        return None
    policy = ctx.policy
    cal = ctx.calendar
    today = cal.local_date(now)
    exp = exposure(ctx.ledger.invoices, policy, today, case.local_disputes)
    if not (exp.has_in_scope if _pre_due_phase(case, policy) else exp.has_overdue):
        return None  # resolution or a dispute pause: the general path
    anchor = exp.anchor
    if anchor is None:
        return Decision(case=case, emit=(), next_action_at=_next_open_step_at(case, ctx, now, policy, exp))
    k = _candidate(case, policy, (today - anchor.due_date).days)
    if k is None:
        return Decision(case=case, emit=(), next_action_at=_next_open_step_at(case, ctx, now, policy, exp))
    step = policy.steps[k]
    if step.action is not StepAction.REMINDER:
        return None  # manual task, warning, handoff: the general path
    profile = ctx.ledger.profile
    if profile is None or not profile.contacts or _message_time(case, policy, ctx, now) > now:
        return Decision(case=case, emit=(), next_action_at=_next_open_step_at(case, ctx, now, policy, exp))
    emit: list[Payload] = []
    case = _fire(case, policy, k, step, ctx, now, emit, exp, anchor)
    return Decision(
        case=case, emit=tuple(emit), next_action_at=_next_open_step_at(case, ctx, now, policy, exp)
    )


def on_ledger_changed(
    case: DunningCase, ctx: Context, now: datetime, cause: ResolutionReason | None = None
) -> Decision:
    """The client's invoices changed (issued, paid, voided, disputed...): resolve, pause or carry on."""
    return _decide(case, [], ctx, now, cause)


def on_payment_applied(case: DunningCase, amount: Money, ctx: Context, now: datetime) -> Decision:
    """Cash reached an invoice: count it towards a promise or plan, then re-evaluate the balance."""
    return _decide(
        count_payment(case, amount.currency, amount.amount_minor), [], ctx, now, ResolutionReason.PAID
    )


def count_payment(case: DunningCase, currency: str, amount_minor: int) -> DunningCase:
    """Add cash applied to the client's invoices to the running promise and payment plan."""
    if case.promise is not None and case.promise.currency == currency:
        case = evolve(case, promise=replace(case.promise, paid=case.promise.paid + amount_minor))
    if case.plan is not None and case.plan.currency == currency:
        case = evolve(case, plan=replace(case.plan, paid=case.plan.paid + amount_minor))
    return case


def on_notification_failed(
    case: DunningCase, failure: NotificationFailed, ctx: Context, now: datetime
) -> Decision:
    """A message bounced for good: open one wrong-contact task for the client (not blocking the ladder)."""
    emit: list[Payload] = []
    if failure.permanent and case.wrong_contact_task is None:
        case = _open_side_task(
            case, ctx, now, TaskKind.WRONG_CONTACT, emit, note=f"{failure.recipient}: {failure.reason}"
        )
    return _decide(case, emit, ctx, now, None)


def pause(
    case: DunningCase, ctx: Context, now: datetime, until: date | None = None, note: str | None = None
) -> Decision:
    """Ops hold: nothing goes out until resumed or, if given, after ``until``."""
    _require_open(case)
    today = ctx.calendar.local_date(now)
    if until is not None and until < today:
        raise Rejected(f"until {until.isoformat()} is in the past")
    emit: list[Payload] = []
    case = evolve(
        case,
        state=DunningState.PAUSED,
        pause=Pause(PauseReason.HOLD, since=now, until=until, note=note),
        promise=None,
        plan=None,
        escalate_pending=False,
    )
    emit.append(_paused_event(case, now))
    return _decide(case, emit, ctx, now, None)


def resume(case: DunningCase, ctx: Context, now: datetime, why: str = "resumed_by_ops") -> Decision:
    """Lift any pause; collector-reported disputes are dropped with it."""
    if case.pause is None:
        raise Rejected(f"the case is not paused (state {case.state.value})")
    emit: list[Payload] = []
    previous = case.pause.reason
    case = _resumed(case, emit, now, previous, why)
    if previous is PauseReason.DISPUTE:
        case = evolve(case, local_disputes=frozenset())
    return _decide(case, emit, ctx, now, None)


def escalate_now(case: DunningCase, ctx: Context, now: datetime) -> Decision:
    """Ops: fire the next step now (still within business hours and the contact gap)."""
    _require_open(case)
    if case.pause is not None:
        raise Rejected(f"the case is paused ({case.pause.reason.value}); resume it first")
    if case.reached_step + 1 >= len(ctx.policy.steps):
        raise Rejected("the case is already at the last step of its policy")
    case = evolve(case, escalate_pending=True, escalation_cause="escalated_by_ops", blocking_task=None)
    return _decide(case, [], ctx, now, None)


def record_promise(
    case: DunningCase,
    ctx: Context,
    now: datetime,
    *,
    promise_id: str,
    promised_date: date,
    amount: Money,
    grace_days: int | None = None,
    completed_by: str | None = None,
) -> Decision:
    """The client promised to pay ``amount`` by ``promised_date``: pause until then plus grace."""
    emit: list[Payload] = []
    case = _record_promise(case, ctx, now, emit, promise_id, promised_date, amount, grace_days, completed_by)
    return _decide(case, emit, ctx, now, None)


def agree_plan(
    case: DunningCase,
    ctx: Context,
    now: datetime,
    *,
    plan_id: str,
    installments: Sequence[tuple[date, Money]],
    grace_days: int | None = None,
    completed_by: str | None = None,
) -> Decision:
    """An installment schedule: paused while each installment is paid by its date plus grace."""
    emit: list[Payload] = []
    case = _agree_plan(case, ctx, now, emit, plan_id, installments, grace_days, completed_by)
    return _decide(case, emit, ctx, now, None)


def assign_collector(case: DunningCase, ctx: Context, now: datetime, collector: Person) -> Decision:
    """Route this client's manual tasks to a named collector instead of the account manager."""
    return _decide(evolve(case, collector=collector), [], ctx, now, None)


def complete_task(case: DunningCase, done: TaskCompletion, ctx: Context, now: datetime) -> Decision:
    """Record a manual task's outcome and let it drive the case (unblock, pause, dispute, plan...)."""
    emit: list[Payload] = []
    if done.outcome is TaskOutcome.DISPUTE:
        known = {i.invoice_id for i in ctx.ledger.invoices if i.amount_due > 0}
        unknown = [i for i in done.dispute_invoice_ids if i not in known]
        if not done.dispute_invoice_ids or unknown:
            raise Rejected(f"dispute needs open invoice ids of this client; unknown: {unknown}")
    if done.outcome is TaskOutcome.PROMISE_TO_PAY and (
        done.promised_date is None or done.promised_amount is None
    ):
        raise Rejected("promise_to_pay needs a date and an amount")
    if done.outcome is TaskOutcome.PAYMENT_PLAN and not done.installments:
        raise Rejected("payment_plan needs installments")
    if done.outcome in (TaskOutcome.PROMISE_TO_PAY, TaskOutcome.PAYMENT_PLAN):
        _require_open(case)
    emit.append(
        _task_completed(case, done.task_id, done.outcome, now, done.completed_by, _outcome_note(done))
    )
    if case.blocking_task is not None and case.blocking_task.task_id == done.task_id:
        case = evolve(case, blocking_task=None)
    if case.wrong_contact_task == done.task_id:
        case = evolve(case, wrong_contact_task=None)
    if done.outcome is TaskOutcome.PROMISE_TO_PAY:
        assert done.promised_date is not None and done.promised_amount is not None
        case = _record_promise(
            case, ctx, now, emit, f"{done.task_id}-ptp", done.promised_date, done.promised_amount, None, None
        )
    elif done.outcome is TaskOutcome.PAYMENT_PLAN:
        case = _agree_plan(case, ctx, now, emit, f"{done.task_id}-plan", done.installments, None, None)
    elif done.outcome is TaskOutcome.DISPUTE:
        case = evolve(case, local_disputes=case.local_disputes | frozenset(done.dispute_invoice_ids))
    elif done.outcome is TaskOutcome.WRONG_CONTACT and case.wrong_contact_task is None:
        case = _open_side_task(case, ctx, now, TaskKind.WRONG_CONTACT, emit, note=done.note)
    return _decide(case, emit, ctx, now, None)


def next_action_at(case: DunningCase, ctx: Context, now: datetime) -> datetime | None:
    """When the scheduler must look at this case again (None: only an event can change anything)."""
    if case.pause is not None:
        return _pause_wakeup(case, ctx)
    if case.blocking_task is not None:
        return case.blocking_task.sla_due_at
    policy = _policy(case, ctx)
    if not policy.steps:
        return None
    if case.is_open:
        return _next_open_step_at(case, ctx, now, policy, _exposure(case, ctx, policy, now))
    cal = ctx.calendar
    first = entry_date(ctx.ledger.invoices, policy, case.local_disputes)
    if first is None:
        return None
    return _not_before_now(case, ctx, now, policy, policy.steps[0], cal.start_of_day(first))


def _next_open_step_at(
    case: DunningCase, ctx: Context, now: datetime, policy: Policy, exp: Exposure
) -> datetime | None:
    """``next_action_at`` for an open case with no pause and no blocking task, under ``policy`` (non-empty),
    given its exposure."""
    cal = ctx.calendar
    anchor = exp.anchor
    k = case.reached_step + 1
    if anchor is None or k >= len(policy.steps):
        return None
    step = policy.steps[k]
    when = now if case.escalate_pending else cal.start_of_day(anchor.due_date + timedelta(days=step.at_days))
    if step.action is StepAction.AGENCY_HANDOFF and case.agency_deadline is not None:
        when = max(when, cal.start_of_day(case.agency_deadline + timedelta(days=1)))
    return _not_before_now(case, ctx, now, policy, step, when)


def _not_before_now(
    case: DunningCase, ctx: Context, now: datetime, policy: Policy, step: Step, when: datetime
) -> datetime | None:
    when = max(when, now)
    if step.action in MESSAGE_ACTIONS:
        if ctx.ledger.profile is None or not ctx.ledger.profile.contacts:
            return None
        when = _message_time(case, policy, ctx, when)
    if when <= now:
        when = now + _SAFETY_DELAY
    return when


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


def _decide(
    case: DunningCase, emit: list[Payload], ctx: Context, now: datetime, cause: ResolutionReason | None
) -> Decision:
    case = _expire_timers(case, ctx, now, emit)
    case = _settle_balance(case, ctx, now, emit, cause)
    case = _fire_due_steps(case, ctx, now, emit)
    return Decision(case=case, emit=tuple(emit), next_action_at=next_action_at(case, ctx, now))


def _policy(case: DunningCase, ctx: Context) -> Policy:
    return ctx.policy if case.is_open else ctx.new_cycle_policy


def _exposure(case: DunningCase, ctx: Context, policy: Policy, now: datetime) -> Exposure:
    key = ("exposure", policy.name, policy.version, case.local_disputes, now)
    found = ctx.memo.get(key)
    if isinstance(found, Exposure):
        return found
    exp = exposure(ctx.ledger.invoices, policy, ctx.calendar.local_date(now), case.local_disputes)
    ctx.memo[key] = exp
    return exp


def _require_open(case: DunningCase) -> None:
    if not case.is_open:
        raise Rejected(f"no open dunning case for client {case.client_id} (state {case.state.value})")


def _pre_due_phase(case: DunningCase, policy: Policy) -> bool:
    """Only pre-due steps fired so far: the cycle lives on the upcoming balance, not the overdue one."""
    return all(policy.steps[k].at_days < 0 for k in case.fired_steps if k < len(policy.steps))


def _expire_timers(case: DunningCase, ctx: Context, now: datetime, emit: list[Payload]) -> DunningCase:
    today = ctx.calendar.local_date(now)
    pause = case.pause
    if (
        pause is not None
        and pause.reason is PauseReason.HOLD
        and pause.until is not None
        and today > pause.until
    ):
        case = _resumed(case, emit, now, PauseReason.HOLD, "hold_expired")
    promise = case.promise
    if promise is not None and today > promise.deadline:
        if promise.paid >= promise.amount:
            case = evolve(case, promise=None)
            if case.pause is not None and case.pause.reason is PauseReason.PROMISE_TO_PAY:
                case = _resumed(case, emit, now, PauseReason.PROMISE_TO_PAY, "promise_kept")
        else:
            emit.append(
                PromiseToPayBroken(
                    client_id=case.client_id,
                    case_id=case.case_id,
                    cycle=case.cycle,
                    promise_id=promise.promise_id,
                    promised_date=promise.promised_date,
                    amount=Money(amount_minor=promise.amount, currency=promise.currency),
                    paid=Money(amount_minor=promise.paid, currency=promise.currency),
                    broken_at=now,
                )
            )
            case = evolve(case, promise=None)
            if case.pause is not None and case.pause.reason is PauseReason.PROMISE_TO_PAY:
                case = _resumed(case, emit, now, PauseReason.PROMISE_TO_PAY, "promise_broken")
            case = _escalate(case, "promise_broken")
    plan = case.plan
    while plan is not None and plan.checked < len(plan.installments) and today > plan.deadline(plan.checked):
        if plan.paid >= plan.required_through(plan.checked):
            plan = replace(plan, checked=plan.checked + 1)
            continue
        inst = plan.installments[plan.checked]
        paid_towards = (
            max(0, plan.paid - plan.required_through(plan.checked - 1)) if plan.checked else plan.paid
        )
        emit.append(
            InstallmentMissed(
                client_id=case.client_id,
                case_id=case.case_id,
                cycle=case.cycle,
                plan_id=plan.plan_id,
                installment=plan.checked,
                due_date=inst.due_date,
                amount=Money(amount_minor=inst.amount, currency=plan.currency),
                paid=Money(amount_minor=min(paid_towards, inst.amount), currency=plan.currency),
                missed_at=now,
            )
        )
        case = evolve(case, plan=None)
        plan = None
        if case.pause is not None and case.pause.reason is PauseReason.PAYMENT_PLAN:
            case = _resumed(case, emit, now, PauseReason.PAYMENT_PLAN, "installment_missed")
        case = _escalate(case, "installment_missed")
    if plan is not None:
        case = evolve(case, plan=plan)
        if plan.checked >= len(plan.installments):
            case = evolve(case, plan=None)
            if case.pause is not None and case.pause.reason is PauseReason.PAYMENT_PLAN:
                case = _resumed(case, emit, now, PauseReason.PAYMENT_PLAN, "plan_completed")
    task = case.blocking_task
    if task is not None and task.sla_due_at is not None and now >= task.sla_due_at:
        emit.append(_task_completed(case, task.task_id, TaskOutcome.SLA_EXPIRED, now, None, "SLA ran out"))
        case = evolve(case, blocking_task=None)
    return case


def _settle_balance(
    case: DunningCase, ctx: Context, now: datetime, emit: list[Payload], cause: ResolutionReason | None
) -> DunningCase:
    """Resolve a case whose dunnable balance is gone, pause it when all that is left is disputed."""
    if not case.is_open:
        return case
    policy = ctx.policy
    exp = _exposure(case, ctx, policy, now)
    if _pre_due_phase(case, policy):
        alive = exp.has_in_scope
        disputed_only = not alive and bool(exp.in_scope_with_disputes)
    else:
        alive = exp.has_overdue
        disputed_only = not alive and any(
            age(i, ctx.calendar.local_date(now)) >= 1 for i in exp.in_scope_with_disputes
        )
    if alive:
        if case.pause is not None and case.pause.reason is PauseReason.DISPUTE:
            case = _resumed(case, emit, now, PauseReason.DISPUTE, "dispute_resolved")
        return case
    if disputed_only:
        if case.pause is None:
            case = evolve(
                case,
                state=DunningState.PAUSED,
                pause=Pause(PauseReason.DISPUTE, since=now, note="every dunnable invoice is disputed"),
            )
            emit.append(_paused_event(case, now))
        return case
    reason = cause or ResolutionReason.PAID
    if any(v > 0 for v in exp.overdue.values()):
        reason = ResolutionReason.BELOW_MINIMUM
    emit.append(
        DunningResolved(
            client_id=case.client_id,
            case_id=case.case_id,
            cycle=case.cycle,
            reason=reason,
            previous_state=case.state,
            was_in_collections=case.stage is DunningState.IN_COLLECTIONS,
            resolved_at=now,
        )
    )
    return evolve(
        case,
        state=DunningState.RESOLVED,
        stage=DunningState.CURRENT,
        reached_step=-1,
        fired_steps=(),
        pause=None,
        promise=None,
        plan=None,
        blocking_task=None,
        escalate_pending=False,
        escalation_cause=None,
        agency_deadline=None,
    )


def _fire_due_steps(case: DunningCase, ctx: Context, now: datetime, emit: list[Payload]) -> DunningCase:
    cal = ctx.calendar
    today = cal.local_date(now)
    for _ in range(len(ctx.policy.steps) + len(ctx.new_cycle_policy.steps) + 1):
        if case.pause is not None:
            break
        if case.blocking_task is not None and not case.escalate_pending:
            break
        policy = _policy(case, ctx)
        exp = _exposure(case, ctx, policy, now)
        anchor = carrying_invoice(exp)
        if anchor is None:
            break
        k = _candidate(case, policy, age(anchor, today))
        if k is None:
            if case.escalate_pending:
                case = _escalation_without_step(case, ctx, now, emit)
            break
        step = policy.steps[k]
        if (
            step.action is StepAction.AGENCY_HANDOFF
            and case.agency_deadline is not None
            and today <= case.agency_deadline
        ):
            break
        if step.action in MESSAGE_ACTIONS:
            if ctx.ledger.profile is None or not ctx.ledger.profile.contacts:
                break
            if _message_time(case, policy, ctx, now) > now:
                break
        if not case.is_open:
            case = _open_cycle(case, ctx, now, emit, exp)
            policy = ctx.new_cycle_policy
        case = _fire(case, policy, k, step, ctx, now, emit, exp, anchor)
    return case


def _candidate(case: DunningCase, policy: Policy, anchor_age: int) -> int | None:
    """The next step to fire: the step matching the carrying invoice's age, never one already reached.

    When several steps are due at once (a late scheduler, an older invoice now carrying the case), stale
    reminders are folded into the latest one; manual tasks, warnings and the handoff are never skipped.
    """
    start = case.reached_step + 1
    steps = policy.steps
    if start >= len(steps):
        return None
    if case.escalate_pending and (steps[start].at_days < 0 or anchor_age >= 1):
        # escalation fires the next step now, but never an overdue step while nothing is overdue yet
        return start
    due = [k for k in range(start, len(steps)) if steps[k].at_days <= anchor_age]
    if not due:
        return None
    for k in due:
        if steps[k].action is not StepAction.REMINDER:
            return k
    return due[-1]


def _message_time(case: DunningCase, policy: Policy, ctx: Context, when: datetime) -> datetime:
    """The earliest moment at or after ``when`` a message may go: contact gap, then business hours."""
    if case.last_message_at is not None:
        when = max(when, case.last_message_at + policy.contact_gap)
    return next_business_moment(when, ctx.calendar, policy.business_start, policy.business_end)


def _open_cycle(
    case: DunningCase, ctx: Context, now: datetime, emit: list[Payload], exp: Exposure
) -> DunningCase:
    policy = ctx.new_cycle_policy
    case = evolve(
        case,
        cycle=case.cycle + 1,
        state=DunningState.REMINDING,
        stage=DunningState.CURRENT,
        level=0,
        reached_step=-1,
        fired_steps=(),
        policy_name=policy.name,
        policy_version=policy.version,
        opened_at=now,
        agency_deadline=None,
    )
    emit.append(
        DunningCaseOpened(
            client_id=case.client_id,
            case_id=case.case_id,
            cycle=case.cycle,
            policy=policy.name,
            policy_version=policy.version,
            overdue_totals=_money_list(exp.overdue),
            opened_at=now,
        )
    )
    return case


def _fire(
    case: DunningCase,
    policy: Policy,
    k: int,
    step: Step,
    ctx: Context,
    now: datetime,
    emit: list[Payload],
    exp: Exposure,
    anchor: OpenInvoice,
) -> DunningCase:
    stage = _STAGE_OF[step.action]
    if _RANK[stage] < _RANK[case.stage]:
        stage = case.stage
    today = ctx.calendar.local_date(now)
    # what firing step k changes in every case (one evolve per step: it copies every field)
    fired: dict[str, Any] = {
        "reached_step": k,
        "fired_steps": (*case.fired_steps, k),
        "stage": stage,
        "state": stage,
        "escalate_pending": False,
        "escalation_cause": None,
    }
    if step.action in MESSAGE_ACTIONS:
        warning = step.action is StepAction.AGENCY_WARNING
        deadline = (
            today + timedelta(days=step.deadline_days or DEFAULT_WARNING_DEADLINE_DAYS) if warning else None
        )
        # one copy of the case for the step, the message and the warning's deadline (evolve copies every field)
        case = evolve(
            case,
            **fired,
            level=case.level + 1,
            last_message_at=now,
            agency_deadline=deadline if warning else case.agency_deadline,
        )
        recipients = ctx.ledger.recipients()
        if not recipients:
            raise ValueError(f"no recipient for client {case.client_id}")  # what validation would say
        profile = ctx.ledger.profile
        prefs = profile.preferences if profile is not None else None
        # every value below is typed and already valid (validated events, policies, the ledger): the
        # message is built directly instead of validated again field by field (the scheduler's hot path)
        common: dict[str, object] = {
            "client_id": case.client_id,
            "case_id": case.case_id,
            "cycle": case.cycle,
            "notification_key": notification_key(case.case_id, case.cycle, k),
            "step": k,
            "level": case.level,
            "template": step.template or ("final-notice" if warning else f"reminder-{k}"),
            "language": _language(ctx.ledger),
            "sender": _sender(case, step, ctx),
            "recipients": recipients,
            "channels": prefs.channels if prefs is not None else _DEFAULT_CHANNELS,
            "webhook_url": prefs.webhook_url if prefs is not None else None,
            "statement": statement(ctx.ledger, exp, today, case.local_disputes),
            "requested_at": now,
        }
        if warning:
            common["deadline"] = deadline
            emit.append(_make_warning(**common))
        else:
            emit.append(_make_reminder(**common))
        return case
    case = evolve(case, **fired)
    if step.action is StepAction.MANUAL_TASK:
        task_id, case = _next_task_id(case)
        sla_due = now + step.sla if step.sla is not None else None
        case = evolve(case, blocking_task=BlockingTask(task_id=task_id, step=k, sla_due_at=sla_due))
        emit.append(
            _task_created(case, ctx, now, task_id, TaskKind.POLICY_STEP, step, k, sla_due, exp, anchor, None)
        )
    else:
        emit.append(
            AgencyHandoffRequested(
                client_id=case.client_id,
                case_id=case.case_id,
                cycle=case.cycle,
                step=k,
                statement=statement(ctx.ledger, exp, today, case.local_disputes),
                requested_at=now,
            )
        )
    return case


def _escalate(case: DunningCase, cause: str) -> DunningCase:
    if not case.is_open:
        return case
    return evolve(case, escalate_pending=True, escalation_cause=cause, blocking_task=None)


def _escalation_without_step(
    case: DunningCase, ctx: Context, now: datetime, emit: list[Payload]
) -> DunningCase:
    """Escalating past the last step: a person has to look at it."""
    kinds = {"promise_broken": TaskKind.BROKEN_PROMISE, "installment_missed": TaskKind.MISSED_INSTALLMENT}
    kind = kinds.get(case.escalation_cause or "")
    case = evolve(case, escalate_pending=False, escalation_cause=None)
    if kind is not None:
        case = _open_side_task(
            case, ctx, now, kind, emit, note="escalation after the last step of the policy"
        )
    return case


def _resumed(
    case: DunningCase, emit: list[Payload], now: datetime, previous: PauseReason, why: str
) -> DunningCase:
    emit.append(
        DunningResumed(
            client_id=case.client_id,
            case_id=case.case_id,
            cycle=max(case.cycle, 1),
            previous_reason=previous,
            why=why,
            resumed_at=now,
        )
    )
    return evolve(case, pause=None, state=case.stage if case.is_open else case.state)


def _paused_event(case: DunningCase, now: datetime) -> DunningPaused:
    assert case.pause is not None
    return DunningPaused(
        client_id=case.client_id,
        case_id=case.case_id,
        cycle=max(case.cycle, 1),
        reason=case.pause.reason,
        until=case.pause.until,
        note=case.pause.note,
        paused_at=now,
    )


def _pause_wakeup(case: DunningCase, ctx: Context) -> datetime | None:
    cal = ctx.calendar
    times: list[datetime] = []
    pause = case.pause
    if pause is not None and pause.reason is PauseReason.HOLD and pause.until is not None:
        times.append(cal.start_of_day(pause.until + timedelta(days=1)))
    if case.promise is not None:
        times.append(cal.start_of_day(case.promise.deadline + timedelta(days=1)))
    if case.plan is not None and case.plan.checked < len(case.plan.installments):
        times.append(cal.start_of_day(case.plan.deadline(case.plan.checked) + timedelta(days=1)))
    if case.blocking_task is not None and case.blocking_task.sla_due_at is not None:
        times.append(case.blocking_task.sla_due_at)
    return min(times) if times else None


def _record_promise(
    case: DunningCase,
    ctx: Context,
    now: datetime,
    emit: list[Payload],
    promise_id: str,
    promised_date: date,
    amount: Money,
    grace_days: int | None,
    completed_by: str | None,
) -> DunningCase:
    _require_open(case)
    if amount.amount_minor <= 0:
        raise Rejected("the promised amount must be positive")
    if promised_date < ctx.calendar.local_date(now):
        raise Rejected(f"promised date {promised_date.isoformat()} is in the past")
    grace = ctx.policy.promise_grace_days if grace_days is None else grace_days
    if case.blocking_task is not None:
        emit.append(
            _task_completed(
                case, case.blocking_task.task_id, TaskOutcome.PROMISE_TO_PAY, now, completed_by, None
            )
        )
        case = evolve(case, blocking_task=None)
    promise = Promise(
        promise_id=promise_id,
        promised_date=promised_date,
        currency=amount.currency,
        amount=amount.amount_minor,
        grace_days=grace,
        recorded_at=now,
    )
    case = evolve(
        case,
        promise=promise,
        plan=None,
        state=DunningState.PAUSED,
        pause=Pause(PauseReason.PROMISE_TO_PAY, since=now, until=promised_date),
        escalate_pending=False,
    )
    emit.append(
        PromiseToPayRecorded(
            client_id=case.client_id,
            case_id=case.case_id,
            cycle=case.cycle,
            promise_id=promise_id,
            promised_date=promised_date,
            amount=amount,
            grace_days=grace,
            recorded_at=now,
        )
    )
    emit.append(_paused_event(case, now))
    return case


def _agree_plan(
    case: DunningCase,
    ctx: Context,
    now: datetime,
    emit: list[Payload],
    plan_id: str,
    installments: Sequence[tuple[date, Money]],
    grace_days: int | None,
    completed_by: str | None,
) -> DunningCase:
    _require_open(case)
    if not installments:
        raise Rejected("a payment plan needs at least one installment")
    currencies = {m.currency for _, m in installments}
    if len(currencies) != 1:
        raise Rejected(f"a payment plan is in one currency, got {sorted(currencies)}")
    if any(m.amount_minor <= 0 for _, m in installments):
        raise Rejected("every installment amount must be positive")
    ordered = sorted(installments, key=lambda x: x[0])
    if ordered[0][0] < ctx.calendar.local_date(now):
        raise Rejected(f"installment date {ordered[0][0].isoformat()} is in the past")
    grace = ctx.policy.plan_grace_days if grace_days is None else grace_days
    if case.blocking_task is not None:
        emit.append(
            _task_completed(
                case, case.blocking_task.task_id, TaskOutcome.PAYMENT_PLAN, now, completed_by, None
            )
        )
        case = evolve(case, blocking_task=None)
    plan = Plan(
        plan_id=plan_id,
        currency=ordered[0][1].currency,
        installments=tuple(PlanInstallment(d, m.amount_minor) for d, m in ordered),
        grace_days=grace,
        agreed_at=now,
    )
    case = evolve(
        case,
        plan=plan,
        promise=None,
        state=DunningState.PAUSED,
        pause=Pause(PauseReason.PAYMENT_PLAN, since=now, until=ordered[-1][0]),
        escalate_pending=False,
    )
    emit.append(
        PaymentPlanAgreed(
            client_id=case.client_id,
            case_id=case.case_id,
            cycle=case.cycle,
            plan_id=plan_id,
            installments=tuple(InstallmentModel(due_date=d, amount=m) for d, m in ordered),
            grace_days=grace,
            agreed_at=now,
        )
    )
    emit.append(_paused_event(case, now))
    return case


def _next_task_id(case: DunningCase) -> tuple[str, DunningCase]:
    seq = case.task_seq + 1
    return f"task_{case.case_id[5:]}_{seq}", evolve(case, task_seq=seq)


def _open_side_task(
    case: DunningCase, ctx: Context, now: datetime, kind: TaskKind, emit: list[Payload], note: str | None
) -> DunningCase:
    task_id, case = _next_task_id(case)
    policy = _policy(case, ctx)
    exp = _exposure(case, ctx, policy, now)
    anchor = carrying_invoice(exp)
    emit.append(_task_created(case, ctx, now, task_id, kind, None, None, None, exp, anchor, note))
    if kind is TaskKind.WRONG_CONTACT:
        case = evolve(case, wrong_contact_task=task_id)
    return case


def _task_created(
    case: DunningCase,
    ctx: Context,
    now: datetime,
    task_id: str,
    kind: TaskKind,
    step: Step | None,
    k: int | None,
    sla_due: datetime | None,
    exp: Exposure,
    anchor: OpenInvoice | None,
    note: str | None,
) -> ManualTaskCreated:
    ledger = ctx.ledger
    profile = ledger.profile
    assignee: Person | None = None
    queue: str | None = None
    spec = step.assignee if step is not None else "account_manager"
    if spec.startswith("queue:"):
        queue = spec.split(":", 1)[1] or _policy(case, ctx).queue
    else:
        assignee = case.collector or (profile.account_manager if profile is not None else None)
        if assignee is None:
            queue = _policy(case, ctx).queue
    today = ctx.calendar.local_date(now)
    anchor_age = age(anchor, today) if anchor is not None else 0
    return ManualTaskCreated(
        client_id=case.client_id,
        case_id=case.case_id,
        cycle=max(case.cycle, 1),
        task_id=task_id,
        notification_key=f"{case.case_id}:{max(case.cycle, 1)}:task:{task_id}",
        kind=kind,
        step=k,
        assignee=assignee,
        queue=queue,
        priority=task_priority(exp.overdue, anchor_age, client_risk(profile, ledger.avg_payment_delay)),
        sla_due_at=sla_due,
        client_name=profile.name if profile is not None else None,
        overdue_totals=_money_list(exp.overdue),
        note=note,
        language=_language(ledger),
        created_at=now,
    )


def _task_completed(
    case: DunningCase, task_id: str, outcome: TaskOutcome, now: datetime, by: str | None, note: str | None
) -> ManualTaskCompleted:
    return ManualTaskCompleted(
        client_id=case.client_id,
        case_id=case.case_id,
        cycle=max(case.cycle, 1),
        task_id=task_id,
        outcome=outcome,
        note=note,
        completed_by=by,
        completed_at=now,
    )


def _outcome_note(done: TaskCompletion) -> str | None:
    parts = [done.note] if done.note else []
    if done.outcome is TaskOutcome.DISPUTE:
        parts.append(
            f"disputed {', '.join(done.dispute_invoice_ids)}: {done.dispute_reason or 'no reason given'}"
        )
    return "; ".join(parts) or None


def _language(ledger: Ledger) -> str:
    return ledger.profile.language if ledger.profile is not None else "en"


def _sender(case: DunningCase, step: Step, ctx: Context) -> Sender:
    if step.sender is SenderKind.ACCOUNT_MANAGER:
        person = case.collector or (ctx.ledger.profile.account_manager if ctx.ledger.profile else None)
        if person is not None:
            return Sender(kind=SenderKind.ACCOUNT_MANAGER, name=person.name, email=person.email)
    return ctx.ar_sender


_make_money = maker(Money)
_make_line = maker(StatementLine)
_make_statement = maker(StatementSnapshot)
_make_reminder = maker(ReminderRequested)
_make_warning = maker(AgencyWarningIssued)


@lru_cache(maxsize=65_536)
def _money(amount: int, currency: str) -> Money:
    # amounts and currencies here come from validated events: build the values without validating again;
    # Money is frozen, so equal amounts share one value (statements repeat the same amounts across a batch)
    return _make_money(amount_minor=amount, currency=currency)


def _money_list(amounts: dict[str, int]) -> tuple[Money, ...]:
    if len(amounts) == 1:  # the common case: one currency
        for c, v in amounts.items():
            return (_money(v, c),) if v > 0 else ()
    return tuple(_money(v, c) for c, v in sorted(amounts.items()) if v > 0)


def _by_due_then_id(i: OpenInvoice) -> tuple[date, str]:
    return (i.due_date, i.invoice_id)


def statement(
    ledger: Ledger, exp: Exposure, today: date, local_disputes: Iterable[str] = ()
) -> StatementSnapshot:
    """The consolidated statement a message shows: every open invoice, totals and overdue totals per currency."""
    disputed_local = local_disputes if isinstance(local_disputes, frozenset) else frozenset(local_disputes)
    live = [i for i in ledger.invoices if i.amount_due > 0]
    if len(live) > 1:
        live.sort(key=_by_due_then_id)
    totals: dict[str, int] = {}
    lines = []
    for i in live:
        cur = i.currency
        totals[cur] = totals.get(cur, 0) + i.amount_due
        lines.append(
            _make_line(
                invoice_id=i.invoice_id,
                number=i.number,
                issue_date=i.issue_date,
                due_date=i.due_date,
                amount_due=_money(i.amount_due, cur),
                total=_money(i.total, cur) if i.total is not None else None,
                days_overdue=(today - i.due_date).days,
                disputed=i.disputed or i.invoice_id in disputed_local,
            )
        )
    anchor = carrying_invoice(exp)
    return _make_statement(
        as_of=today,
        invoices=tuple(lines),
        totals=_money_list(totals),
        overdue_totals=_money_list(exp.overdue),
        oldest_overdue_invoice_id=anchor.invoice_id
        if anchor is not None and age(anchor, today) >= 1
        else None,
        pay_link=ledger.pay_link,
    )
