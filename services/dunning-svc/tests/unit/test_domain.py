"""Scenario tests of the dunning state machine (design.md section 5)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date, time, timedelta

import pytest

from ar_events.events import (
    AgencyHandoffRequested,
    AgencyWarningIssued,
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
    PromiseToPayBroken,
    ReminderRequested,
    SenderKind,
    TaskKind,
    TaskOutcome,
)
from ar_events.money import Money
from dunning_svc import domain as d
from dunning_svc.domain import BusinessCalendar, Decision, DunningCase, Rejected, Step, StepAction
from dunning_svc.domain.calendar import next_business_moment
from dunning_svc.domain.policy import PolicyMatch, select_policy
from dunning_svc.domain.priority import task_priority

from .helpers import at, ctx, inv, ladder_policy, ledger, new_case, profile

DUE = date(2026, 3, 2)  # a Monday


def run_days(case: DunningCase, c: d.Context, start: date, days: int) -> tuple[DunningCase, list[object]]:
    """Tick once a day at 10:00 and collect every emitted event."""
    out: list[object] = []
    for n in range(days):
        dec = d.on_tick(case, c, at(start + timedelta(days=n)))
        case = dec.case
        out.extend(dec.emit)
    return case, out


def of(kind: type, events: list[object]) -> list:
    return [e for e in events if isinstance(e, kind)]


def test_full_ladder_fires_each_step_once_in_order() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, events = run_days(new_case(), c, DUE - timedelta(days=5), 60)
    reminders = of(ReminderRequested, events)
    assert [r.step for r in reminders] == [0, 1, 2]
    assert [r.template for r in reminders] == ["upcoming", "overdue-1", "overdue-2"]
    assert [r.level for r in reminders] == [1, 2, 3]
    assert len(of(DunningCaseOpened, events)) == 1
    assert reminders[0].requested_at.date() == DUE - timedelta(days=3)
    assert reminders[1].requested_at.date() == DUE + timedelta(days=1)
    task = of(ManualTaskCreated, events)[0]
    assert task.kind is TaskKind.POLICY_STEP and task.assignee is not None
    assert task.created_at.date() == DUE + timedelta(days=15)
    # the SLA runs out after 3 days and the ladder goes on
    assert of(ManualTaskCompleted, events)[0].outcome is TaskOutcome.SLA_EXPIRED
    warning = of(AgencyWarningIssued, events)[0]
    assert warning.sender.kind is SenderKind.ACCOUNT_MANAGER and warning.sender.email == "claire@example.com"
    assert warning.deadline == DUE + timedelta(days=40)
    handoff = of(AgencyHandoffRequested, events)[0]
    # the handoff waits for the warning's deadline
    assert handoff.requested_at.date() == DUE + timedelta(days=41)
    assert case.state is DunningState.IN_COLLECTIONS
    assert reminders[1].notification_key == f"{case.case_id}:1:1"


def test_no_reminder_when_paid_before_due() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, events = run_days(new_case(), c, DUE - timedelta(days=10), 5)
    assert events == []
    paid = ctx(ledger(inv("i1", DUE, 0)))
    case, events = run_days(case, paid, DUE - timedelta(days=5), 30)
    assert events == [] and case.state is DunningState.CURRENT


def test_nothing_sent_below_the_currency_minimum() -> None:
    c = ctx(ledger(inv("i1", DUE, 999), inv("i2", DUE, 500, "USD")))
    case, events = run_days(new_case(), c, DUE, 30)
    assert events == []
    assert d.next_action_at(case, c, at(DUE + timedelta(days=30))) is None


def test_minimum_is_per_currency() -> None:
    c = ctx(ledger(inv("i1", DUE, 999), inv("i2", DUE + timedelta(days=2), 5_000, "USD")))
    _, events = run_days(new_case(), c, DUE, 10)
    first = next(r for r in of(ReminderRequested, events) if r.step >= 1)
    # the EUR invoice is below its minimum: the USD one carries the case
    assert first.statement.oldest_overdue_invoice_id == "i2"
    assert {m.currency for m in first.statement.overdue_totals} == {"EUR", "USD"}


def test_disputed_invoices_are_not_dunned() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000, disputed=True)))
    case, events = run_days(new_case(), c, DUE - timedelta(days=5), 40)
    assert events == [] and case.state is DunningState.CURRENT


def test_dispute_of_everything_pauses_and_rejection_resumes() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, _ = run_days(new_case(), c, DUE, 3)
    disputed = ctx(ledger(inv("i1", DUE, 50_000, disputed=True)))
    dec = d.on_ledger_changed(case, disputed, at(DUE + timedelta(days=3)))
    assert dec.case.state is DunningState.PAUSED and dec.case.pause is not None
    assert dec.case.pause.reason is PauseReason.DISPUTE
    assert of(DunningPaused, list(dec.emit))
    case, events = run_days(dec.case, disputed, DUE + timedelta(days=4), 20)
    assert not of(ReminderRequested, events)
    dec = d.on_ledger_changed(case, c, at(DUE + timedelta(days=24)))
    resumed = of(DunningResumed, list(dec.emit))
    assert resumed and resumed[0].why == "dispute_resolved"
    # resumes at the step matching the age (the manual task at 15d), never repeating earlier ones
    assert of(ManualTaskCreated, list(dec.emit))


def test_payment_resolves_from_collections() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, _ = run_days(new_case(), c, DUE, 45)
    assert case.state is DunningState.IN_COLLECTIONS
    dec = d.on_payment_applied(
        case, Money(amount_minor=50_000, currency="EUR"), ctx(ledger()), at(DUE + timedelta(days=46))
    )
    resolved = of(DunningResolved, list(dec.emit))[0]
    assert resolved.was_in_collections and resolved.previous_state is DunningState.IN_COLLECTIONS
    assert dec.case.state is DunningState.RESOLVED and dec.next_action_at is None


def test_new_overdue_after_resolution_opens_a_new_cycle_at_step_one() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, _ = run_days(new_case(), c, DUE, 10)
    case = d.on_ledger_changed(case, ctx(ledger()), at(DUE + timedelta(days=10))).case
    assert case.state is DunningState.RESOLVED
    later = DUE + timedelta(days=30)
    c2 = ctx(ledger(inv("i2", later - timedelta(days=5), 7_000)))
    case, events = run_days(case, c2, later, 3)
    reminders = of(ReminderRequested, events)
    assert [r.step for r in reminders] == [1] and reminders[0].cycle == 2 and reminders[0].level == 1
    assert of(DunningCaseOpened, events)[0].cycle == 2


def test_partial_payment_moving_the_anchor_neither_skips_nor_repeats() -> None:
    old, young = inv("old", DUE, 50_000), inv("young", DUE + timedelta(days=5), 30_000)
    c = ctx(ledger(old, young))
    case, events = run_days(new_case(), c, DUE + timedelta(days=1), 8)  # old is 8 days late: step 2 fired
    assert [r.step for r in of(ReminderRequested, events)] == [1, 2]
    # old is paid: young (4 days late) carries the case; nothing repeats
    c2 = ctx(ledger(replace(old, amount_due=0), young))
    dec = d.on_payment_applied(
        case, Money(amount_minor=50_000, currency="EUR"), c2, at(DUE + timedelta(days=9))
    )
    assert dec.emit == () and dec.case.reached_step == 2
    # next is step 3 (15d) counted on young's due date, not step 1 again and not earlier
    case, events = run_days(dec.case, c2, DUE + timedelta(days=9), 30)
    created = of(ManualTaskCreated, events)
    assert created and created[0].created_at.date() == young.due_date + timedelta(days=15)
    assert all(r.step > 2 for r in of(ReminderRequested, events))


def test_older_anchor_jumps_to_matching_step_never_lower() -> None:
    young = inv("young", DUE, 30_000)
    c = ctx(ledger(young))
    case, _ = run_days(new_case(), c, DUE + timedelta(days=1), 1)
    assert case.reached_step == 1
    reopened = inv("reopened", DUE - timedelta(days=20), 10_000)  # an old invoice reopens (refund)
    c2 = ctx(ledger(young, reopened))
    dec = d.on_ledger_changed(case, c2, at(DUE + timedelta(days=5)))
    # 25 days late: reminders are folded, the manual task at 15d is next and is not skipped
    assert [type(e) for e in dec.emit] == [ManualTaskCreated]
    assert dec.case.reached_step == 3


def test_contact_gap_delays_a_due_message() -> None:
    policy = ladder_policy(gap_days=10)
    c = ctx(ledger(inv("i1", DUE, 50_000)), policy)
    _case, events = run_days(new_case(), c, DUE - timedelta(days=3), 20)
    sent = [r.requested_at for r in of(ReminderRequested, events)]
    assert all(b - a >= timedelta(days=10) for a, b in itertools.pairwise(sent))
    assert len(sent) == 2


def test_messages_wait_for_business_hours_and_holidays() -> None:
    cal = BusinessCalendar(time_zone="Europe/Paris", holidays=frozenset({date(2026, 5, 1)}))
    # Friday 1 May 2026 is a holiday in France; the next business moment is Monday 4 May 09:00 Paris
    when = at(date(2026, 5, 1), 12)
    nxt = next_business_moment(when, cal, time(9), time(17))
    assert nxt.isoformat() == "2026-05-04T07:00:00+00:00"
    policy = replace(ladder_policy(), business_start=time(9), business_end=time(17))
    c = ctx(ledger(inv("i1", date(2026, 4, 30), 50_000), prof=profile(time_zone="Europe/Paris")), policy, cal)
    dec = d.on_tick(new_case(), c, at(date(2026, 5, 1), 8))
    assert dec.emit == () and dec.next_action_at == nxt


def test_manual_step_blocks_until_done() -> None:
    policy = replace(ladder_policy(), steps=(*ladder_policy().steps[:3], Step(15, StepAction.MANUAL_TASK, sla=None),
                                             *ladder_policy().steps[4:]))  # fmt: skip
    c = ctx(ledger(inv("i1", DUE, 50_000)), policy)
    case, events = run_days(new_case(), c, DUE, 60)
    assert case.state is DunningState.MANUAL_FOLLOWUP and not of(AgencyWarningIssued, events)
    assert case.blocking_task is not None
    dec = d.complete_task(
        case,
        d.TaskCompletion(case.blocking_task.task_id, TaskOutcome.NO_ANSWER),
        c,
        at(DUE + timedelta(days=60)),
    )
    assert [type(e) for e in dec.emit] == [ManualTaskCompleted, AgencyWarningIssued]


def test_broken_promise_resumes_and_escalates_at_once() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, _ = run_days(new_case(), c, DUE + timedelta(days=1), 2)
    today = DUE + timedelta(days=3)
    dec = d.record_promise(case, c, at(today), promise_id="p1", promised_date=today + timedelta(days=5),
                           amount=Money(amount_minor=50_000, currency="EUR"))  # fmt: skip
    assert dec.case.state is DunningState.PAUSED and dec.next_action_at == at(today + timedelta(days=8), 0)
    case, events = run_days(dec.case, c, today + timedelta(days=1), 7)
    assert not of(ReminderRequested, events)
    dec = d.on_tick(case, c, at(today + timedelta(days=8)))
    kinds = [type(e) for e in dec.emit]
    assert kinds == [PromiseToPayBroken, DunningResumed, ReminderRequested]
    assert dec.emit[2].step == 2  # type: ignore[attr-defined]


def test_kept_promise_resumes_without_escalation() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000), inv("i2", DUE, 20_000)))
    case, _ = run_days(new_case(), c, DUE, 3)
    today = DUE + timedelta(days=3)
    case = d.record_promise(case, c, at(today), promise_id="p1", promised_date=today + timedelta(days=2),
                            amount=Money(amount_minor=50_000, currency="EUR")).case  # fmt: skip
    c2 = ctx(ledger(inv("i1", DUE, 0), inv("i2", DUE, 20_000)))
    case = d.on_payment_applied(
        case, Money(amount_minor=50_000, currency="EUR"), c2, at(today + timedelta(days=1))
    ).case
    dec = d.on_tick(case, c2, at(today + timedelta(days=5)))
    assert isinstance(dec.emit[0], DunningResumed) and dec.emit[0].why == "promise_kept"
    assert not of(PromiseToPayBroken, list(dec.emit))


def test_missed_installment_escalates() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, _ = run_days(new_case(), c, DUE, 3)
    today = DUE + timedelta(days=3)
    plan = ((today + timedelta(days=7), Money(amount_minor=25_000, currency="EUR")),
            (today + timedelta(days=37), Money(amount_minor=25_000, currency="EUR")))  # fmt: skip
    case = d.agree_plan(case, c, at(today), plan_id="pl1", installments=plan).case
    case = d.on_payment_applied(
        case, Money(amount_minor=25_000, currency="EUR"), c, at(today + timedelta(days=6))
    ).case
    case, events = run_days(case, c, today + timedelta(days=7), 30)
    assert not of(InstallmentMissed, events) and case.state is DunningState.PAUSED
    dec = d.on_tick(case, c, at(today + timedelta(days=41)))
    assert [type(e) for e in dec.emit][:3] == [InstallmentMissed, DunningResumed, ReminderRequested]
    assert dec.emit[2].step == case.reached_step + 1  # type: ignore[attr-defined]


def test_hold_with_until_expires() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, _ = run_days(new_case(), c, DUE, 3)
    case = d.pause(
        case, c, at(DUE + timedelta(days=3)), until=DUE + timedelta(days=20), note="legal review"
    ).case
    case, events = run_days(case, c, DUE + timedelta(days=4), 17)
    assert events == []
    dec = d.on_tick(case, c, at(DUE + timedelta(days=21)))
    assert [type(e) for e in dec.emit] == [DunningResumed, ManualTaskCreated]


def test_commands_rejected_in_wrong_state() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    with pytest.raises(Rejected, match="no open dunning case"):
        d.pause(new_case(), c, at(DUE))
    case, _ = run_days(new_case(), c, DUE, 3)
    with pytest.raises(Rejected, match="not paused"):
        d.resume(case, c, at(DUE + timedelta(days=3)))
    with pytest.raises(Rejected, match="in the past"):
        d.record_promise(case, c, at(DUE + timedelta(days=3)), promise_id="p", promised_date=DUE,
                         amount=Money(amount_minor=1, currency="EUR"))  # fmt: skip


def test_escalate_now_fires_next_step() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, _ = run_days(new_case(), c, DUE + timedelta(days=1), 1)
    dec = d.escalate_now(case, c, at(DUE + timedelta(days=5)))
    assert [e.step for e in dec.emit] == [2]  # type: ignore[attr-defined]


def test_bounce_opens_one_wrong_contact_task() -> None:
    c = ctx(ledger(inv("i1", DUE, 50_000)))
    case, _ = run_days(new_case(), c, DUE, 2)
    failure = NotificationFailed(client_id=case.client_id, notification_id="n1", notification_key="k", channel="email",
                                 template="overdue-1", recipient="paul@example.com", permanent=True, reason="550",
                                 source_event_id="e1", failed_at=at(DUE))  # type: ignore[arg-type]  # fmt: skip
    dec = d.on_notification_failed(case, failure, c, at(DUE + timedelta(days=2)))
    tasks = of(ManualTaskCreated, list(dec.emit))
    assert len(tasks) == 1 and tasks[0].kind is TaskKind.WRONG_CONTACT
    assert d.on_notification_failed(dec.case, failure, c, at(DUE + timedelta(days=2))).emit == ()


def test_task_outcome_dispute_pauses() -> None:
    policy = replace(ladder_policy(), steps=(Step(1, StepAction.MANUAL_TASK), Step(8, StepAction.REMINDER)))
    c = ctx(ledger(inv("i1", DUE, 50_000)), policy)
    case = d.on_tick(new_case(), c, at(DUE + timedelta(days=1))).case
    assert case.blocking_task is not None
    done = d.TaskCompletion(case.blocking_task.task_id, TaskOutcome.DISPUTE, dispute_invoice_ids=("i1",),
                            dispute_reason="wrong quantity")  # fmt: skip
    dec: Decision = d.complete_task(case, done, c, at(DUE + timedelta(days=2)))
    assert dec.case.state is DunningState.PAUSED and dec.case.pause.reason is PauseReason.DISPUTE  # type: ignore[union-attr]
    with pytest.raises(Rejected):
        d.complete_task(case, replace(done, dispute_invoice_ids=("nope",)), c, at(DUE))


def test_policy_selection_first_match_wins() -> None:
    base = ladder_policy()
    ent = replace(base, name="enterprise", match=PolicyMatch(segments=frozenset({"enterprise"})))
    big = replace(base, name="big", match=PolicyMatch(open_balance_at_least=(("EUR", 1_000_000),)))
    late = replace(base, name="late", match=PolicyMatch(avg_payment_delay_at_least=20))
    default = replace(base, name="default")
    pols = [ent, big, late, default]
    assert select_policy(pols, profile(segment="enterprise"), {"EUR": 5_000_000}, None).name == "enterprise"
    assert select_policy(pols, profile(), {"EUR": 5_000_000}, None).name == "big"
    assert select_policy(pols, profile(), {"EUR": 5}, 25.0).name == "late"
    assert select_policy(pols, None, {}, None).name == "default"


def test_priority_grows_with_amount_age_and_risk() -> None:
    base = task_priority({"EUR": 100_000}, 10, 0)
    assert task_priority({"EUR": 10_000_000}, 10, 0) > base
    assert task_priority({"EUR": 100_000}, 60, 0) > base
    assert task_priority({"EUR": 100_000}, 10, 2) > base
    assert base == round(20 * 3.0004340774793188 + 5)
