"""Domain errors: each names the field at fault and the reason, so the edge can answer problem+json."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    INVALID = "invalid"  # the request contradicts a rule (422)
    CONFLICT = "conflict"  # the request clashes with current state (409)
    NOT_FOUND = "not_found"  # a referenced thing does not exist (404)


class DomainError(Exception):
    """A rule refused the change; nothing was written."""

    def __init__(self, kind: ErrorKind, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.kind = kind
        self.field = field
        self.reason = reason


def invalid(field: str, reason: str) -> DomainError:
    return DomainError(ErrorKind.INVALID, field, reason)


def conflict(field: str, reason: str) -> DomainError:
    return DomainError(ErrorKind.CONFLICT, field, reason)


def not_found(field: str, reason: str) -> DomainError:
    return DomainError(ErrorKind.NOT_FOUND, field, reason)
