"""REST: the delivery log by client and by case, a template preview, and resend of a failed notification."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row

from ar_events.events import ClientProfile
from ar_events.jsontypes import JsonBool
from ar_web import (
    Page,
    PageParams,
    Principal,
    ProblemError,
    authenticated,
    create_service_app,
    database_check,
    kafka_check,
    make_page,
    page_params,
    problem_responses,
    require_scopes,
)
from notify_svc import __version__, handlers
from notify_svc.bootstrap import Services, build, run_worker
from notify_svc.domain.notifications import Kind
from notify_svc.rendering import TEMPLATE_KEYS, RenderError, build_context, client_locale
from notify_svc.repository import UnitOfWork
from notify_svc.settings import Settings

router = APIRouter(prefix="/v1", tags=["notifications"])


class AttemptOut(BaseModel):
    attempt: int
    generation: int
    started_at: datetime | None
    finished_at: datetime
    outcome: str
    code: str | None
    detail: str | None


class NotificationOut(BaseModel):
    id: str
    notification_key: str
    channel: str
    recipient: str
    client_id: str
    case_id: str | None
    cycle: int | None
    step: int | None
    kind: str
    template: str
    language: str
    status: str
    attempts: int
    generation: int
    next_attempt_at: datetime | None
    message_id: str | None
    last_error: str | None
    error_code: str | None
    permanent: bool | None
    source_event_id: str
    created_at: datetime
    sent_at: datetime | None
    attempt_log: list[AttemptOut] = []

    @classmethod
    def of(cls, row: Row[Any], attempts: list[Row[Any]]) -> NotificationOut:
        m = row._mapping
        return cls(
            **{k: m[k] for k in cls.model_fields if k != "attempt_log"},
            attempt_log=[AttemptOut(**{k: a._mapping[k] for k in AttemptOut.model_fields}) for a in attempts],
        )


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(description="Template key, e.g. overdue-1", examples=["overdue-1"])
    language: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$",
        description="Defaults to the client's language",
    )


class PreviewOut(BaseModel):
    template: str
    language: str
    subject: str
    text: str
    html: str


class ResendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clear_suppression: JsonBool = Field(
        default=False, description="Take the address off the suppression list first"
    )


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]
PageDep = Annotated[PageParams, Depends(page_params)]


def _after(params: PageParams) -> tuple[datetime, str] | None:
    pos = params.position()
    if pos is None:
        return None
    try:
        at, nid = pos
        return datetime.fromisoformat(str(at)), str(nid)
    except (TypeError, ValueError) as exc:
        raise ProblemError(
            400, "Invalid cursor", "The cursor is not one this API returned", field="cursor"
        ) from exc


async def _log_page(
    services: Services, params: PageParams, *, client_id: str | None, case_id: str | None
) -> Page[NotificationOut]:
    async with UnitOfWork(services.sessionmaker) as uow:
        rows = await uow.repo.log_page(
            client_id=client_id, case_id=case_id, after=_after(params), limit=params.limit + 1
        )
        attempts = await uow.repo.attempts_of([r.id for r in rows[: params.limit]])
    items = [NotificationOut.of(r, attempts.get(r.id, [])) for r in rows]
    return make_page(items, params.limit, lambda n: [n.created_at.isoformat(), n.id])


@router.get("/clients/{client_id}/notifications", response_model=Page[NotificationOut])
async def client_log(
    client_id: str, services: ServicesDep, params: PageDep, _: Annotated[Principal, Depends(authenticated())]
) -> Page[NotificationOut]:
    """The delivery log of one client, newest first, every attempt included."""
    return await _log_page(services, params, client_id=client_id, case_id=None)


@router.get("/cases/{case_id}/notifications", response_model=Page[NotificationOut])
async def case_log(
    case_id: str, services: ServicesDep, params: PageDep, _: Annotated[Principal, Depends(authenticated())]
) -> Page[NotificationOut]:
    """The delivery log of one dunning case, newest first."""
    return await _log_page(services, params, client_id=None, case_id=case_id)


@router.get(
    "/notifications/{notification_id}", response_model=NotificationOut, responses=problem_responses(404)
)
async def get_notification(
    notification_id: str, services: ServicesDep, _: Annotated[Principal, Depends(authenticated())]
) -> NotificationOut:
    async with UnitOfWork(services.sessionmaker) as uow:
        row = await uow.repo.get(notification_id)
        if row is None:
            raise ProblemError(404, "Notification not found", field="notification_id")
        attempts = await uow.repo.attempts_of([row.id])
    return NotificationOut.of(row, attempts[row.id])


@router.post(
    "/notifications/{notification_id}/resend",
    status_code=202,
    response_model=NotificationOut,
    responses=problem_responses(404, 409),
)
async def resend(
    notification_id: str,
    services: ServicesDep,
    _: Annotated[Principal, Depends(require_scopes("collections:write"))],
    body: ResendIn | None = None,
) -> NotificationOut:
    """Queue a failed (or unknown) notification again: a new generation, so a new Message-ID."""
    try:
        row = await handlers.resend_notification(
            UnitOfWork(services.sessionmaker),
            notification_id,
            clear_suppression=body is not None and body.clear_suppression,
            now=services.clock.now(),
        )
    except handlers.NotFound as exc:
        raise ProblemError(404, "Notification not found", field="notification_id") from exc
    except handlers.NotResendable as exc:
        raise ProblemError(409, exc.title, exc.detail, field="notification_id") from exc
    if services.dispatcher is not None:
        services.dispatcher.wake()
    return NotificationOut.of(row, [])


_STATEMENT_KINDS = {
    "upcoming": Kind.REMINDER,
    "overdue-1": Kind.REMINDER,
    "overdue-2": Kind.REMINDER,
    "final-notice": Kind.AGENCY_WARNING,
}


@router.post("/clients/{client_id}/preview", response_model=PreviewOut, responses=problem_responses(404, 422))
async def preview(
    client_id: str,
    body: PreviewIn,
    services: ServicesDep,
    _: Annotated[Principal, Depends(require_scopes("collections:write"))],
) -> PreviewOut:
    """Render a template for a client from the contact projection and the latest statement; nothing is sent."""
    if body.template not in TEMPLATE_KEYS:
        raise ProblemError(
            422, "Unknown template", f"known templates: {', '.join(TEMPLATE_KEYS)}", field="template"
        )
    async with UnitOfWork(services.sessionmaker) as uow:
        profile = await uow.repo.contact_profile(client_id)
        statement = await uow.repo.statement(client_id)
    if profile is None:
        raise ProblemError(404, "Client not known to notify-svc", field="client_id")
    client = ClientProfile.model_validate(profile)
    language = body.language or client.language
    now = services.clock.now()
    payload, kind = _preview_payload(body.template, client, statement, now)
    smtp = services.settings.smtp
    contact = client.contacts[0]
    ctx = build_context(
        kind=kind,
        payload=payload,
        client_name=client.name,
        client_id=client_id,
        recipient_name=contact.name,
        recipient=str(contact.email),
        sender_name=smtp.from_name,
        sender_email=smtp.from_address,
        sender_kind="ar_mailbox",
        company=smtp.from_name,
        locale=client_locale(language, client.country),
    )
    try:
        rendered = services.renderer.render(body.template, language, ctx)
    except RenderError as exc:
        raise ProblemError(422, "Template does not render", str(exc), field="template") from exc
    return PreviewOut(
        template=body.template,
        language=rendered.language,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )


def _preview_payload(
    template: str, client: ClientProfile, statement: dict[str, Any] | None, now: datetime
) -> tuple[dict[str, Any], Kind]:
    today = now.date()
    stmt = statement or {"as_of": today.isoformat(), "invoices": [], "totals": [], "overdue_totals": []}
    if template in _STATEMENT_KINDS:
        payload = {
            "statement": stmt,
            "level": 1,
            "step": 0,
            "case_id": "preview",
            "deadline": (today + timedelta(days=10)).isoformat(),
        }
        return payload, _STATEMENT_KINDS[template]
    first = (stmt.get("invoices") or [None])[0]
    total = first["amount_due"] if first else {"amount_minor": 0, "currency": "EUR"}
    if template == "invoice-issued":
        payload = {
            "number": first["number"] if first else "PREVIEW-1",
            "issue_date": today.isoformat(),
            "due_date": first["due_date"] if first else today.isoformat(),
            "total": total,
            "amount_due": total,
            "tax": {"amount_minor": 0, "currency": total["currency"]},
            "pay_link": stmt.get("pay_link"),
        }
        return payload, Kind.INVOICE
    if template == "payment-receipt":
        return {
            "amount": total,
            "received_at": now.isoformat(),
            "method": "transfer",
            "payment_id": "preview",
        }, Kind.RECEIPT
    return {
        "task_id": "preview",
        "kind": "policy_step",
        "overdue_totals": stmt.get("overdue_totals", []),
        "case_url": "",
        "priority": 0,
        "sla_due_at": now.isoformat(),
    }, Kind.TASK


def create_app(settings: Settings, *, with_worker: bool = False, services: Services | None = None) -> FastAPI:
    """The HTTP app; with ``with_worker`` the lifespan also runs consumers, relay and dispatcher (``all``)."""
    svc = services or build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(svc, stop)) if with_worker else None
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            if services is None:
                await svc.close()

    app = create_service_app(
        "notify-svc",
        __version__,
        readiness={
            "database": database_check(svc.engine),
            "kafka": kafka_check(settings.kafka.bootstrap_servers),
        },
        lifespan=lifespan,
        sessionmaker=svc.sessionmaker,
        description="Consolidated, localized reminders by email and signed webhooks, sent exactly once.",
    )
    app.state.services = svc
    app.include_router(router)
    return app
