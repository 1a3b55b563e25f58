"""Topic names (design.md section 3). Every topic is keyed by client id."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    INVOICE_EVENTS = "ar.invoice.events"
    PAYMENT_EVENTS = "ar.payment.events"
    DUNNING_EVENTS = "ar.dunning.events"
    DUNNING_COMMANDS = "ar.dunning.commands"
    NOTIFY_EVENTS = "ar.notify.events"


DLQ_SUFFIX = ".dlq"


def dlq_of(topic: str) -> str:
    """The dead-letter topic of a topic: ``<topic>.dlq``."""
    return topic + DLQ_SUFFIX


def with_prefix(prefix: str, topic: str) -> str:
    """Physical topic name; a prefix isolates tests (or tenants) sharing one cluster."""
    return f"{prefix}{topic}"


def all_topics(prefix: str = "", *, with_dlq: bool = True) -> list[str]:
    names = [with_prefix(prefix, t.value) for t in Topic]
    return names + [dlq_of(n) for n in names] if with_dlq else names
