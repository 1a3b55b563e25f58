"""Field types that take JSON's own types only, for what arrives over REST and Kafka.

FastAPI validates a parsed JSON body in pydantic's lax Python mode, which accepts ``"2"`` for an integer,
``true`` for ``1``, ``"yes"`` for a boolean and the number ``0`` (or the query string ``as_of=0``) for the date
1970-01-01. The published schemas say integer, boolean and ``format: date``; a client that sends something else
has a bug, and a billing system must not guess what it meant. These types keep pydantic's behaviour for the right
JSON types and refuse the rest with a reason that names the expected form. ``2.0`` stays an integer: JSON Schema
counts a number with a zero fractional part as one (and pydantic refuses ``2.5``).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, Strict
from pydantic_core import PydanticCustomError


def json_integer(value: Any) -> Any:
    """A before-validator for integers: a string or a boolean is refused, whatever its value; an int, a float with
    no fractional part (JSON Schema's integer) or an integral Decimal (as SQL sums arrive) passes on to pydantic."""
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError(
            "int_type", "must be an integer number, not {kind}", {"kind": type(value).__name__}
        )
    return value


#: an integer: not a string or a boolean
JsonInt = Annotated[int, BeforeValidator(json_integer)]
#: a boolean: not a string ("true"), nor 0 or 1
JsonBool = Annotated[bool, Strict()]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?")


def _iso_date(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.fullmatch(value):
        return value
    raise PydanticCustomError(
        "date_format", "a date is written YYYY-MM-DD (ISO 8601), not {value}", {"value": value}
    )


def _iso_date_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_TIME.fullmatch(value):
        return value
    raise PydanticCustomError(
        "datetime_format", "a date-time is written like 2026-03-16T09:30:00Z (RFC 3339), not {value}",
        {"value": value},
    )  # fmt: skip


#: a calendar date given as ``YYYY-MM-DD``; numbers (Unix times) are refused
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
#: an RFC 3339 date-time string; numbers (Unix times) are refused
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_date_time)]
#: the same, with its UTC offset required
IsoAwareDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_date_time)]
