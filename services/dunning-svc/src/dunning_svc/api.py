"""REST API under /v1: thin routes that open one transaction and go through the case work."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Collection
from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ar_events.clock import Clock
from ar_events.events import DunningState, Person, TaskOutcome
from ar_events.money import Money
from ar_web import (
    IdempotencyKey,
    Page,
    PageParams,
    Principal,
    ProblemError,
    authenticated,
    begin_idempotent,
    create_service_app,
    database_check,
    kafka_check,
    make_page,
    page_params,
    problem_responses,
    require_scopes,
)
from dunning_svc import bootstrap, domain
from dunning_svc import repository as repo
from dunning_svc.casework import CaseWork, InvalidCommand, Op
from dunning_svc.domain import DunningCase
from dunning_svc.projection import ClientRecord, ledger_of
from dunning_svc.schemas import (
    BalancesOut,
    CaseDetailOut,
    CaseOut,
    ClockAdvanceIn,
    CountsOut,
    HoldIn,
    InvoiceOut,
    PlanIn,
    PromiseIn,
    ResumeIn,
    TaskAssignIn,
    TaskClaimIn,
    TaskCompleteIn,
    TaskOut,
    TimelineEntry,
)
from dunning_svc.settings import SERVICE, Settings

__version__ = "0.1.0"
WRITE = "collections:write"

router = APIRouter(prefix="/v1")
Writer = Annotated[Principal, Depends(require_scopes(WRITE))]
Reader = Annotated[Principal, Depends(authenticated())]
Ops = Annotated[Principal, Depends(require_scopes("ops"))]
Paging = Annotated[PageParams, Depends(page_params)]
ClientId = Annotated[str, Path(min_length=1, max_length=128)]
TaskId = Annotated[str, Path(min_length=1, max_length=96)]


def _rt(request: Request) -> bootstrap.Runtime:
    rt: bootstrap.Runtime = request.app.state.runtime
    return rt


def _work(rt: bootstrap.Runtime) -> CaseWork:
    if rt.work is None:
        raise ProblemError(503, "Starting", "policies are not loaded yet")
    return rt.work


def _case_out(row: dict[str, Any]) -> dict[str, Any]:
    case = repo.load_case(row["body"])

    def plain(v: Any) -> dict[str, Any] | None:
        return dataclasses.asdict(v) if v is not None else None

    return {
        "case_id": case.case_id,
        "client_id": case.client_id,
        "state": case.state.value,
        "stage": case.stage.value,
        "cycle": case.cycle,
        "level": case.level,
        "reached_step": case.reached_step,
        "policy": case.policy_name,
        "policy_version": case.policy_version,
        "next_action_at": row["next_action_at"],
        "opened_at": case.opened_at,
        "last_message_at": case.last_message_at,
        "pause": plain(case.pause),
        "promise": plain(case.promise),
        "plan": plain(case.plan),
        "blocking_task_id": case.blocking_task.task_id if case.blocking_task else None,
        "collector": case.collector,
        "disputed_by_collector": sorted(case.local_disputes),
    }


async def _run_op(rt: bootstrap.Runtime, session: AsyncSession, client_id: str, op: Op) -> DunningCase:
    try:
        out = await _work(rt).apply(session, {client_id: [op]}, rt.clock.now())
    except InvalidCommand as exc:
        raise ProblemError(409, "Not possible in the case's state", str(exc)) from None
    return out.cases[client_id]


def _after_commit(rt: bootstrap.Runtime) -> None:
    rt.relay.wake()
    if rt.scheduler is not None:
        rt.scheduler.wake()


# ------------------------------------------------------------------------------------------ tasks


@router.get("/tasks", response_model=Page[TaskOut], tags=["tasks"])
async def list_tasks(
    request: Request,
    _: Reader,
    params: Paging,
    status: Annotated[str | None, Query(pattern="^(open|claimed|done|cancelled)$")] = None,
    assignee: Annotated[str | None, Query(max_length=320, description="assignee email")] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[TaskOut]:
    """The worklist, highest priority first (cursor pagination)."""
    rt = _rt(request)
    pos = params.position()
    after = (int(pos[0]), str(pos[1])) if isinstance(pos, list) and len(pos) == 2 else None
    if pos is not None and after is None:
        raise ProblemError(400, "Invalid cursor", field="cursor")
    async with rt.sessionmaker() as session:
        rows = await repo.list_tasks(session, status=status, assignee=assignee, queue=queue, after=after,
                                     limit=params.limit + 1)  # fmt: skip
    return make_page([TaskOut.of(r) for r in rows], params.limit, lambda t: [t.priority, t.task_id])


@router.get("/tasks/{task_id}", response_model=TaskOut, tags=["tasks"], responses=problem_responses(404))
async def get_task(request: Request, task_id: TaskId, _: Reader) -> TaskOut:
    rt = _rt(request)
    async with rt.sessionmaker() as session:
        row = await repo.get_task(session, task_id)
    if row is None:
        raise ProblemError(404, "Task not found", field="task_id")
    return TaskOut.of(row)


@router.post(
    "/tasks/{task_id}/claim", response_model=TaskOut, tags=["tasks"], responses=problem_responses(404, 409)
)
async def claim_task(request: Request, task_id: TaskId, body: TaskClaimIn, who: Writer) -> TaskOut:
    """Take a task (a claimed task belongs to one collector unless ``force``)."""
    rt = _rt(request)
    collector = body.collector or who.name
    async with rt.sessionmaker() as session, session.begin():
        row = await repo.get_task(session, task_id, lock=True)
        if row is None:
            raise ProblemError(404, "Task not found", field="task_id")
        if row["status"] not in ("open", "claimed"):
            raise ProblemError(409, "Task is closed", f"status is {row['status']}", field="task_id")
        if not await repo.claim_task(session, task_id, collector, rt.clock.now(), force=body.force):
            raise ProblemError(409, "Task claimed by someone else", f"claimed by {row['claimed_by']}",
                               field="collector")  # fmt: skip
        row = await repo.get_task(session, task_id)
    assert row is not None
    return TaskOut.of(row)


@router.post(
    "/tasks/{task_id}/assign", response_model=TaskOut, tags=["tasks"], responses=problem_responses(404, 409)
)
async def assign_task(request: Request, task_id: TaskId, body: TaskAssignIn, _: Writer) -> TaskOut:
    """Give a task to a person or a queue."""
    if (body.assignee is None) == (body.queue is None):
        raise ProblemError(422, "Give exactly one of assignee or queue", field="assignee")
    rt = _rt(request)
    async with rt.sessionmaker() as session, session.begin():
        person = body.assignee
        n = await repo.assign_task(session, task_id, person.name if person else None,
                                   str(person.email) if person else None, body.queue)  # fmt: skip
        row = await repo.get_task(session, task_id)
        if row is None:
            raise ProblemError(404, "Task not found", field="task_id")
        if not n:
            raise ProblemError(409, "Task is closed", f"status is {row['status']}", field="task_id")
    return TaskOut.of(row)


@router.post("/tasks/{task_id}/complete", response_model=TaskOut, tags=["tasks"],
             responses=problem_responses(404, 409))  # fmt: skip
async def complete_task(
    request: Request,
    task_id: TaskId,
    body: TaskCompleteIn,
    who: Writer,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Record the outcome of a task; it drives the case (promise, dispute, plan, wrong contact...)."""
    detail_field = {
        "promise_to_pay": body.promise_to_pay,
        "dispute": body.dispute,
        "payment_plan": body.payment_plan,
    }
    if body.outcome in detail_field and detail_field[body.outcome] is None:
        raise ProblemError(422, "Outcome details missing", f"outcome {body.outcome} needs '{body.outcome}'",
                           field=body.outcome)  # fmt: skip
    rt = _rt(request)
    async with rt.sessionmaker() as session, session.begin():
        guard = await begin_idempotent(session, scope=f"POST /v1/tasks/{task_id}/complete", key=idempotency_key,
                                       request=body)  # fmt: skip
        if guard.replay is not None:
            return guard.replay
        row = await repo.get_task(session, task_id, lock=True)
        if row is None:
            raise ProblemError(404, "Task not found", field="task_id")
        if row["status"] not in ("open", "claimed"):
            raise ProblemError(409, "Task is closed", f"status is {row['status']}", field="task_id")
        p, d, plan = body.promise_to_pay, body.dispute, body.payment_plan
        done = domain.TaskCompletion(
            task_id=task_id,
            outcome=TaskOutcome(body.outcome),
            completed_by=body.completed_by or who.name,
            note=body.note,
            promised_date=p.date if p else None,
            promised_amount=p.amount if p else None,
            dispute_invoice_ids=tuple(d.invoice_ids) if d else (),
            dispute_reason=d.reason if d else None,
            installments=tuple((i.due_date, i.amount) for i in plan.installments) if plan else (),
        )
        op = Op("task.complete", lambda c, ctx, now: domain.complete_task(c, done, ctx, now),
                body.model_dump(mode="json") | {"task_id": task_id})  # fmt: skip
        await _run_op(rt, session, row["client_id"], op)
        row = await repo.get_task(session, task_id)
        response = await guard.complete(session, 200, TaskOut.of(row or {}).model_dump(mode="json"))
    _after_commit(rt)
    return response


