"""JSON logs, one object per line, carrying the request's correlation id."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from ar_events.context import (  # re-exported: the HTTP edge and consumers share one correlation id
    correlation_id_var,
    correlation_scope,
    current_correlation_id,
    new_correlation_id,
)

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "correlation_id_var",
    "correlation_scope",
    "current_correlation_id",
    "new_correlation_id",
]

# Attributes every LogRecord has; anything else passed via ``extra=`` is emitted as a field.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}  # uvicorn adds color_message (ANSI) to its records
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, service, logger, message, correlation_id, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None) or correlation_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: int | str = "INFO", *, stream: TextIO | None = None) -> None:
    """Route the root logger (and uvicorn's) to one JSON line per record on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
    # Access logs duplicate our own request metrics; keep them quiet unless debugging.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
