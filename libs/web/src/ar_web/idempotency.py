"""Idempotency-Key for POSTs that create something, stored in the same transaction as the effect.

Inside the service's unit of work::

    guard = await begin_idempotent(session, scope="POST /v1/invoices", key=idempotency_key, request=body)
    if guard.replay is not None:
        return guard.replay                        # same key, same body: the stored status and body
    invoice = await handlers.issue_invoice(...)     # the effect
    response = await guard.complete(session, 201, InvoiceOut.from_domain(invoice))
    await uow.commit()                              # effect and stored response commit together
    return response

``begin_idempotent`` inserts a reservation row first (``INSERT .. ON CONFLICT DO NOTHING``). A concurrent
duplicate blocks on the primary key until the first transaction ends, then sees the committed response and
replays it; if the first rolled back, the duplicate takes over. Same key with another body: 409.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Header
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import JSONResponse, Response

from ar_web.problems import ProblemError
from ar_web.tables import IDEMPOTENCY_KEY

REPLAY_HEADER = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a POST safely: the same key and body return the first response; another body is a 409",
    ),
]


def fingerprint(request: Any) -> str:
    """SHA-256 of the canonical JSON of a request (pydantic model, dict or raw bytes)."""
    if isinstance(request, bytes | bytearray):
        data = bytes(request)
    else:
        # A model's JSON-mode dump is already plain JSON data: jsonable_encoder would walk it again for
        # the same result (it dominated the CPU of an idempotent POST), so only other objects go through it.
        plain = (
            request.model_dump(mode="json") if isinstance(request, BaseModel) else jsonable_encoder(request)
        )
        data = json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The ``idempotency_key`` row values that record a response for ``(scope, key)``."""

    scope: str
    key: str
    status_code: int
    response_body: str
    response_headers: str | None

    def statement(self) -> Any:
        """The UPDATE that records it (in the caller's transaction)."""
        return (
            update(IDEMPOTENCY_KEY)
            .where(IDEMPOTENCY_KEY.c.scope == self.scope, IDEMPOTENCY_KEY.c.key == self.key)
            .values(
                status_code=self.status_code,
                response_body=self.response_body,
                response_headers=self.response_headers,
            )
        )


@dataclass(slots=True)
class IdempotencyGuard:
    """The outcome of :func:`begin_idempotent`: a replay to return, or the right to run the effect."""

    scope: str
    key: str | None
    fingerprint: str
    replay: Response | None = None

    def reservation(self, now: datetime) -> dict[str, Any]:
        """The ``idempotency_key`` row that reserves ``(scope, key)`` while the request runs."""
        return {"scope": self.scope, "key": self.key, "fingerprint": self.fingerprint, "created_at": now}

    async def resolve(self, session: AsyncSession) -> None:
        """Someone else reserved the key: set :attr:`replay` to the stored response, or raise a 409 problem."""
        row = (
            await session.execute(
                select(
                    IDEMPOTENCY_KEY.c.fingerprint,
                    IDEMPOTENCY_KEY.c.status_code,
                    IDEMPOTENCY_KEY.c.response_body,
                    IDEMPOTENCY_KEY.c.response_headers,
                ).where(IDEMPOTENCY_KEY.c.scope == self.scope, IDEMPOTENCY_KEY.c.key == self.key)
            )
        ).first()
        if row is None or row.status_code is None:
            raise ProblemError(
                409,
                "Request in progress",
                "Another request with this Idempotency-Key is still being processed; retry later",
                field="Idempotency-Key",
                headers={"Retry-After": "1"},
            )
        if row.fingerprint != self.fingerprint:
            raise ProblemError(
                409,
                "Idempotency-Key reused",
                "This Idempotency-Key was already used with a different request body",
                field="Idempotency-Key",
            )
        headers = dict(json.loads(row.response_headers)) if row.response_headers else {}
        headers[REPLAY_HEADER] = "true"
        self.replay = Response(
            content=(row.response_body or "null").encode(),
            status_code=row.status_code,
            media_type="application/json",
            headers=headers,
        )

    async def complete(
        self,
        session: AsyncSession,
        status_code: int,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Record the response in the current transaction (the caller commits) and return it."""
        stored, response = self.prepare(status_code, body, headers=headers)
        if stored is not None:
            await session.execute(stored.statement())
        return response

    def prepare(
        self, status_code: int, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> tuple[StoredResponse | None, Response]:
        """The response, and the record of it to store (None without a key), without touching the database.

        :meth:`complete` stores it at once; a service may instead write it with its own statements in the
        same transaction (``stored.statement()``, or folded into one of its statements). A pydantic model
        is serialised once, by pydantic.
        """
        if isinstance(body, BaseModel):
            text = body.model_dump_json(by_alias=True)
            response: Response = Response(
                text.encode(), status_code=status_code, media_type="application/json", headers=headers
            )
        else:
            content = jsonable_encoder(body)
            text = json.dumps(content, separators=(",", ":"))
            response = JSONResponse(content, status_code=status_code, headers=dict(headers or {}))
        if self.key is None:
            return None, response
        stored = StoredResponse(
            scope=self.scope,
            key=self.key,
            status_code=status_code,
            response_body=text,
            response_headers=json.dumps(dict(headers)) if headers else None,
        )
        return stored, response


def idempotency_guard(*, scope: str, key: str | None, request: Any) -> IdempotencyGuard:
    """A guard for ``(scope, key)`` that has not reserved anything yet (no I/O).

    For a service that folds the reservation into one of its own statements: insert
    ``guard.reservation(now)`` into ``idempotency_key`` with ``ON CONFLICT DO NOTHING``, and when no row
    was inserted, ``await guard.resolve(session)``. :func:`begin_idempotent` does both.
    """
    # Without a key there is nothing to compare with, so no fingerprint.
    return IdempotencyGuard(scope=scope, key=key, fingerprint=fingerprint(request) if key is not None else "")


async def begin_idempotent(
    session: AsyncSession,
    *,
    scope: str,
    key: str | None,
    request: Any,
    now: datetime | None = None,
) -> IdempotencyGuard:
    """Reserve ``(scope, key)`` in the current transaction, or find the stored response to replay.

    Without a key (header absent) the guard does nothing and the request runs normally.
    Raises 409 ProblemError when the key was used with another request body, or is held by a request
    that committed without completing.
    """
    guard = idempotency_guard(scope=scope, key=key, request=request)
    if key is None:
        return guard
    values = guard.reservation(now or datetime.now(UTC))
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(IDEMPOTENCY_KEY).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(IDEMPOTENCY_KEY).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only PostgreSQL and SQLite are supported
        raise RuntimeError(f"idempotency keys are not supported on {dialect}")
    result = await session.execute(stmt)
    if getattr(result, "rowcount", 0) != 1:
        await guard.resolve(session)
    return guard


async def purge_idempotency_keys(session: AsyncSession, older_than: timedelta, *, now: datetime) -> int:
    """Delete stored keys older than ``older_than`` (run from a scheduler; the caller commits)."""
    result = await session.execute(
        delete(IDEMPOTENCY_KEY).where(IDEMPOTENCY_KEY.c.created_at < now - older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)
