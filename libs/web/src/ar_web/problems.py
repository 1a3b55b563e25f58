"""RFC 9457 problem details: the one error format of every service."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

PROBLEM_MEDIA_TYPE = "application/problem+json"

logger = logging.getLogger("ar_web.problems")

_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class FieldError(BaseModel):
    """One invalid input: where (dotted path, ``lines[0].quantity``) and why."""

    field: str
    reason: str
    location: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details; extension members are allowed."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    field: str | None = Field(default=None, description="The first offending input field, if any")
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """Raise anywhere in a request to answer with a problem+json response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        field: str | None = None,
        type: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.type = type
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        return problem_body(
            self.status,
            self.title,
            self.detail,
            field=self.field,
            type=self.type,
            instance=instance,
            extra=self.extra,
        )


def problem_body(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    field: str | None = None,
    type: str | None = None,
    instance: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of a problem; ``title`` defaults to the HTTP reason phrase."""
    body: dict[str, Any] = {
        "type": type or "about:blank",
        "title": title or _phrase(status),
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    if field is not None:
        body["field"] = field
    if extra:
        for key, value in extra.items():
            body.setdefault(key, value)
    return body


def problem_response(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    field: str | None = None,
    type: str | None = None,
    instance: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A ready problem+json response."""
    body = problem_body(status, title, detail, field=field, type=type, instance=instance, extra=extra)
    return Response(
        content=json.dumps(body, default=str).encode(),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def problem_bytes(status: int, title: str | None = None, detail: str | None = None) -> bytes:
    """Encoded problem body (for raw ASGI responses outside FastAPI's exception handling)."""
    return json.dumps(problem_body(status, title, detail)).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def field_path(loc: Sequence[int | str]) -> tuple[str | None, str]:
    """``("body", "lines", 0, "quantity")`` -> ``("body", "lines[0].quantity")``."""
    parts = list(loc)
    location: str | None = None
    if parts and parts[0] in _LOCATIONS:
        location = str(parts.pop(0))
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return location, out


def _reason(error: Mapping[str, Any]) -> str:
    msg = str(error.get("msg", "invalid"))
    return msg


def validation_problem(exc: RequestValidationError, instance: str | None = None) -> Response:
    """422 with one entry per invalid field, or 400 when the body is not JSON at all."""
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            ctx = error.get("ctx") or {}
            loc: tuple[Any, ...] = tuple(error.get("loc") or ())
            position = f" at position {loc[1]}" if len(loc) > 1 else ""
            return problem_response(
                400,
                "Malformed JSON body",
                f"The request body is not valid JSON: {ctx.get('error', 'decode error')}{position}",
                field="body",
                instance=instance,
            )
    field_errors: list[dict[str, Any]] = []
    for error in errors:
        location, path = field_path(error.get("loc") or ())
        field_errors.append(
            {"field": path or (location or "body"), "reason": _reason(error), "location": location}
        )
    first = field_errors[0]["field"] if field_errors else None
    detail = f"{first}: {field_errors[0]['reason']}" if field_errors else "The request failed validation"
    if len(field_errors) > 1:
        detail += f" (and {len(field_errors) - 1} more)"
    return problem_response(
        422,
        "Invalid request",
        detail,
        field=first,
        instance=instance,
        extra={"errors": field_errors},
    )


async def _on_problem_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        field=exc.field,
        type=exc.type,
        instance=request.url.path,
        extra=exc.extra,
        headers=exc.headers,
    )


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(exc, instance=request.url.path)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    extra: dict[str, Any] = {}
    if detail is None and exc.detail is not None:
        extra["errors"] = exc.detail
    if detail == _phrase(exc.status_code):
        detail = None
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        return problem_response(
            400, "Malformed request body", "The request body could not be parsed", field="body"
        )
    if exc.status_code == 413:
        return problem_response(413, "Request body too large", detail, instance=request.url.path)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; list every method of the path.
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return problem_response(
        exc.status_code,
        None,
        detail,
        instance=request.url.path,
        extra=extra,
        headers=headers,
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route fully matches for this path. FastAPI nests included routers (their routes are not
    in ``app.router.routes``), so each method is tried against the top-level routes' own ``matches``."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


_NUL_IN_TEXT = "22021"  # PostgreSQL: character_not_in_repertoire, i.e. a NUL character in a text value


async def _on_database_error(request: Request, exc: Exception) -> Response:
    """PostgreSQL text cannot hold NUL (JSON can: ``\\u0000``); only the request can have brought one (a body, a
    path or a filter), so it is the client's 422, and the transaction rolled back: nothing was written. Any other
    database error stays a 500."""
    if getattr(getattr(exc, "orig", None), "sqlstate", None) != _NUL_IN_TEXT:
        raise exc
    return problem_response(
        422, "Invalid request", "Text cannot contain the NUL character (\\u0000)", instance=request.url.path
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Answer ProblemError, HTTPException, validation errors and NUL characters the database refused as
    problem+json."""
    from sqlalchemy.exc import DBAPIError

    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(ProblemError, _on_problem_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)


_DESCRIPTIONS = {
    400: "Malformed request (for example a body that is not JSON)",
    401: "Missing or unknown API key",
    403: "The API key lacks the required scope",
    404: "Not found",
    409: "Conflict with the current state (or an Idempotency-Key reused with another body)",
    413: "Request body larger than the limit",
    422: "Invalid input: `errors` lists each field and the reason",
    429: "Too many requests",
    500: "Internal error",
    503: "Not ready",
}


def problem_schema_ref(status: int) -> dict[str, Any]:
    name = "ValidationProblem" if status == 422 else "Problem"
    return {
        "description": _DESCRIPTIONS.get(status, _phrase(status)),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json answers for the given statuses."""
    return {status: problem_schema_ref(status) for status in statuses}
