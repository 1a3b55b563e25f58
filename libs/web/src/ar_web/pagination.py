"""Cursor pagination: opaque base64url cursors, ``limit`` 1..500, ``{"items": [...], "next_cursor": ...}``."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from ar_web.problems import ProblemError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    """One page of a list: the items and the cursor of the next page (null on the last page)."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(position: Any) -> str:
    """Any JSON-serialisable position (e.g. ``["2026-01-01T00:00:00Z", "inv_123"]``) -> opaque cursor."""
    raw = json.dumps(position, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Any:
    """Opaque cursor -> the position; a tampered or truncated cursor is a 400 problem on ``cursor``."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ProblemError(
            400, "Invalid cursor", "The cursor is not one this API returned", field="cursor"
        ) from exc


class PageParams(BaseModel):
    """Query parameters of a paginated list (use ``params: Annotated[PageParams, Depends(page_params)]``)."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None

    def position(self) -> Any:
        """The decoded cursor (None for the first page)."""
        return decode_cursor(self.cursor) if self.cursor else None


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1..500)")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="`next_cursor` of the previous page")
    ] = None,
) -> PageParams:
    """FastAPI dependency reading ``limit`` and ``cursor``."""
    return PageParams(limit=limit, cursor=cursor)


def make_page(rows: Sequence[T], limit: int, position_of: Any) -> Page[T]:
    """Build a page from ``limit + 1`` fetched rows: the extra row only says whether there is a next page.

    ``position_of(last_item)`` returns the keyset position to continue after (e.g. ``(created_at, id)``).
    """
    items = list(rows[:limit])
    next_cursor = encode_cursor(position_of(items[-1])) if len(rows) > limit and items else None
    return Page[T](items=items, next_cursor=next_cursor)
