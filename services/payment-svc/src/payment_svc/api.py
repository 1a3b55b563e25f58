"""HTTP routes: signed webhooks, manual payments, parked events, accounts and secrets, customer mapping.

Routes are thin: they read the request, call a handler in ``handlers`` and shape the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ar_events.events import Id, PaymentMethod
from ar_events.jsontypes import IsoAwareDateTime, JsonBool, JsonInt
from ar_events.kafka import ensure_topics
from ar_events.money import CURRENCY_EXPONENTS, CurrencyCode, Money
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
from payment_svc import handlers
from payment_svc.accounts import AccountError, SecretInfo
from payment_svc.bootstrap import Container, build
from payment_svc.domain.model import PayloadError
from payment_svc.domain.signatures import SignatureError
from payment_svc.metrics import WEBHOOKS_ACCEPTED, WEBHOOKS_REJECTED
from payment_svc.settings import AccountKind, Settings

log = logging.getLogger("payment_svc.api")

ACCOUNT_NAME = r"^[A-Za-z0-9_-]{1,64}$"
AccountName = Annotated[str, Path(pattern=ACCOUNT_NAME, description="Processor account name")]
#: Identifiers from outside: printable, no control characters (PostgreSQL refuses NUL in text).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
#: Free text: line breaks and tabs allowed, never NUL (PostgreSQL text cannot hold it).
NO_NUL = r"^[^\x00]*$"
IdIn = Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
ResourceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]

# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


class WebhookAck(BaseModel):
    status: Literal["processed", "ignored", "parked", "duplicate"] = Field(
        description="processed: events queued; ignored: type not handled; parked: client unknown, "
        "waiting for review; duplicate: this event id was already received"
    )
    event_id: str
    event_type: str


class PaymentOut(BaseModel):
    id: str
    client_id: str | None = Field(description="null while the payment is parked")
    amount: Money
    method: PaymentMethod
    processor: str
    reference: str | None
    invoice_ids: list[str]
    received_at: datetime
    recorded_at: datetime

    @classmethod
    def of(cls, row: Any) -> PaymentOut:
        return cls(
            id=row.id,
            client_id=row.client_id,
            amount=Money(amount_minor=row.amount_minor, currency=row.currency),
            method=PaymentMethod(row.method),
            processor=row.processor,
            reference=row.reference,
            invoice_ids=list(row.invoice_ids or []),
            received_at=row.received_at,
            recorded_at=row.recorded_at,
        )


class AmountIn(BaseModel):
    """A positive amount in integer minor units of a known ISO 4217 currency."""

    model_config = ConfigDict(extra="forbid")

    amount_minor: JsonInt = Field(gt=0, le=10**15, description="Minor units (cents); > 0")
    currency: CurrencyCode = Field(json_schema_extra={"enum": list(sorted(CURRENCY_EXPONENTS))})

    def money(self) -> Money:
        return Money(amount_minor=self.amount_minor, currency=self.currency)


class ManualPaymentIn(BaseModel):
    """Money received outside a processor: a wire transfer, a check, cash."""

    model_config = ConfigDict(extra="forbid")

    client_id: IdIn
    amount: AmountIn
    method: Literal["wire", "transfer", "check", "cash", "other"] = Field(
        default="transfer", description="wire and transfer mean the same"
    )
    reference: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=PRINTABLE, description="Check number, bank ref"
    )
    invoice_ids: list[Id] = Field(default_factory=list, max_length=100)
    received_at: IsoAwareDateTime | None = Field(default=None, description="Defaults to now")
    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class SecretOut(BaseModel):
    id: str
    fingerprint: str = Field(description="sha256 prefix of the secret; the secret itself is never returned")
    source: Literal["settings", "api"]
    created_at: datetime | None = None

    @classmethod
    def of(cls, info: SecretInfo) -> SecretOut:
        return cls(id=info.id, fingerprint=info.fingerprint, source=info.source, created_at=info.created_at)  # type: ignore[arg-type]


class AccountOut(BaseModel):
    name: str
    kind: AccountKind
    webhook_path: str
    secrets: list[SecretOut]


STRIPE_SECRET = r"^[!-~]{16,512}$"
STANDARD_SECRET = r"^whsec_(?:[A-Za-z0-9+/]{4}){6,120}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class StripeAccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ACCOUNT_NAME)
    kind: Literal[AccountKind.STRIPE]
    secret: str | None = Field(
        default=None, pattern=STRIPE_SECRET, description="First signing secret (whsec_...)"
    )


class StandardAccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ACCOUNT_NAME)
    kind: Literal[AccountKind.STANDARD]
    secret: str | None = Field(
        default=None,
        pattern=STANDARD_SECRET,
        description="First signing secret: whsec_ + base64 of >= 16 bytes",
    )


AccountIn = Annotated[StripeAccountIn | StandardAccountIn, Field(discriminator="kind")]


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str = Field(
        pattern=STRIPE_SECRET,
        description="whsec_... as given by the processor; a standard account needs whsec_ + base64 (else 409)",
    )


class ParkedOut(BaseModel):
    id: str
    processor: str
    event_type: str
    reason: str
    customer_id: str | None
    webhook_event_id: str
    payload: dict[str, Any] = Field(
        description="The event that assignment will emit (client_id filled in then)"
    )
    parked_at: datetime


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: IdIn
    remember_customer: JsonBool = Field(
        default=True, description="Also map the processor's customer id to this client for future events"
    )


class AssignOut(BaseModel):
    parked_id: str
    client_id: str
    event_type: str
    payload: dict[str, Any]


class CustomerMappingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: IdIn


class CustomerMappingOut(BaseModel):
    processor: str
    customer_id: str
    client_id: str


# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------

router = APIRouter()


async def _container(request: Request) -> Container:
    # async on purpose: a sync dependency would run in the thread pool on every request.
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(_container)]

_RAW_JSON_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
}


def _header(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern, "maxLength": 8192},
    }


# Documented here rather than as FastAPI parameters: verification reads them from the raw request so a
# missing or malformed header is a 400 problem counted in the rejection metric, not a generic 422.
_STRIPE_DOC: dict[str, Any] = {
    "requestBody": _RAW_JSON_BODY,
    "parameters": [
        _header(
            "Stripe-Signature",
            r"^t=[0-9]{1,12}(,v1=[0-9a-f]{64})+$",
            "t=<unix time>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>; several v1 during a rotation",
        )
    ],
}
_STANDARD_DOC: dict[str, Any] = {
    "requestBody": _RAW_JSON_BODY,
    "parameters": [
        _header("webhook-id", r"^[A-Za-z0-9_.:-]{1,256}$", "Unique message id (the deduplication key)"),
        _header("webhook-timestamp", r"^[0-9]{1,12}$", "Unix time of signing"),
        _header(
            "webhook-signature",
            r"^v1,[A-Za-z0-9+/]{43}=( v1,[A-Za-z0-9+/]{43}=)*$",
            "Space-separated v1,<base64 HMAC-SHA256 of '<id>.<timestamp>.<raw body>'>",
        ),
    ],
}
_WEBHOOK_ERRORS = problem_responses(400, 401, 404, 413)


async def _webhook(
    c: Container, request: Request, account: str, kind: AccountKind, scheme: str
) -> WebhookAck:
    body = await request.body()
    try:
        result = await handlers.on_webhook(c.deps, account, kind, body, request.headers)
    except handlers.UnknownAccount:
        WEBHOOKS_REJECTED.labels(scheme, "unknown_account").inc()
        raise ProblemError(404, "Unknown account", f"No {kind.value} account named {account!r}") from None
    except SignatureError as exc:
        WEBHOOKS_REJECTED.labels(scheme, exc.reason.value).inc()
        title = "Malformed signature headers" if exc.status == 400 else "Signature verification failed"
        raise ProblemError(exc.status, title, exc.detail, extra={"reason": exc.reason.value}) from None
    except PayloadError as exc:
        WEBHOOKS_REJECTED.labels(scheme, "malformed_payload").inc()
        raise ProblemError(
            400,
            "Malformed webhook payload",
            exc.reason,
            field=exc.field,
            extra={"reason": "malformed_payload"},
        ) from None
    WEBHOOKS_ACCEPTED.labels(scheme, result.outcome.value).inc()
    return WebhookAck(status=result.outcome.value, event_id=result.event_id, event_type=result.event_type)


@router.post(
    "/v1/webhooks/stripe",
    response_model=WebhookAck,
    tags=["webhooks"],
    summary="Stripe-signed events for the account named `stripe`",
    responses=_WEBHOOK_ERRORS,
    openapi_extra=_STRIPE_DOC,
)
async def stripe_webhook(
    request: Request,
    c: ContainerDep,
) -> WebhookAck:
    return await _webhook(c, request, "stripe", AccountKind.STRIPE, "stripe")


@router.post(
    "/v1/webhooks/stripe/{account}",
    response_model=WebhookAck,
    tags=["webhooks"],
    summary="Stripe-signed events for another Stripe account",
    responses=_WEBHOOK_ERRORS,
    openapi_extra=_STRIPE_DOC,
)
async def stripe_account_webhook(
    request: Request,
    c: ContainerDep,
    account: AccountName,
) -> WebhookAck:
    return await _webhook(c, request, account, AccountKind.STRIPE, "stripe")


@router.post(
    "/v1/webhooks/standard/{account}",
    response_model=WebhookAck,
    tags=["webhooks"],
    summary="Standard Webhooks-signed generic payment events (see the README for the payload)",
    responses=_WEBHOOK_ERRORS,
    openapi_extra=_STANDARD_DOC,
)
async def standard_webhook(
    request: Request,
    c: ContainerDep,
    account: AccountName,
) -> WebhookAck:
    return await _webhook(c, request, account, AccountKind.STANDARD, "standard")


# ---- payments ------------------------------------------------------------------------------------


@router.post(
    "/v1/payments",
    status_code=201,
    response_model=PaymentOut,
    tags=["payments"],
    summary="Record a wire, check or cash payment (emits PaymentReceived)",
    responses=problem_responses(409),
)
async def create_payment(
    body: ManualPaymentIn,
    c: ContainerDep,
    principal: Annotated[Principal, Depends(require_scopes("payments:write"))],
    idempotency_key: IdempotencyKey = None,
) -> Any:
    now = c.clock.now()
    received_at = body.received_at or now
    cmd = handlers.ManualPayment(
        client_id=body.client_id,
        amount=body.amount.money(),
        method=PaymentMethod.TRANSFER if body.method == "wire" else PaymentMethod(body.method),
        reference=body.reference,
        invoice_ids=tuple(dict.fromkeys(body.invoice_ids)),
        received_at=received_at,
        note=body.note,
    )
    async with c.deps.uow() as uow:
        guard = await begin_idempotent(
            uow.session,
            scope=f"POST /v1/payments:{principal.key_id}",
            key=idempotency_key,
            request=body,
            now=now,
        )
        if guard.replay is not None:
            return guard.replay
        pid = await handlers.on_manual_payment(uow, cmd, now)
        row = await uow.payments.get(pid)
        response = await guard.complete(
            uow.session, 201, PaymentOut.of(row), headers={"Location": f"/v1/payments/{pid}"}
        )
        await uow.commit(now)
    c.deps.after_commit()
    return response


def _position(params: PageParams) -> tuple[datetime, str] | None:
    pos = params.position()
    if pos is None:
        return None
    try:
        at, pid = pos
        return datetime.fromisoformat(at), str(pid)
    except (TypeError, ValueError):
        raise ProblemError(
            400, "Invalid cursor", "The cursor is not one this API returned", field="cursor"
        ) from None


@router.get(
    "/v1/payments",
    response_model=Page[PaymentOut],
    tags=["payments"],
    summary="Payments, newest first",
    responses=problem_responses(400),
)
async def list_payments(
    c: ContainerDep,
    _: Annotated[Principal, Depends(authenticated())],
    params: Annotated[PageParams, Depends(page_params)],
    client_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=PRINTABLE)] = None,
) -> Page[PaymentOut]:
    after = _position(params)
    async with c.deps.uow() as uow:
        rows = await uow.payments.list_for_client(client_id, after, params.limit + 1)
    items = [PaymentOut.of(r) for r in rows]
    return make_page(items, params.limit, lambda p: [p.recorded_at.isoformat(), p.id])


@router.get(
    "/v1/payments/{payment_id}",
    response_model=PaymentOut,
    tags=["payments"],
    responses=problem_responses(404),
)
async def get_payment(
    c: ContainerDep,
    _: Annotated[Principal, Depends(authenticated())],
    payment_id: ResourceId,
) -> PaymentOut:
    async with c.deps.uow() as uow:
        row = await uow.payments.get(payment_id)
    if row is None:
        raise ProblemError(404, "Payment not found", f"No payment {payment_id!r}", field="payment_id")
    return PaymentOut.of(row)


# ---- parked events -------------------------------------------------------------------------------


@router.get(
    "/v1/parked",
    response_model=Page[ParkedOut],
    tags=["parked"],
    summary="Events waiting for a client",
    responses=problem_responses(400),
)
async def list_parked(
    c: ContainerDep,
    _: Annotated[Principal, Depends(authenticated())],
    params: Annotated[PageParams, Depends(page_params)],
) -> Page[ParkedOut]:
    after = _position(params)
    async with c.deps.uow() as uow:
        rows = await uow.parked.list_open(after, params.limit + 1)
    items = [
        ParkedOut(
            id=r.id,
            processor=r.processor,
            event_type=r.event_type,
            reason=r.reason,
            customer_id=r.customer_id,
            webhook_event_id=r.webhook_event_id,
            payload={k: v for k, v in r.payload.items() if k != "client_id"},
            parked_at=r.parked_at,
        )
        for r in rows
    ]
    return make_page(items, params.limit, lambda p: [p.parked_at.isoformat(), p.id])


@router.post(
    "/v1/parked/{parked_id}/assign",
    response_model=AssignOut,
    tags=["parked"],
    summary="Name the client of a parked event: the event is emitted",
    responses=problem_responses(404, 409),
)
async def assign_parked(
    body: AssignIn,
    c: ContainerDep,
    _: Annotated[Principal, Depends(require_scopes("payments:admin"))],
    parked_id: ResourceId,
) -> AssignOut:
    now = c.clock.now()
    async with c.deps.uow() as uow:
        try:
            payload = await handlers.on_assign_parked(
                uow, parked_id, body.client_id, body.remember_customer, now
            )
        except handlers.ParkedNotFound:
            raise ProblemError(404, "Parked event not found", f"No parked event {parked_id!r}") from None
        except handlers.AlreadyAssigned:
            raise ProblemError(409, "Already assigned", "This parked event was already assigned") from None
        await uow.commit(now)
    c.deps.after_commit()
    return AssignOut(
        parked_id=parked_id,
        client_id=body.client_id,
        event_type=payload.TYPE,
        payload=payload.model_dump(mode="json"),
    )


# ---- accounts, secrets, customer mapping -------------------------------------------------------------


def _account_error(exc: AccountError) -> ProblemError:
    return ProblemError(422 if exc.field == "secret" else 409, "Cannot apply", exc.reason, field=exc.field)


def _path_of(name: str, kind: AccountKind) -> str:
    if kind is AccountKind.STANDARD:
        return f"/v1/webhooks/standard/{name}"
    return "/v1/webhooks/stripe" if name == "stripe" else f"/v1/webhooks/stripe/{name}"


async def _account_out(c: Container, name: str) -> AccountOut:
    for acc_name, kind, infos in await c.secrets.describe():
        if acc_name == name:
            return AccountOut(
                name=name,
                kind=kind,
                webhook_path=_path_of(name, kind),
                secrets=[SecretOut.of(i) for i in infos],
            )
    raise ProblemError(404, "Unknown account", f"No account named {name!r}")


AdminDep = Annotated[Principal, Depends(require_scopes("payments:admin"))]


@router.get("/v1/accounts", response_model=list[AccountOut], tags=["accounts"], summary="Processor accounts")
async def list_accounts(c: ContainerDep, _: AdminDep) -> list[AccountOut]:
    return [
        AccountOut(name=n, kind=k, webhook_path=_path_of(n, k), secrets=[SecretOut.of(i) for i in infos])
        for n, k, infos in await c.secrets.describe()
    ]


@router.post(
    "/v1/accounts",
    status_code=201,
    response_model=AccountOut,
    tags=["accounts"],
    summary="Create a processor account (idempotent for the same name and kind)",
    responses=problem_responses(409),
)
async def create_account(body: AccountIn, c: ContainerDep, _: AdminDep) -> AccountOut:
    try:
        await c.secrets.add_account(body.name, body.kind, body.secret, c.clock.now())
    except AccountError as exc:
        raise _account_error(exc) from None
    log.info("account %s (%s) created or confirmed", body.name, body.kind.value)
    return await _account_out(c, body.name)


@router.post(
    "/v1/accounts/{account}/secrets",
    status_code=201,
    response_model=SecretOut,
    tags=["accounts"],
    summary="Add a signing secret (rotation: add the new one, then remove the old one)",
    responses=problem_responses(404, 409),
)
async def add_secret(body: SecretIn, account: AccountName, c: ContainerDep, _: AdminDep) -> SecretOut:
    try:
        info = await c.secrets.add_secret(account, body.secret, c.clock.now())
    except KeyError:
        raise ProblemError(404, "Unknown account", f"No account named {account!r}") from None
    except AccountError as exc:
        # The body is well-formed; it conflicts with the account's kind (a Stripe-style secret on a
        # Standard Webhooks account).
        raise ProblemError(409, "Secret does not fit the account", exc.reason, field=exc.field) from None
    log.info("secret %s added to account %s", info.fingerprint, account)
    return SecretOut.of(info)


@router.delete(
    "/v1/accounts/{account}/secrets/{secret_id}",
    status_code=204,
    tags=["accounts"],
    summary="Remove a signing secret: requests signed with it are refused from now on",
    responses=problem_responses(404, 409),
)
async def remove_secret(
    account: AccountName,
    secret_id: ResourceId,
    c: ContainerDep,
    _: AdminDep,
) -> Response:
    try:
        removed = await c.secrets.remove_secret(account, secret_id, c.clock.now())
    except AccountError as exc:
        raise _account_error(exc) from None
    if not removed:
        raise ProblemError(404, "Unknown secret", f"No active secret {secret_id!r} on account {account!r}")
    log.info("secret %s removed from account %s", secret_id, account)
    return Response(status_code=204)


@router.put(
    "/v1/customers/{processor}/{customer_id}",
    response_model=CustomerMappingOut,
    tags=["accounts"],
    summary="Map a processor's customer id to our client id",
)
async def put_customer(
    body: CustomerMappingIn,
    processor: AccountName,
    customer_id: Annotated[str, Path(min_length=1, max_length=128, pattern=PRINTABLE)],
    c: ContainerDep,
    _: AdminDep,
) -> CustomerMappingOut:
    now = c.clock.now()
    async with c.deps.uow() as uow:
        await uow.customers.put(processor, customer_id, body.client_id, now)
        await uow.commit(now)
    return CustomerMappingOut(processor=processor, customer_id=customer_id, client_id=body.client_id)


@router.get(
    "/v1/customers/{processor}/{customer_id}",
    response_model=CustomerMappingOut,
    tags=["accounts"],
    responses=problem_responses(404),
)
async def get_customer(
    processor: AccountName,
    customer_id: Annotated[str, Path(min_length=1, max_length=128, pattern=PRINTABLE)],
    c: ContainerDep,
    _: Annotated[Principal, Depends(authenticated())],
) -> CustomerMappingOut:
    async with c.deps.uow() as uow:
        client_id = await uow.customers.client_for(processor, customer_id)
    if client_id is None:
        raise ProblemError(404, "Unknown customer", f"No mapping for {processor}/{customer_id}")
    return CustomerMappingOut(processor=processor, customer_id=customer_id, client_id=client_id)


# --------------------------------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------------------------------


def create_app(settings: Settings, container: Container | None = None, *, run_relay: bool = False) -> FastAPI:
    """The payment-svc app; ``run_relay`` also publishes the outbox from this process (``all``)."""
    own = container is None
    c = container or build(settings, with_relay=run_relay and settings.relay.enabled)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        if run_relay and c.relay is not None:
            task = asyncio.create_task(run_relay_loop(c, stop), name="outbox-relay")
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            if own:
                await c.close()

    app = create_service_app(
        "payment-svc",
        "0.1.0",
        readiness={
            "database": database_check(c.engine),
            "kafka": kafka_check(settings.kafka.bootstrap_servers),
        },
        lifespan=lifespan,
        sessionmaker=c.sessionmaker,
        description="Signed payment-processor webhooks and manual payments; emits ar.payment.events",
    )
    app.state.container = c
    app.include_router(router)
    return app


async def run_relay_loop(c: Container, stop: asyncio.Event) -> None:
    """Create the topics, wait the configured delay, then publish the outbox until ``stop``."""
    assert c.relay is not None
    delay = c.settings.relay.start_delay_seconds
    if delay:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
    while not stop.is_set():
        try:
            await ensure_topics(c.settings.kafka)
            break
        except Exception:
            log.exception("topic bootstrap failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    await c.relay.run(stop)
