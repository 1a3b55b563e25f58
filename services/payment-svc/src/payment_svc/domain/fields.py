"""Small readers over parsed JSON that raise PayloadError naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ar_events.money import Money
from payment_svc.domain.model import PayloadError

MAX_ID = 128


def obj(parent: Any, key: str, path: str) -> dict[str, Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(value, dict):
        raise PayloadError(path, "must be an object")
    return value


def text(parent: dict[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
    value = parent.get(key)
    if value is None or value == "":
        if required:
            raise PayloadError(path, "is required")
        return None
    if not isinstance(value, str):
        raise PayloadError(path, "must be a string")
    if len(value) > MAX_ID:
        raise PayloadError(path, f"must be at most {MAX_ID} characters")
    if not value.isprintable():
        raise PayloadError(path, "must not contain control characters")
    return value


def free_text(value: Any, limit: int = 500) -> str | None:
    """Optional free text from a processor (a reason, a code): control characters dropped, length capped."""
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if c.isprintable() or c == " ")[:limit]
    return cleaned or None


def req_text(parent: dict[str, Any], key: str, path: str) -> str:
    value = text(parent, key, path)
    assert value is not None  # required=True never returns None
    return value


def integer(parent: dict[str, Any], key: str, path: str) -> int:
    value = parent.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(path, "must be an integer (minor units)")
    return value


def money(amount_minor: int, currency: Any, path: str) -> Money:
    """A positive amount in a known ISO 4217 currency (Stripe sends lower case codes)."""
    if not isinstance(currency, str):
        raise PayloadError(f"{path}.currency", "must be an ISO 4217 code")
    if amount_minor <= 0:
        raise PayloadError(f"{path}.amount", "must be greater than zero")
    try:
        return Money(amount_minor=amount_minor, currency=currency.upper())
    except ValidationError:
        raise PayloadError(f"{path}.currency", f"unknown ISO 4217 currency {currency!r}") from None


def unix_time(parent: dict[str, Any], key: str, path: str) -> datetime:
    value = parent.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 32503680000:
        raise PayloadError(path, "must be a unix time")
    return datetime.fromtimestamp(value, UTC)


def iso_time(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise PayloadError(path, "must be an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(path, "must be an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise PayloadError(path, "must carry a time zone offset")
    return parsed.astimezone(UTC)


def id_list(value: Any, path: str) -> tuple[str, ...]:
    """Invoice ids given as a list of strings or one comma-separated string."""
    if value is None or value == "":
        return ()
    items: list[Any]
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, list):
        items = value
    else:
        raise PayloadError(path, "must be a list of ids or a comma-separated string")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or len(item) > MAX_ID or not item.isprintable():
            raise PayloadError(path, "every id must be a printable string of at most 128 characters")
        if item and item not in out:
            out.append(item)
    if len(out) > 100:
        raise PayloadError(path, "at most 100 invoice ids")
    return tuple(out)
