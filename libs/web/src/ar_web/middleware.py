"""The edge middleware: correlation id, request body limit, request metrics, last-resort 500s.

A single pure-ASGI middleware (cheaper than a stack of BaseHTTPMiddleware layers).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ar_web.logs import correlation_id_var, new_correlation_id
from ar_web.metrics import HTTP_LATENCY, HTTP_REJECTED, HTTP_REQUESTS
from ar_web.problems import PROBLEM_MEDIA_TYPE, problem_bytes

logger = logging.getLogger("ar_web.http")
access_logger = logging.getLogger("ar_web.access")

CORRELATION_HEADER = "x-correlation-id"
DEFAULT_BODY_LIMIT = 1024 * 1024
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: no access log lines
_VALID_CORRELATION = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class _BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    """Correlation id in and out, 413 on large bodies (declared or streamed), metrics, 500 as problem."""

    def __init__(
        self, app: ASGIApp, *, body_limit: int = DEFAULT_BODY_LIMIT, access_log: bool = True
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        correlation_id = _correlation_from(scope) or new_correlation_id()
        token = correlation_id_var.set(correlation_id)
        cid_header = (CORRELATION_HEADER.encode(), correlation_id.encode())
        status_holder = [500]
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append(cid_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.body_limit:
                HTTP_REJECTED.labels("body_too_large").inc()
                await _send_problem(send_wrapper, 413, "Request body too large", self._limit_detail())
                return
            try:
                receive, body = await self._buffer_body(receive)
            except _BodyTooLarge:
                HTTP_REJECTED.labels("body_too_large").inc()
                await _send_problem(send_wrapper, 413, "Request body too large", self._limit_detail())
                return
            lone = find_lone_surrogate(body) if body and _is_json(scope) else None
            if lone is not None:
                HTTP_REJECTED.labels("lone_surrogate").inc()
                await _send_problem(
                    send_wrapper,
                    400,
                    "Malformed JSON body",
                    f"The body contains the unpaired UTF-16 surrogate escape {lone}, which is not text",
                )
                return
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception:
                logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
                if not response_started:
                    await _send_problem(
                        send_wrapper,
                        500,
                        "Internal Server Error",
                        "An unexpected error occurred; quote the correlation id when reporting it",
                    )
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            status = str(status_holder[0])
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(method, route, status).inc()
            HTTP_LATENCY.labels(method, route, status).observe(elapsed)
            if self.access_log and access_logger.isEnabledFor(logging.INFO) and route not in _QUIET_ROUTES:
                access_logger.info(
                    "%s %s %s",
                    method,
                    scope.get("path", ""),
                    status,
                    extra={
                        "method": method,
                        "path": scope.get("path", ""),
                        "route": route,
                        "status": int(status),
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            correlation_id_var.reset(token)

    def _limit_detail(self) -> str:
        return f"The request body exceeds the limit of {self.body_limit} bytes"

    async def _buffer_body(self, receive: Receive) -> tuple[Receive, bytes]:
        """Read the whole body (at most the limit) before the app sees it; replay it afterwards."""
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            first: bytes = message.get("body", b"")
            if len(first) > self.body_limit:
                raise _BodyTooLarge
            return _replay([message], receive), first
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] != "http.request":
                # Client went away mid-body: let the app see the disconnect.
                return _replay([message], receive), b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_limit:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        body = b"".join(chunks)
        return _replay([{"type": "http.request", "body": body, "more_body": False}], receive), body


# A \uD800-\uDFFF escape not preceded by an odd number of backslashes, and the low half that may follow.
_SURROGATE_ESCAPE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u([dD][89a-fA-F][0-9a-fA-F]{2})(\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
)


def find_lone_surrogate(body: bytes) -> str | None:
    """The first unpaired surrogate escape in a JSON text (``\\udc00``), or None.

    JSON allows such escapes but they decode to strings no database or encoder accepts as UTF-8, so the
    request would fail later with a 500; refusing it at the edge makes it the client's 400.
    """
    if b"\\u" not in body:
        return None
    for match in _SURROGATE_ESCAPE.finditer(body):
        high = int(match.group(1), 16)
        if high >= 0xDC00 or match.group(2) is None:
            return "\\u" + match.group(1).decode().lower()
    return None


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return False


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _send_problem(send: Send, status: int, title: str, detail: str) -> None:
    body = problem_bytes(status, title, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _correlation_from(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-correlation-id":
            text: str = value.decode("latin-1")
            return text if _VALID_CORRELATION.match(text) else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "<unmatched>"
