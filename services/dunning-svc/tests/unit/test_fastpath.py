"""The scheduler's lean path (``tick_fast``, else ``on_tick``) decides exactly as ``on_tick``.

Two ways: generated cases in every state (any mix of pause, promise, plan, blocking task, escalation, fired
steps, last message, disputes) over generated ledgers and times; and the stateful model of
test_domain_stateful, whose scheduler rules here check the lean path against ``on_tick`` on every reachable
case before applying the decision.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from ar_events.events import DunningState, PauseReason, Person
from dunning_svc import domain as d
from dunning_svc.domain import (
    BlockingTask,
    BusinessCalendar,
    Context,
    DunningCase,
    Ledger,
    OpenInvoice,
    Pause,
    Plan,
    PlanInstallment,
    Promise,
)

from .helpers import CLIENT, ladder_policy, profile
from .test_domain_stateful import DunningMachine

pytestmark = pytest.mark.unit

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CAL = BusinessCalendar(time_zone="Europe/Paris", holidays=frozenset({date(2026, 4, 6), date(2026, 5, 1)}))
EXAMPLES = int(os.environ.get("DUNNING_HYPOTHESIS_EXAMPLES", "200"))

_OPEN = [DunningState.REMINDING, DunningState.MANUAL_FOLLOWUP, DunningState.AGENCY_WARNING,
         DunningState.IN_COLLECTIONS]  # fmt: skip


def _scheduler_tick(case: DunningCase, ctx: Context, now: datetime) -> d.Decision:
    """What the scheduler does per claimed case (CaseWork.tick)."""
    fast = d.tick_fast(case, ctx, now)
    return fast if fast is not None else d.on_tick(case, ctx, now)


@st.composite
def invoices(draw: st.DrawFn, oldest: int = 60) -> tuple[OpenInvoice, ...]:
    n = draw(st.integers(1, 4))
    out = []
    for i in range(n):
        due = START.date() + timedelta(days=draw(st.integers(-oldest, 10)))
        out.append(
            OpenInvoice(
                f"i{i}",
                f"F-{i}",
                draw(st.sampled_from(["EUR", "USD", "GBP"])),
                due,
                draw(st.integers(0, 300_000)),
                disputed=draw(st.integers(0, 3)) == 0,
            )
        )
    return tuple(out)


@st.composite
def cases(draw: st.DrawFn) -> DunningCase:
    policy = ladder_policy()
    n = len(policy.steps)
    opened = draw(st.integers(0, 4)) > 0
    case = DunningCase.new(CLIENT)
    if not opened:
        return replace(case, state=draw(st.sampled_from([DunningState.CURRENT, DunningState.RESOLVED])),
                       cycle=draw(st.integers(0, 2)))  # fmt: skip
    reached = draw(st.integers(-1, n - 1))
    fired = tuple(sorted(draw(st.sets(st.integers(0, max(reached, 0)), max_size=3)))) if reached >= 0 else ()
    stage = draw(st.sampled_from(_OPEN))
    plain = draw(st.booleans())  # half the open cases without pause, promise, plan, task or escalation
    paused = None if plain else draw(st.sampled_from([None, *PauseReason]))
    at = START - timedelta(hours=draw(st.integers(0, 24 * 20)))
    case = replace(
        case,
        state=DunningState.PAUSED if paused is not None else stage,
        stage=stage,
        cycle=draw(st.integers(1, 3)),
        level=max(0, reached + 1),
        reached_step=reached,
        fired_steps=fired,
        policy_name=policy.name,
        policy_version=policy.version,
        opened_at=at,
        pause=Pause(paused, since=at, until=draw(st.none() | st.just(START.date() + timedelta(days=2))))
        if paused is not None
        else None,
        last_message_at=draw(st.none() | st.just(START - timedelta(hours=draw(st.integers(1, 24 * 10))))),
        escalate_pending=not plain and draw(st.booleans()),
        escalation_cause=draw(st.sampled_from([None, "promise_broken", "escalated_by_ops"])),
        agency_deadline=draw(st.none() | st.just(START.date() + timedelta(days=draw(st.integers(-5, 5))))),
        local_disputes=frozenset()
        if plain
        else frozenset(draw(st.sets(st.sampled_from(["i0", "i1"]), max_size=2))),
        collector=draw(st.none() | st.just(Person(name="Col", email="col@example.com"))),
        task_seq=draw(st.integers(0, 3)),
    )
    if not plain and draw(st.integers(0, 3)) == 0:
        case = replace(case, promise=Promise("p", START.date() + timedelta(days=draw(st.integers(-5, 5))),
                                             "EUR", 10_000, 2, at, paid=draw(st.integers(0, 20_000))))  # fmt: skip
    if not plain and draw(st.integers(0, 3)) == 0:
        case = replace(case, plan=Plan("pl", "EUR", (PlanInstallment(START.date() + timedelta(days=2), 5_000),),
                                       3, at, paid=draw(st.integers(0, 10_000))))  # fmt: skip
    if not plain and draw(st.integers(0, 2)) == 0:
        sla = START + timedelta(hours=draw(st.integers(-48, 48)))
        case = replace(case, blocking_task=BlockingTask("t1", max(reached, 0), sla))
    return case


@st.composite
def reminder_cases(draw: st.DrawFn) -> DunningCase:
    """Open cases with nothing holding them back, early in the ladder: the scheduler's common step."""
    policy = ladder_policy()
    reached = draw(st.integers(-1, 2))
    stage = (
        DunningState.REMINDING
        if reached >= 0
        else draw(st.sampled_from([DunningState.REMINDING, DunningState.MANUAL_FOLLOWUP]))
    )
    at = START - timedelta(days=draw(st.integers(0, 20)))
    return replace(
        DunningCase.new(CLIENT),
        state=stage,
        stage=stage,
        cycle=draw(st.integers(1, 3)),
        level=reached + 1,
        reached_step=reached,
        fired_steps=tuple(range(draw(st.integers(0, 1)), reached + 1)),
        policy_name=policy.name,
        policy_version=policy.version,
        opened_at=at,
        last_message_at=draw(st.none() | st.just(at)),
        local_disputes=frozenset(draw(st.sets(st.sampled_from(["i0", "i1"]), max_size=1))),
        collector=draw(st.none() | st.just(Person(name="Col", email="col@example.com"))),
    )


