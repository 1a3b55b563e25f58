"""Application service: apply a batch of inputs (events, commands, operator actions, time) to client cases.

One call loads the projection rows and cases of every client in the batch in a few queries, runs the pure
domain per client, and writes projection, cases, tasks, timeline and outbox rows back in bulk, all inside
the caller's transaction. The consumer, the scheduler and the REST API all go through here.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from ar_events.context import current_correlation_id
from ar_events.envelope import DATA_CONTENT_TYPE, SPEC_VERSION, Envelope
from ar_events.events import (
    AgreePaymentPlan,
    AssignCollector,
    Command,
    CreditNoteIssued,
    DisputeOutcome,
    DisputeResolved,
    DunningResolved,
    EscalateNow,
    InvoicePaymentApplied,
    InvoiceVoided,
    ManualTaskCompleted,
    ManualTaskCreated,
    NotificationFailed,
    PauseDunning,
    Payload,
    RecordPromiseToPay,
    ResolutionReason,
    ResumeDunning,
    Sender,
)
from dunning_svc import domain
from dunning_svc import repository as repo
from dunning_svc.calendars import calendar_for
from dunning_svc.domain import Context, Decision, DunningCase, Ledger
from dunning_svc.domain.trusted import maker
from dunning_svc.policybook import PolicyBook
from dunning_svc.projection import PROJECTED, ClientRecord, InvoiceRecord, ledger_of, project

SOURCE = "dunning-svc"


DomainFn = Callable[[DunningCase, Context, datetime], Decision]
PostFn = Callable[[AsyncSession, DunningCase], Awaitable[None]]


@dataclass(frozen=True)
class Op:
    """An operator action on one client's case (REST): a domain function bound to its arguments."""

    label: str
    apply: DomainFn
    data: Mapping[str, Any] = field(default_factory=dict)
    post: PostFn | None = None


Input = Envelope[Any] | Op


class InvalidCommand(ValueError):
    """A command the case cannot take; the consumer dead-letters it with this reason, REST answers 409."""


@dataclass
class Outcome:
    envelopes: list[Envelope[Any]] = field(default_factory=list)
    cases: dict[str, DunningCase] = field(default_factory=dict)
    next_timer: datetime | None = None
    steps: int = 0


_OUT_KIND = {
    "ar.dunning.manual_task_created.v1": "task",
    "ar.dunning.manual_task_completed.v1": "task",
    "ar.dunning.paused.v1": "hold",
    "ar.dunning.resumed.v1": "hold",
    "ar.dunning.promise_to_pay_recorded.v1": "hold",
    "ar.dunning.payment_plan_agreed.v1": "hold",
}
_STEP_TYPES = frozenset(
    {"ar.dunning.reminder_requested.v1", "ar.dunning.agency_warning_issued.v1",
     "ar.dunning.agency_handoff_requested.v1", "ar.dunning.manual_task_created.v1"}
)  # fmt: skip


def _summary(payload: Payload) -> str:
    return payload.__pydantic_serializer__.to_json(
        payload, exclude=_SUMMARY_EXCLUDE, exclude_none=True
    ).decode()


_SUMMARY_EXCLUDE = {"statement", "recipients", "client_id", "lines"}


class _Effects:
    """What a batch writes: projection, case, task and timeline rows, and the outgoing envelopes."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.now_utc = now.astimezone(UTC)
        self.out = Outcome()
        self.client_rows: list[dict[str, Any]] = []
        self.invoice_rows: list[dict[str, Any]] = []
        self.case_rows: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.new_tasks: list[dict[str, Any]] = []
        self.done_tasks: list[dict[str, Any]] = []
        self.resolved: list[str] = []

    def add(
        self,
        cid: str,
        case: DunningCase,
        next_at: datetime | None,
        emitted: Sequence[tuple[Payload, Envelope[Any] | None]],
    ) -> None:
        """One client's decided case and the events it emits (each with the event that caused it, if any)."""
        now, out = self.now, self.out
        self.case_rows.append(repo.case_row(case, next_at, now))
        out.cases[cid] = case
        if next_at is not None and (out.next_timer is None or next_at < out.next_timer):
            out.next_timer = next_at
        for payload, cause in emitted:
            env = _envelope(payload, self.now_utc, cause)
            out.envelopes.append(env)
            if env.type in _STEP_TYPES:
                out.steps += 1
            self.timeline.append(
                {
                    "client_id": cid,
                    "case_id": case.case_id,
                    "cycle": case.cycle,
                    "at": now,
                    "kind": _OUT_KIND.get(env.type, "decision_out"),
                    "type": env.type,
                    "event_id": env.id,
                    "data": _summary(payload),
                }
            )
            if type(payload) is ManualTaskCreated:
                self.new_tasks.append(_task_row(payload))
            elif type(payload) is ManualTaskCompleted:
                self.done_tasks.append({"b_task_id": payload.task_id, "b_outcome": payload.outcome.value,
                                        "b_completed_at": payload.completed_at,
                                        "b_completed_by": payload.completed_by,
                                        "b_detail": payload.note})  # fmt: skip
            elif type(payload) is DunningResolved:
                self.resolved.append(case.case_id)

    async def write(self, session: AsyncSession, existing: set[str]) -> None:
        """Projection, cases, tasks and timeline (the caller enqueues the envelopes)."""
        now = self.now
        await repo.upsert(session, repo.client_table, self.client_rows, ["client_id"])
        await repo.upsert(session, repo.invoice_table, self.invoice_rows, ["invoice_id"])
        await repo.save_cases(session, self.case_rows, existing)
        await repo.cancel_open_tasks(session, self.resolved, now)
        await repo.complete_tasks(session, self.done_tasks)
        await repo.insert_rows(session, repo.task_table, self.new_tasks)
        await repo.insert_rows(session, repo.timeline_table, self.timeline)


