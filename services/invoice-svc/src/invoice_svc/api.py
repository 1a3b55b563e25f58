"""REST API under /v1: thin routes that open a unit of work and call the handlers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from ar_events.clock import Clock
from ar_events.jsontypes import IsoDate
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
    idempotency_guard,
    kafka_check,
    make_page,
    page_params,
    problem_response,
    problem_responses,
    require_scopes,
)
from invoice_svc import __version__, bootstrap, handlers
from invoice_svc.domain.errors import DomainError, ErrorKind
from invoice_svc.domain.model import InvoiceStatus
from invoice_svc.repository import UnitOfWork
from invoice_svc.schemas import (
    AgingOut,
    ClientIn,
    ClientOut,
    ClientPatch,
    CreditNoteIn,
    CreditNoteOut,
    DelayOut,
    DisputeIn,
    DisputeOut,
    DisputeResolutionIn,
    InvoiceIn,
    InvoiceOut,
    KpiOut,
    ParetoOut,
    StatementOut,
    VoidIn,
)
from invoice_svc.settings import SERVICE, Settings

WRITE = "invoices:write"
REPORTS = "reports:read"

router = APIRouter(prefix="/v1")

Writer = Annotated[Principal, Depends(require_scopes(WRITE))]
Reader = Annotated[Principal, Depends(authenticated())]
ReportReader = Annotated[Principal, Depends(require_scopes(REPORTS))]
Paging = Annotated[PageParams, Depends(page_params)]
Id = Annotated[str, Path(min_length=1, max_length=64)]
AsOf = Annotated[IsoDate | None, Query(description="Default: today on the service clock (UTC)")]

_STATUS = {ErrorKind.INVALID: (422, "Invalid request"), ErrorKind.CONFLICT: (409, "Conflict"),
           ErrorKind.NOT_FOUND: (404, "Not found")}  # fmt: skip


def _uow(request: Request) -> UnitOfWork:
    uow: UnitOfWork = request.app.state.make_uow()
    return uow


def _json(model: BaseModel) -> Response:
    """Serialise once (the route's response_model documents it; large reports skip re-validation)."""
    return Response(content=model.model_dump_json(), media_type="application/json")


def _after(params: PageParams) -> list[Any] | None:
    pos = params.position()
    if pos is None:
        return None
    try:
        when, key = pos
        at = datetime.fromisoformat(str(when))
        return [at if at.tzinfo else at.replace(tzinfo=UTC), str(key)]
    except (TypeError, ValueError):
        raise ProblemError(
            400, "Invalid cursor", "The cursor is not one this API returned", field="cursor"
        ) from None


# --------------------------------------------------------------------------------------------- clients


@router.post("/clients", status_code=201, response_model=ClientOut, tags=["clients"],
             responses=problem_responses(409))  # fmt: skip
async def create_client(
    request: Request, body: ClientIn, principal: Writer, idempotency_key: IdempotencyKey = None
) -> Any:
    """Register a client (external_id unique, at least one billing contact). Emits ClientRegistered."""
    async with _uow(request) as uow:
        guard = await begin_idempotent(
            uow.session, scope=f"POST /v1/clients:{principal.key_id}", key=idempotency_key, request=body,
            now=uow.clock.now(),
        )  # fmt: skip
        if guard.replay is not None:
            return guard.replay
        rec = await handlers.register_client(uow, body)
        response = await guard.complete(
            uow.session, 201, ClientOut.of(rec), headers={"Location": f"/v1/clients/{rec.id}"}
        )
        await uow.commit()
    return response


@router.get("/clients", response_model=Page[ClientOut], tags=["clients"], responses=problem_responses(400))
async def list_clients(
    request: Request,
    _: Reader,
    params: Paging,
    segment: Annotated[str | None, Query(max_length=64)] = None,
    external_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[ClientOut]:
    async with _uow(request) as uow:
        rows = await uow.clients.list_after(
            _after(params), params.limit + 1, segment=segment, external_id=external_id
        )
    return make_page(
        [ClientOut.of(r) for r in rows], params.limit, lambda c: [c.created_at.isoformat(), c.id]
    )


@router.get(
    "/clients/{client_id}", response_model=ClientOut, tags=["clients"], responses=problem_responses(404)
)
async def get_client(request: Request, client_id: Id, _: Reader) -> ClientOut:
    async with _uow(request) as uow:
        rec = await uow.clients.get(client_id)
    if rec is None:
        raise ProblemError(404, "Not found", f"no client {client_id!r}", field="client_id")
    return ClientOut.of(rec)


@router.patch("/clients/{client_id}", response_model=ClientOut, tags=["clients"],
              responses=problem_responses(404, 409))  # fmt: skip
async def update_client(request: Request, client_id: Id, body: ClientPatch, _: Writer) -> ClientOut:
    """Change some fields of a client. Emits ClientUpdated with the full profile."""
    async with _uow(request) as uow:
        rec = await handlers.update_client(uow, client_id, body)
        await uow.commit()
    return ClientOut.of(rec)


@router.get("/clients/{client_id}/statement", response_model=StatementOut, tags=["clients"],
            responses=problem_responses(404))  # fmt: skip
async def client_statement(request: Request, client_id: Id, _: Reader, as_of: AsOf = None) -> StatementOut:
    """Open items, balance per currency, oldest overdue item and unapplied credit."""
    async with _uow(request) as uow:
        return await handlers.statement(uow, client_id, as_of)


# -------------------------------------------------------------------------------------------- invoices


@router.post("/invoices", status_code=201, response_model=InvoiceOut, tags=["invoices"],
             responses=problem_responses(409))  # fmt: skip
async def issue_invoice(
    request: Request, body: InvoiceIn, principal: Writer, idempotency_key: IdempotencyKey = None
) -> Any:
    """Issue an invoice; totals in minor units, tax rounded half-up per line. Emits InvoiceIssued."""
    guard = idempotency_guard(
        scope=f"POST /v1/invoices:{principal.key_id}", key=idempotency_key, request=body
    )
    async with _uow(request) as uow:
        # The Idempotency-Key reservation rides on the handler's first read (one round trip on PostgreSQL).
        reserve = guard.reservation(uow.clock.now()) if idempotency_key is not None else None
        found = await uow.clients.for_issue(body.client_id, body.currency, body.number, reserve=reserve)
        if not found.reserved:
            await guard.resolve(uow.session)  # the stored response, or a 409 problem
            return guard.replay
        rec = await handlers.issue_invoice(uow, body, request.app.state.links, found)
        stored, response = guard.prepare(
            201, InvoiceOut.of(rec), headers={"Location": f"/v1/invoices/{rec.invoice.id}"}
        )
        uow.record_response(stored)  # written with the invoice (PostgreSQL: the same statement)
        await uow.commit()
    return response


@router.get("/invoices", response_model=Page[InvoiceOut], tags=["invoices"], responses=problem_responses(400))
async def list_invoices(
    request: Request,
    _: Reader,
    params: Paging,
    client_id: Annotated[str | None, Query(max_length=64)] = None,
    status: InvoiceStatus | None = None,
    overdue_as_of: Annotated[IsoDate | None, Query(description="Only invoices overdue on this date")] = None,
) -> Page[InvoiceOut]:
    async with _uow(request) as uow:
        rows = await uow.invoices.list_after(
            _after(params),
            params.limit + 1,
            client_id=client_id,
            status=status.value if status else None,
            overdue_as_of=overdue_as_of,
        )
    return make_page(
        [InvoiceOut.of(r) for r in rows], params.limit, lambda i: [i.created_at.isoformat(), i.id]
    )


@router.get(
    "/invoices/{invoice_id}", response_model=InvoiceOut, tags=["invoices"], responses=problem_responses(404)
)
async def get_invoice(request: Request, invoice_id: Id, _: Reader) -> InvoiceOut:
    async with _uow(request) as uow:
        rec = await uow.invoices.record(invoice_id)
    if rec is None:
        raise ProblemError(404, "Not found", f"no invoice {invoice_id!r}", field="invoice_id")
    return InvoiceOut.of(rec)


@router.post("/invoices/{invoice_id}/void", response_model=InvoiceOut, tags=["invoices"],
             responses=problem_responses(404, 409))  # fmt: skip
async def void_invoice(request: Request, invoice_id: Id, _: Writer, body: VoidIn | None = None) -> InvoiceOut:
    """Void an invoice that has no payment applied. Emits InvoiceVoided."""
    async with _uow(request) as uow:
        rec = await handlers.void_invoice(uow, invoice_id, body.reason if body else None)
        await uow.commit()
    return InvoiceOut.of(rec)


@router.post("/invoices/{invoice_id}/credit-notes", status_code=201, response_model=CreditNoteOut,
             tags=["invoices"], responses=problem_responses(404, 409))  # fmt: skip
async def create_credit_note(
    request: Request,
    invoice_id: Id,
    body: CreditNoteIn,
    principal: Writer,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """A partial or full credit note; never more than what remains due. Emits CreditNoteIssued."""
    async with _uow(request) as uow:
        guard = await begin_idempotent(
            uow.session, scope=f"POST /v1/invoices/{invoice_id}/credit-notes:{principal.key_id}",
            key=idempotency_key, request=body, now=uow.clock.now(),
        )  # fmt: skip
        if guard.replay is not None:
            return guard.replay
        cn, inv = await handlers.issue_credit_note(uow, invoice_id, body)
        response = await guard.complete(uow.session, 201, CreditNoteOut.of(cn, inv.amount_due))
        await uow.commit()
    return response


@router.get("/invoices/{invoice_id}/credit-notes", response_model=list[CreditNoteOut], tags=["invoices"],
            responses=problem_responses(404))  # fmt: skip
async def list_credit_notes(request: Request, invoice_id: Id, _: Reader) -> list[CreditNoteOut]:
    async with _uow(request) as uow:
        if await uow.invoices.get(invoice_id) is None:
            raise ProblemError(404, "Not found", f"no invoice {invoice_id!r}", field="invoice_id")
        return [CreditNoteOut.of(cn) for cn in await uow.invoices.credit_notes(invoice_id)]


# -------------------------------------------------------------------------------------------- disputes


@router.post("/invoices/{invoice_id}/disputes", status_code=201, response_model=DisputeOut, tags=["disputes"],
             responses=problem_responses(404, 409))  # fmt: skip
async def create_dispute(
    request: Request,
    invoice_id: Id,
    body: DisputeIn,
    principal: Writer,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Open a dispute on an open invoice. Emits DisputeOpened."""
    async with _uow(request) as uow:
        guard = await begin_idempotent(
            uow.session, scope=f"POST /v1/invoices/{invoice_id}/disputes:{principal.key_id}",
            key=idempotency_key, request=body, now=uow.clock.now(),
        )  # fmt: skip
        if guard.replay is not None:
            return guard.replay
        dispute, currency = await handlers.open_dispute(uow, invoice_id, body)
        response = await guard.complete(
            uow.session,
            201,
            DisputeOut.of(dispute, currency),
            headers={"Location": f"/v1/disputes/{dispute.id}"},
        )
        await uow.commit()
    return response


@router.get("/invoices/{invoice_id}/disputes", response_model=list[DisputeOut], tags=["disputes"],
            responses=problem_responses(404))  # fmt: skip
async def list_disputes(request: Request, invoice_id: Id, _: Reader) -> list[DisputeOut]:
    async with _uow(request) as uow:
        inv = await uow.invoices.get(invoice_id)
        if inv is None:
            raise ProblemError(404, "Not found", f"no invoice {invoice_id!r}", field="invoice_id")
        return [DisputeOut.of(d, inv.currency) for d in await uow.disputes.for_invoice(invoice_id)]


@router.get(
    "/disputes/{dispute_id}", response_model=DisputeOut, tags=["disputes"], responses=problem_responses(404)
)
async def get_dispute(request: Request, dispute_id: Id, _: Reader) -> DisputeOut:
    async with _uow(request) as uow:
        d = await uow.disputes.get(dispute_id)
        if d is None:
            raise ProblemError(404, "Not found", f"no dispute {dispute_id!r}", field="dispute_id")
        inv = await uow.invoices.get(d.invoice_id)
        assert inv is not None
        return DisputeOut.of(d, inv.currency)


@router.post("/disputes/{dispute_id}/resolve", response_model=DisputeOut, tags=["disputes"],
             responses=problem_responses(404, 409))  # fmt: skip
async def resolve_dispute(
    request: Request, dispute_id: Id, body: DisputeResolutionIn, _: Writer
) -> DisputeOut:
    """Resolve as upheld (issues a credit note) or rejected. Emits DisputeResolved (and CreditNoteIssued)."""
    async with _uow(request) as uow:
        d, currency = await handlers.resolve_dispute(uow, dispute_id, body)
        await uow.commit()
    return DisputeOut.of(d, currency)


# --------------------------------------------------------------------------------------------- reports


@router.get("/reports/aging", response_model=AgingOut, tags=["reports"])
async def aging(
    request: Request,
    _: ReportReader,
    as_of: AsOf = None,
    group_by: Literal["client", "account_manager", "segment"] = "client",
) -> Any:
    """Balances on a date in buckets current, 1-30, 31-60, 61-90, 90+ days past due, per currency."""
    async with _uow(request) as uow:
        return _json(await handlers.aging_report(uow, as_of, group_by))


@router.get("/reports/dso", response_model=KpiOut, tags=["reports"])
async def dso(
    request: Request,
    _: ReportReader,
    as_of: AsOf = None,
    period_days: Annotated[int, Query(ge=1, le=730)] = 90,
    months: Annotated[int, Query(ge=1, le=36, description="Months the countback may walk back")] = 12,
) -> Any:
    """Countback DSO, standard and best-possible DSO, average days delinquent and CEI, per currency."""
    async with _uow(request) as uow:
        return _json(await handlers.kpi_report(uow, as_of, period_days, months))


@router.get("/reports/payment-delay", response_model=DelayOut, tags=["reports"])
async def payment_delay(
    request: Request, _: ReportReader, as_of: AsOf = None, since: IsoDate | None = None
) -> Any:
    """Amount-weighted average days paid after the due date, per client and currency."""
    async with _uow(request) as uow:
        return _json(await handlers.payment_delay_report(uow, as_of, since))


@router.get("/reports/pareto", response_model=ParetoOut, tags=["reports"])
async def pareto(
    request: Request,
    _: ReportReader,
    as_of: AsOf = None,
    fraction: Annotated[float, Query(gt=0, le=1)] = 0.2,
) -> Any:
    """Share of the overdue balance held by the top 20% (``fraction``) of clients with an overdue balance."""
    async with _uow(request) as uow:
        return _json(await handlers.pareto_report(uow, as_of, fraction))


# ----------------------------------------------------------------------------------------------- wiring


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status, title = _STATUS[exc.kind]
    return problem_response(status, title, exc.reason, field=exc.field, instance=request.url.path)


async def _on_integrity_error(request: Request, exc: Exception) -> Response:
    # A concurrent request won a unique constraint (external_id, invoice number): nothing was written here.
    text = str(getattr(exc, "orig", exc))
    field = "external_id" if "external_id" in text else "number" if "number" in text else None
    detail = {
        "external_id": "a client with this external_id already exists",
        "number": "the client already has an invoice with this number",
    }.get(field or "", "a concurrent request changed the same data")
    return problem_response(409, "Conflict", detail, field=field, instance=request.url.path)


def install_routes(app: FastAPI) -> None:
    app.include_router(router)
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(IntegrityError, _on_integrity_error)


def create_app(
    settings: Settings, *, clock: Clock | None = None, background: Collection[str] = ("relay",)
) -> FastAPI:
    """The ASGI app; its lifespan runs the ``background`` parts (relay, consumer) and disposes the engine."""
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
        description="Clients, invoices, credit notes, disputes, statements and receivables reports.",
    )
    app.state.runtime = runtime
    app.state.make_uow = runtime.make_uow
    app.state.links = runtime.links
    install_routes(app)
    return app
