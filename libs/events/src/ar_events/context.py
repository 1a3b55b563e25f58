"""The correlation id of the request or message being handled, shared by events and logs.

The HTTP edge sets it from ``X-Correlation-Id``; the consumer runner sets it from each record's
``correlationid``. ``new_event`` uses it when an event has no cause, so one payment can be followed from the
webhook through every service with one grep.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

correlation_id_var: ContextVar[str | None] = ContextVar("ar_correlation_id", default=None)


def current_correlation_id() -> str | None:
    """The correlation id of the request (or message) being handled, if any."""
    return correlation_id_var.get()


def new_correlation_id() -> str:
    """A fresh correlation id (UUID4 with dashes)."""
    return str(uuid.uuid4())


@contextlib.contextmanager
def correlation_scope(correlation_id: str | None) -> Iterator[str]:
    """Inside, logs and new events carry ``correlation_id`` (a new one when None)."""
    cid = correlation_id or new_correlation_id()
    token = correlation_id_var.set(cid)
    try:
        yield cid
    finally:
        correlation_id_var.reset(token)