# ------------------------------------------------------------------------------------------ cases


async def _case_action(rt: bootstrap.Runtime, client_id: str, op: Op) -> dict[str, Any]:
    async with rt.sessionmaker() as session, session.begin():
        if await repo.case_by_client(session, client_id) is None:
            raise ProblemError(404, "No dunning case for this client", field="client_id")
        await _run_op(rt, session, client_id, op)
        row = await repo.case_by_client(session, client_id)
    _after_commit(rt)
    assert row is not None
    return _case_out(row)


@router.post("/cases/{client_id}/promise-to-pay", response_model=CaseOut, status_code=201, tags=["cases"],
             responses=problem_responses(404, 409))  # fmt: skip
async def promise_to_pay(
    request: Request,
    client_id: ClientId,
    body: PromiseIn,
    who: Writer,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """The client promised to pay an amount by a date: the case pauses until then plus grace."""
    rt = _rt(request)
    async with rt.sessionmaker() as session, session.begin():
        guard = await begin_idempotent(session, scope=f"POST /v1/cases/{client_id}/promise-to-pay",
                                       key=idempotency_key, request=body)  # fmt: skip
        if guard.replay is not None:
            return guard.replay
        if await repo.case_by_client(session, client_id) is None:
            raise ProblemError(404, "No dunning case for this client", field="client_id")
        now = rt.clock.now()
        op = Op("promise_to_pay", lambda c, ctx, t: domain.record_promise(
            c, ctx, t, promise_id=f"ptp_{c.case_id[5:]}_{c.cycle}_{now:%Y%m%d%H%M%S%f}", promised_date=body.date,
            amount=body.amount, grace_days=body.grace_days, completed_by=who.name), body.model_dump(mode="json"))  # fmt: skip
        await _run_op(rt, session, client_id, op)
        row = await repo.case_by_client(session, client_id)
        assert row is not None
        response = await guard.complete(session, 201, CaseOut(**_case_out(row)).model_dump(mode="json"))
    _after_commit(rt)
    return response


@router.post("/cases/{client_id}/payment-plan", response_model=CaseOut, status_code=201, tags=["cases"],
             responses=problem_responses(404, 409))  # fmt: skip
async def payment_plan(
    request: Request, client_id: ClientId, body: PlanIn, who: Writer, idempotency_key: IdempotencyKey = None
) -> Any:
    """An installment schedule: the case stays paused while installments are met."""
    rt = _rt(request)
    async with rt.sessionmaker() as session, session.begin():
        guard = await begin_idempotent(session, scope=f"POST /v1/cases/{client_id}/payment-plan",
                                       key=idempotency_key, request=body)  # fmt: skip
        if guard.replay is not None:
            return guard.replay
        if await repo.case_by_client(session, client_id) is None:
            raise ProblemError(404, "No dunning case for this client", field="client_id")
        now = rt.clock.now()
        op = Op("payment_plan", lambda c, ctx, t: domain.agree_plan(
            c, ctx, t, plan_id=f"plan_{c.case_id[5:]}_{c.cycle}_{now:%Y%m%d%H%M%S%f}",
            installments=[(i.due_date, i.amount) for i in body.installments], grace_days=body.grace_days,
            completed_by=who.name), body.model_dump(mode="json"))  # fmt: skip
        await _run_op(rt, session, client_id, op)
        row = await repo.case_by_client(session, client_id)
        assert row is not None
        response = await guard.complete(session, 201, CaseOut(**_case_out(row)).model_dump(mode="json"))
    _after_commit(rt)
    return response


@router.post(
    "/cases/{client_id}/hold", response_model=CaseOut, tags=["cases"], responses=problem_responses(404, 409)
)
async def hold(request: Request, client_id: ClientId, body: HoldIn, _: Writer) -> dict[str, Any]:
    """Ops hold: nothing goes out until resumed, or after ``until``."""
    op = Op("hold", lambda c, ctx, t: domain.pause(c, ctx, t, until=body.until, note=body.note),
            body.model_dump(mode="json"))  # fmt: skip
    return await _case_action(_rt(request), client_id, op)


@router.post(
    "/cases/{client_id}/resume", response_model=CaseOut, tags=["cases"], responses=problem_responses(404, 409)
)
async def resume(request: Request, client_id: ClientId, body: ResumeIn, _: Writer) -> dict[str, Any]:
    """Lift any pause (hold, promise, plan, dispute)."""
    op = Op("resume", lambda c, ctx, t: domain.resume(c, ctx, t), body.model_dump(mode="json"))
    return await _case_action(_rt(request), client_id, op)


@router.post("/cases/{client_id}/escalate", response_model=CaseOut, tags=["cases"],
             responses=problem_responses(404, 409))  # fmt: skip
async def escalate(request: Request, client_id: ClientId, _: Writer) -> dict[str, Any]:
    """Fire the next step now (within business hours and the contact gap)."""
    return await _case_action(_rt(request), client_id, Op("escalate_now", domain.escalate_now))


@router.post("/cases/{client_id}/collector", response_model=CaseOut, tags=["cases"],
             responses=problem_responses(404, 409))  # fmt: skip
async def assign_collector(request: Request, client_id: ClientId, body: Person, _: Writer) -> dict[str, Any]:
    """Route this client's tasks to a collector (open tasks are reassigned too)."""

    async def reassign(session: AsyncSession, case: DunningCase) -> None:
        await repo.reassign_open_tasks(session, case.case_id, body.name, str(body.email))

    op = Op("assign_collector", lambda c, ctx, t: domain.assign_collector(c, ctx, t, body),
            body.model_dump(mode="json"), post=reassign)  # fmt: skip
    return await _case_action(_rt(request), client_id, op)


@router.get("/cases/counts", response_model=CountsOut, tags=["cases"])
async def counts(request: Request, _: Reader) -> CountsOut:
    """How many cases per state and per (state, level)."""
    rt = _rt(request)
    async with rt.sessionmaker() as session:
        rows = await repo.case_counts(session)
    by_state: dict[str, int] = {}
    for state, _level, n in rows:
        by_state[state] = by_state.get(state, 0) + n
    return CountsOut(by_state=by_state,
                     by_state_and_level=[{"state": s, "level": lv, "count": n} for s, lv, n in rows])  # fmt: skip


@router.get("/cases", response_model=Page[CaseOut], tags=["cases"])
async def list_cases(
    request: Request, _: Reader, params: Paging, state: Annotated[DunningState | None, Query()] = None
) -> Page[CaseOut]:
    """Cases, optionally in one state (cursor pagination)."""
    rt = _rt(request)
    pos = params.position()
    async with rt.sessionmaker() as session:
        rows = await repo.cases_by_state(session, state.value if state else None, str(pos) if pos else None,
                                         params.limit + 1)  # fmt: skip
    return make_page([CaseOut(**_case_out(r)) for r in rows], params.limit, lambda c: c.case_id)


@router.get(
    "/cases/{client_id}", response_model=CaseDetailOut, tags=["cases"], responses=problem_responses(404)
)
async def get_case(request: Request, client_id: ClientId, _: Reader, params: Paging) -> CaseDetailOut:
    """A client's case with its tasks and its timeline: events in, decisions out, tasks, holds, commands."""
    rt = _rt(request)
    pos = params.position()
    async with rt.sessionmaker() as session:
        row = await repo.case_by_client(session, client_id)
        if row is None:
            raise ProblemError(404, "No dunning case for this client", field="client_id")
        tasks = await repo.tasks_of_case(session, row["case_id"])
        entries = await repo.timeline(session, client_id, int(pos) if pos else None, params.limit + 1)
        clients = await repo.load_clients(session, [client_id])
        invoices = await repo.load_invoices(session, [client_id])
    page = make_page([TimelineEntry.of(e) for e in entries], params.limit, lambda e: e.id)
    ledger = ledger_of(clients.get(client_id) or ClientRecord(client_id), invoices.get(client_id, {}))
    today = rt.clock.now().date()
    if ledger.profile is not None:
        today = rt.clock.now().astimezone(ZoneInfo(ledger.profile.time_zone)).date()
    overdue: dict[str, int] = {}
    for inv in ledger.invoices:
        if (today - inv.due_date).days >= 1 and not inv.disputed:
            overdue[inv.currency] = overdue.get(inv.currency, 0) + inv.amount_due
    balances = BalancesOut(
        open=[Money(amount_minor=v, currency=c) for c, v in sorted(ledger.open_balances().items())],
        overdue=[Money(amount_minor=v, currency=c) for c, v in sorted(overdue.items())],
        invoices=[
            InvoiceOut(invoice_id=i.invoice_id, number=i.number, due_date=i.due_date,
                       amount_due=Money(amount_minor=i.amount_due, currency=i.currency),
                       days_overdue=(today - i.due_date).days, disputed=i.disputed)
            for i in sorted(ledger.invoices, key=lambda i: (i.due_date, i.invoice_id))
        ],
    )  # fmt: skip
    return CaseDetailOut(**_case_out(row), balances=balances, tasks=[TaskOut.of(t) for t in tasks],
                         timeline=page.items, timeline_next_cursor=page.next_cursor)  # fmt: skip


@router.get("/policies", tags=["policies"])
async def policies(request: Request, _: Reader) -> dict[str, Any]:
    """The policies in match order (newest versions) and every stored version."""
    work = _work(_rt(request))
    return {
        "current": [{"name": p.name, "version": p.version} for p in work.policies.current],
        "versions": sorted(
            [{"name": n, "version": v} for n, v in work.policies.versions],
            key=lambda x: (x["name"], x["version"]),
        ),
    }


# ------------------------------------------------------------------------------------------ clock

clock_router = APIRouter(prefix="/v1/admin", tags=["admin"])


@clock_router.get("/clock")
async def get_clock(request: Request, _: Reader) -> dict[str, Any]:
    rt = _rt(request)
    return {"mode": rt.settings.clock.mode, "now": rt.clock.now(), "speed": rt.settings.clock.speed}


@clock_router.post("/clock/advance")
async def advance_clock(request: Request, body: ClockAdvanceIn, _: Ops) -> dict[str, Any]:
    """Simulated mode only: move the service clock forward; the scheduler looks at the timers at once."""
    rt = _rt(request)
    clock = rt.clock
    delta = timedelta(days=body.days, hours=body.hours, seconds=body.seconds)
    if delta <= timedelta(0):
        raise ProblemError(422, "Nothing to advance", "give days, hours or seconds > 0", field="days")
    advance = getattr(clock, "advance", None)
    if advance is None:
        raise ProblemError(404, "Not found", "the clock of this process cannot be moved")
    now: datetime = advance(delta)
    if rt.scheduler is not None:
        rt.scheduler.wake()
    return {"mode": rt.settings.clock.mode, "now": now}


def create_app(settings: Settings, *, clock: Clock | None = None,
               background: Collection[str] = bootstrap.ALL_PARTS) -> FastAPI:  # fmt: skip
    """The ASGI app; its lifespan loads the policies and runs the ``background`` parts."""
    runtime = bootstrap.build(settings, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running(background):
            yield

    app = create_service_app(
        SERVICE,
        __version__,
        readiness={
            "database": database_check(runtime.engine),
            "kafka": kafka_check(settings.kafka.bootstrap_servers),
        },
        lifespan=lifespan,
        sessionmaker=runtime.sessionmaker,
        description="Per-client dunning cases, policies, timers, manual tasks, promises, plans and holds.",
    )
    app.state.runtime = runtime
    app.include_router(router)
    if settings.clock.mode == "simulated":
        app.include_router(clock_router)
    else:
        app.add_api_route("/v1/admin/clock", get_clock, methods=["GET"], tags=["admin"])
    return app