class CaseWork:
    def __init__(self, policies: PolicyBook, ar_sender: Sender) -> None:
        self.policies = policies
        self.ar_sender = ar_sender

    def context(self, case: DunningCase, ledger: Ledger, now: datetime) -> Context:
        current = self.policies.select(ledger)
        pinned = self.policies.pinned(case.policy_name, case.policy_version) if case.is_open else None
        profile = ledger.profile
        cal = calendar_for(
            profile.time_zone if profile else "UTC", profile.country if profile else "US", now.year
        )
        return Context(ledger=ledger, policy=pinned or current, new_cycle_policy=current, calendar=cal,
                       ar_sender=self.ar_sender)  # fmt: skip

    async def apply(
        self,
        session: AsyncSession,
        inputs: Mapping[str, Sequence[Input]],
        now: datetime,
        claimed: Mapping[str, repo.CaseRow] | None = None,
        loaded: tuple[Mapping[str, ClientRecord], Mapping[str, dict[str, InvoiceRecord]]] | None = None,
    ) -> Outcome:
        """Run every client's inputs (none: a scheduler tick) and write all effects in the session.

        ``claimed``: the clients' cases, already read and locked (the scheduler's claim); ``loaded``: their
        projection rows (client records, open invoices by id), already read with the claim."""
        client_ids = sorted(inputs)
        touched_invoices = [
            i.data.invoice_id
            for items in inputs.values()
            for i in items
            if not isinstance(i, Op) and isinstance(getattr(i.data, "invoice_id", None), str)
        ]
        if loaded is not None and not touched_invoices:
            clients, invoices = loaded
        else:
            clients, invoices = await repo.load_projection(session, client_ids, touched_invoices)
        if claimed is None:
            cases = await repo.load_cases(session, client_ids, lock=True)
        else:
            cases = dict(claimed)
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        eff = _Effects(now)
        posts: list[tuple[PostFn, str]] = []
        timeline = eff.timeline
        for cid in client_ids:
            client = clients.get(cid) or ClientRecord(cid)
            invs = invoices.get(cid, {})
            client_changed = cid not in clients
            changed_invoices: dict[str, InvoiceRecord] = {}
            row = cases.get(cid)
            case = row.case if row is not None else DunningCase.new(cid)
            decision: Decision | None = None
            last: Decision | None = None
            evaluated = False
            emitted: list[tuple[Payload, Envelope[Any] | None]] = []
            items = inputs[cid]
            payments: list[tuple[str, int]] = []
            cause_reason: ResolutionReason | None = None
            for n, item in enumerate(items):
                cause: Envelope[Any] | None = None
                decision = None
                if not isinstance(item, Op):  # an envelope (Op is a plain dataclass: a cheap test)
                    cause = item
                    ev = item.data
                    timeline.append(self._in_row(case, item, now))
                    traits = _traits(ev)
                    if traits.projected:
                        before = client
                        client, inv = project(client, invs, ev)
                        client_changed = client_changed or client != before
                        if inv is not None and invs.get(inv.invoice_id) != inv:
                            invs[inv.invoice_id] = inv
                            changed_invoices[inv.invoice_id] = inv
                        if traits.payment:
                            paid = cast(InvoicePaymentApplied, ev).amount
                            payments.append((paid.currency, paid.amount_minor))
                        cause_reason = _resolution_cause(ev, traits) or cause_reason
                        nxt = items[n + 1] if n + 1 < len(items) else None
                        if nxt is not None and not isinstance(nxt, Op) and _traits(nxt.data).projected:
                            continue  # a run of invoice events is evaluated once, at its end
                        for currency, amount in payments:
                            case = domain.count_payment(case, currency, amount)
                        ctx = self.context(case, ledger_of(client, invs), now)
                        decision = domain.on_ledger_changed(case, ctx, now, cause_reason)
                        payments, cause_reason = [], None
                    else:
                        ctx = self.context(case, ledger_of(client, invs), now)
                        decision = self._on_event(case, ev, ctx, now)
                else:
                    timeline.append(self._op_row(case, item, now))
                    ctx = self.context(case, ledger_of(client, invs), now)
                    try:
                        decision = item.apply(case, ctx, now)
                    except domain.Rejected as exc:
                        raise InvalidCommand(exc.reason) from None
                    if item.post is not None:
                        posts.append((item.post, cid))
                if decision is not None:
                    case = decision.case
                    last = decision
                    evaluated = True
                    emitted.extend((p, cause) for p in decision.emit)
            if not evaluated:
                last = domain.on_tick(case, self.context(case, ledger_of(client, invs), now), now)
                case = last.case
                emitted.extend((p, None) for p in last.emit)
            assert last is not None
            if client_changed:
                eff.client_rows.append(repo.client_row(client, now))
            eff.invoice_rows.extend(repo.invoice_row(r, now) for r in changed_invoices.values())
            # next_action_at: computed by the last decision, for the case as it stands
            eff.add(cid, case, last.next_action_at, emitted)
        await eff.write(session, set(cases))
        for post, cid in posts:
            await post(session, eff.out.cases[cid])
        await repo.enqueue_events(session, eff.out.envelopes, now)
        return eff.out

    async def tick(self, session: AsyncSession, claimed: repo.Claimed, now: datetime) -> Outcome:
        """A scheduler batch: the claimed cases (locked) with their projection rows, decided in one pass (the
        common step through ``domain.tick_fast``, anything else through ``domain.on_tick``), written in bulk."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        pairs: list[tuple[DunningCase, Context]] = []
        ledgers = claimed.ledgers
        for row in claimed.cases:
            case = row.case
            pairs.append((case, self.context(case, ledgers[case.client_id], now)))
        eff = _Effects(now)
        for case, ctx in pairs:
            decision = domain.tick_fast(case, ctx, now)
            if decision is None:
                decision = domain.on_tick(case, ctx, now)
            eff.add(
                case.client_id, decision.case, decision.next_action_at, [(p, None) for p in decision.emit]
            )
        await eff.write(session, {case.client_id for case, _ in pairs})
        await repo.enqueue_events(session, eff.out.envelopes, now)
        return eff.out

    def _on_event(self, case: DunningCase, ev: Payload, ctx: Context, now: datetime) -> Decision | None:
        if isinstance(ev, Command):
            return self._on_command(case, ev, ctx, now)
        if isinstance(ev, NotificationFailed):
            return domain.on_notification_failed(case, ev, ctx, now)
        return None  # payments and sent notifications: the timeline only

    def _on_command(self, case: DunningCase, cmd: Command, ctx: Context, now: datetime) -> Decision:
        try:
            if isinstance(cmd, PauseDunning):
                return domain.pause(case, ctx, now, until=cmd.until, note=cmd.note)
            if isinstance(cmd, ResumeDunning):
                return domain.resume(case, ctx, now)
            if isinstance(cmd, EscalateNow):
                return domain.escalate_now(case, ctx, now)
            if isinstance(cmd, RecordPromiseToPay):
                return domain.record_promise(case, ctx, now, promise_id=f"ptp_{case.case_id[5:]}_{case.cycle}_{now:%Y%m%d%H%M%S}",
                                             promised_date=cmd.promised_date, amount=cmd.amount,
                                             grace_days=cmd.grace_days, completed_by=cmd.requested_by)  # fmt: skip
            if isinstance(cmd, AgreePaymentPlan):
                return domain.agree_plan(case, ctx, now, plan_id=f"plan_{case.case_id[5:]}_{case.cycle}_{now:%Y%m%d%H%M%S}",
                                         installments=[(i.due_date, i.amount) for i in cmd.installments],
                                         grace_days=cmd.grace_days, completed_by=cmd.requested_by)  # fmt: skip
            if isinstance(cmd, AssignCollector):
                return domain.assign_collector(case, ctx, now, cmd.collector)
        except domain.Rejected as exc:
            raise InvalidCommand(f"{cmd.TYPE} rejected for client {cmd.client_id}: {exc.reason}") from None
        raise InvalidCommand(f"unsupported command {cmd.TYPE}")

    @staticmethod
    def _in_row(case: DunningCase, env: Envelope[Any], now: datetime) -> dict[str, Any]:
        return {
            "client_id": case.client_id,
            "case_id": case.case_id,
            "cycle": case.cycle or None,
            "at": now,
            "kind": "command" if _traits(env.data).command else "event_in",
            "type": env.type,
            "event_id": env.id,
            "data": _summary(env.data),
        }

    @staticmethod
    def _op_row(case: DunningCase, op: Op, now: datetime) -> dict[str, Any]:
        return {
            "client_id": case.client_id,
            "case_id": case.case_id,
            "cycle": case.cycle or None,
            "at": now,
            "kind": "command",
            "type": op.label,
            "event_id": None,
            "data": json.dumps(dict(op.data), default=str),
        }


_make_envelope = maker(Envelope)


class _RandomPool(threading.local):
    """Random hex digits for event ids, drawn from os.urandom 1,024 ids at a time; one pool per thread, and a
    forked child starts a fresh one (it must never hand out its parent's ids)."""

    text = ""
    at = 0


_pool = _RandomPool()


def _fresh_pool() -> None:
    _pool.text, _pool.at = "", 0


os.register_at_fork(after_in_child=_fresh_pool)

#: the RFC 4122 variant (binary 10xx) of the 17th hex digit, from its two random low bits
_VARIANT = {f"{n:x}": f"{0x8 | (n & 0x3):x}" for n in range(16)}


def _uuid4() -> str:
    """``str(uuid.uuid4())`` (16 bytes of os.urandom with the version 4 and RFC 4122 variant bits) in well
    under half its time: the hex text comes from the pool, the version and variant digits are set in it."""
    pool = _pool
    at = pool.at
    if at >= len(pool.text):
        pool.text, at = os.urandom(16 * 1024).hex(), 0
    pool.at = at + 32
    h = pool.text[at : at + 32]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _envelope(payload: Payload, now_utc: datetime, cause: Envelope[Any] | None) -> Envelope[Any]:
    """``new_event(payload, source=SOURCE, time=now, caused_by=cause)`` built without validating again:
    the payload is a typed model and every other field is set here (the same record as new_event's)."""
    eid = _uuid4()
    if cause is not None:
        corr, causation = cause.correlationid, cause.id
    else:
        corr, causation = current_correlation_id() or eid, None
    env: Envelope[Any] = _make_envelope(
        specversion=SPEC_VERSION,
        id=eid,
        source=SOURCE,
        type=payload.TYPE,
        time=now_utc,
        subject=payload.client_id,
        datacontenttype=DATA_CONTENT_TYPE,
        correlationid=corr,
        causationid=causation,
        data=payload,
    )
    return env


@dataclass(frozen=True, slots=True)
class _Traits:
    """What the apply loop asks about a consumed payload, answered once per payload class."""

    projected: bool  # an invoice-topic type that changes the projection
    command: bool
    payment: bool  # InvoicePaymentApplied
    voided: bool
    credited: bool
    dispute_resolved: bool


_TRAITS: dict[type, _Traits] = {}


def _traits(payload: object) -> _Traits:
    cls = type(payload)
    found = _TRAITS.get(cls)
    if found is None:
        found = _TRAITS[cls] = _Traits(
            projected=isinstance(payload, PROJECTED),
            command=isinstance(payload, Command),
            payment=isinstance(payload, InvoicePaymentApplied),
            voided=isinstance(payload, InvoiceVoided),
            credited=isinstance(payload, CreditNoteIssued),
            dispute_resolved=isinstance(payload, DisputeResolved),
        )
    return found


def _resolution_cause(ev: Payload, traits: _Traits) -> ResolutionReason | None:
    if traits.voided:
        return ResolutionReason.VOIDED
    if traits.credited:
        return ResolutionReason.CREDITED
    if traits.dispute_resolved and cast(DisputeResolved, ev).outcome is DisputeOutcome.UPHELD:
        return ResolutionReason.DISPUTED
    return None


def _task_row(t: ManualTaskCreated) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "case_id": t.case_id,
        "client_id": t.client_id,
        "cycle": t.cycle,
        "kind": t.kind.value,
        "step": t.step,
        "status": "open",
        "assignee_name": t.assignee.name if t.assignee else None,
        "assignee_email": str(t.assignee.email) if t.assignee else None,
        "queue": t.queue,
        "priority": t.priority,
        "sla_due_at": t.sla_due_at,
        "client_name": t.client_name,
        "note": t.note,
        "created_at": t.created_at,
        "claimed_by": None,
        "claimed_at": None,
        "completed_at": None,
        "completed_by": None,
        "outcome": None,
        "outcome_detail": None,
    }