def _ctx(invs: tuple[OpenInvoice, ...], contacts: bool, hours: bool, gap: int) -> Context:
    policy = ladder_policy(gap_days=gap)
    if hours:
        policy = replace(policy, business_start=time(9), business_end=time(17))
    prof = profile(time_zone="Europe/Paris") if contacts else None
    return Context(ledger=Ledger(CLIENT, prof, invs), policy=policy, new_cycle_policy=policy, calendar=CAL)


@settings(max_examples=EXAMPLES * 5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=cases(),
    invs=invoices(),
    contacts=st.booleans(),
    hours=st.booleans(),
    gap=st.integers(1, 8),
    later=st.integers(0, 24 * 30),
)
def test_the_lean_path_decides_as_on_tick(
    case: DunningCase, invs: tuple[OpenInvoice, ...], contacts: bool, hours: bool, gap: int, later: int
) -> None:
    now = START + timedelta(hours=later)
    try:
        expected = d.on_tick(case, _ctx(invs, contacts, hours, gap), now)
    except ValueError:  # a message with no recipient: the lean path raises too
        with pytest.raises(ValueError):
            _scheduler_tick(case, _ctx(invs, contacts, hours, gap), now)
        return
    fast = d.tick_fast(case, _ctx(invs, contacts, hours, gap), now)
    if fast is not None:
        assert fast == expected
    assert _scheduler_tick(case, _ctx(invs, contacts, hours, gap), now) == expected


@settings(max_examples=EXAMPLES * 5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=reminder_cases(),
    invs=invoices(oldest=14),
    hours=st.booleans(),
    gap=st.integers(1, 8),
    later=st.integers(0, 24 * 5),
)
def test_the_lean_path_decides_the_common_step_as_on_tick(
    case: DunningCase, invs: tuple[OpenInvoice, ...], hours: bool, gap: int, later: int
) -> None:
    test_the_lean_path_decides_as_on_tick.hypothesis.inner_test(case, invs, True, hours, gap, later)  # type: ignore[attr-defined]


def test_the_lean_path_takes_the_common_step() -> None:
    """A case whose next reminder is due goes through the lean path (not only through the fallback)."""
    policy = ladder_policy()
    case = replace(DunningCase.new(CLIENT), state=DunningState.REMINDING, stage=DunningState.REMINDING, cycle=1,
                   level=1, reached_step=1, fired_steps=(1,), policy_name=policy.name,
                   policy_version=policy.version, opened_at=START - timedelta(days=8),
                   last_message_at=START - timedelta(days=8))  # fmt: skip
    invs = (OpenInvoice("i1", "F-1", "EUR", START.date() - timedelta(days=9), 250_000),)
    now = START + timedelta(hours=2)
    fast = d.tick_fast(case, _ctx(invs, True, True, 3), now)
    assert fast is not None and len(fast.emit) == 1 and fast.case.reached_step == 2
    assert fast == d.on_tick(case, _ctx(invs, True, True, 3), now)


class FastPathMachine(DunningMachine):
    """The stateful model, with every scheduler tick decided both ways and compared."""

    def tick(self) -> d.Decision:
        expected = d.on_tick(self.case, self.ctx(), self.now)
        fast = d.tick_fast(self.case, self.ctx(), self.now)
        if fast is not None:
            assert fast == expected
            self.fast_taken = getattr(self, "fast_taken", 0) + 1
        assert _scheduler_tick(self.case, self.ctx(), self.now) == expected
        return expected

    @rule(hours=st.integers(1, 120))
    def time_passes(self, hours: int) -> None:
        self.now += timedelta(hours=hours)
        self.apply(self.tick())

    @rule()
    def scheduler_wakes_up(self) -> None:
        nxt = d.next_action_at(self.case, self.ctx(), self.now)
        if nxt is not None and nxt - self.now < timedelta(days=60):
            self.now = nxt
            self.apply(self.tick())


FastPathMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFastPathMachine = FastPathMachine.TestCase
