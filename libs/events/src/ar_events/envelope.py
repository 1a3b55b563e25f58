"""The CloudEvents 1.0 envelope in structured JSON mode, plus encode and decode.

The whole envelope is the Kafka record value (content type ``application/cloudevents+json``), so
``kcat -C`` or ``arctl tail`` shows readable events. ``data`` holds the typed payload.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import SchemaValidator

from ar_events.context import current_correlation_id
from ar_events.events import Payload, payload_class

CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"
SPEC_VERSION = "1.0"

P = TypeVar("P", bound=Payload)


class DecodeError(ValueError):
    """A record that cannot be read as one of our events; says what is wrong. Goes to the DLQ."""

    def __init__(self, reason: str, *, event_id: str | None = None, event_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.event_type = event_type


class UnknownEventType(DecodeError):
    """A well-formed envelope whose type this build does not know: skipped and counted, not dead-lettered."""


class Envelope(BaseModel, Generic[P]):
    """A CloudEvents 1.0 event with our ``correlationid`` and ``causationid`` extensions."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: str = SPEC_VERSION
    id: str = Field(min_length=1, description="UUID of this event; the inbox dedupes on it")
    source: str = Field(min_length=1, description="Emitting service, e.g. invoice-svc")
    type: str = Field(min_length=1, description="e.g. ar.invoice.issued.v1")
    time: AwareDatetime
    subject: str = Field(min_length=1, description="The client id; also the record key")
    datacontenttype: str = DATA_CONTENT_TYPE
    correlationid: str = Field(min_length=1)
    causationid: str | None = None
    data: P

    @property
    def key(self) -> bytes:
        return self.subject.encode()

    def encode(self) -> bytes:
        return encode(self)


def new_event(
    payload: P,
    *,
    source: str,
    time: datetime,
    caused_by: Envelope[Any] | None = None,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> Envelope[P]:
    """Wrap a payload; the correlation id follows its cause, else the request or message being handled."""
    if time.tzinfo is None:
        raise ValueError("event time must be timezone-aware")
    eid = event_id or str(uuid.uuid4())
    corr = correlation_id or (caused_by.correlationid if caused_by else current_correlation_id() or eid)
    return Envelope[P](
        id=eid,
        source=source,
        type=payload.TYPE,
        time=time.astimezone(UTC),
        subject=payload.client_id,
        correlationid=corr,
        causationid=caused_by.id if caused_by else None,
        data=payload,
    )


def encode(envelope: Envelope[Any]) -> bytes:
    """The record value: the whole envelope as compact UTF-8 JSON."""
    return envelope.model_dump_json(exclude_none=True).encode()


def decode(value: bytes | str | None) -> Envelope[Payload]:
    """Parse a record value into an envelope with a typed payload.

    Raises :class:`UnknownEventType` for a valid envelope of a type we do not know, and
    :class:`DecodeError` naming the problem for anything else.
    """
    if value is None:
        raise DecodeError("record has no value (tombstone)")
    # The common case in one pass of pydantic's JSON parser. The type is read from the raw bytes to pick the
    # model; the result only counts if the validated envelope's own ``type``, ``specversion`` and ``subject``
    # agree, so a nested ``"type"`` key cannot fool it. Anything else takes the careful path below.
    data = value.encode() if isinstance(value, str) else value
    match = _TYPE_FIELD.search(data)
    if match is not None:
        known = _FAST.get(match.group(1)) or _fast_validator(match.group(1))
        if known is not None:
            type_name, validate = known
            try:
                env: Envelope[Payload] = validate(data)
            except ValidationError:
                pass
            else:
                if (
                    env.type == type_name
                    and env.specversion == SPEC_VERSION
                    and env.subject == env.data.client_id
                ):
                    return env
    return _decode_carefully(data)


def _decode_carefully(value: bytes) -> Envelope[Payload]:
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"value is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeError(f"envelope must be a JSON object, got {type(raw).__name__}")
    event_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    type_name = raw.get("type") if isinstance(raw.get("type"), str) else None
    if raw.get("specversion") != SPEC_VERSION:
        raise DecodeError(f"specversion must be {SPEC_VERSION!r}", event_id=event_id, event_type=type_name)
    if type_name is None:
        raise DecodeError("envelope has no 'type'", event_id=event_id)
    model = _envelope_model(type_name)
    if model is None:
        raise UnknownEventType(f"unknown event type {type_name!r}", event_id=event_id, event_type=type_name)
    try:
        env: Envelope[Payload] = model.model_validate(raw)
    except ValidationError as exc:
        raise DecodeError(_describe(exc), event_id=event_id, event_type=type_name) from None
    if env.subject != env.data.client_id:
        raise DecodeError(
            f"subject {env.subject!r} differs from data.client_id {env.data.client_id!r}",
            event_id=event_id,
            event_type=type_name,
        )
    return env


_TYPE_FIELD = re.compile(rb'"type"\s*:\s*"([^"\\]{1,200})"')

#: Raw type bytes -> (type name, ``Envelope[cls].model_validate_json``) for the known types seen so far.
_FAST: dict[bytes, tuple[str, Callable[[bytes], Any]]] = {}


def _fast_validator(raw_type: bytes) -> tuple[str, Callable[[bytes], Any]] | None:
    """The validator of a type, without pydantic's wrapper when the core validator is built (the wrapper
    calls it with default options)."""
    type_name = raw_type.decode("utf-8", "replace")
    model = _envelope_model(type_name)
    if model is None:
        return None
    core = model.__pydantic_validator__
    validate = core.validate_json if isinstance(core, SchemaValidator) else model.model_validate_json
    if len(_FAST) < 10_000:  # bounded: the keys come from records
        _FAST[raw_type] = (type_name, validate)
    return type_name, validate


_ENVELOPE_MODELS: dict[str, type[Envelope[Any]]] = {}


def _envelope_model(type_name: str) -> type[Envelope[Any]] | None:
    """``Envelope[cls]`` for a type, built once: parametrising a generic model on every record is costly."""
    model = _ENVELOPE_MODELS.get(type_name)
    if model is None:
        cls = payload_class(type_name)
        if cls is None:
            return None
        model = _ENVELOPE_MODELS[type_name] = Envelope[cls]  # type: ignore[valid-type]
    return model


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "invalid envelope: " + "; ".join(parts) + more
