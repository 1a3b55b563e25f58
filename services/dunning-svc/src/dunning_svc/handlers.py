"""Handlers: one entry per consumed message type, all feeding the same batch application service.

The consumer runner calls a handler per record inside ONE transaction per poll. A handler only queues the
envelope on the transaction; just before the runner commits, the queued records of every client are applied
together (``CaseWork.apply``: a few bulk queries per poll instead of several per record). An exception there
fails the transaction; the runner then retries record by record and dead-letters the one that keeps failing
(an invalid command, with its reason).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import await_only

from ar_events.clock import Clock
from ar_events.consumer import Handler
from ar_events.envelope import Envelope
from ar_events.events import (
    AgreePaymentPlan,
    AssignCollector,
    ChargebackClosed,
    ChargebackOpened,
    EscalateNow,
    NotificationFailed,
    NotificationSent,
    PauseDunning,
    PaymentFailed,
    PaymentReceived,
    PaymentRefunded,
    RecordPromiseToPay,
    ResumeDunning,
)
from dunning_svc.casework import CaseWork, Outcome
from dunning_svc.projection import PROJECTED

_BATCH_KEY = "dunning.batch"

#: every message type dunning-svc consumes, by topic
INVOICE_TYPES = tuple(cls.TYPE for cls in PROJECTED)
PAYMENT_TYPES = tuple(
    c.TYPE for c in (PaymentReceived, PaymentFailed, PaymentRefunded, ChargebackOpened, ChargebackClosed)
)
NOTIFY_TYPES = (NotificationSent.TYPE, NotificationFailed.TYPE)
COMMAND_TYPES = tuple(
    c.TYPE
    for c in (PauseDunning, ResumeDunning, EscalateNow, RecordPromiseToPay, AgreePaymentPlan, AssignCollector)
)
HANDLED_TYPES = INVOICE_TYPES + PAYMENT_TYPES + NOTIFY_TYPES + COMMAND_TYPES


class _Batch:
    def __init__(self) -> None:
        self.inputs: dict[str, list[Envelope[Any]]] = {}

    def add(self, envelope: Envelope[Any]) -> None:
        self.inputs.setdefault(envelope.subject, []).append(envelope)


async def on_message(
    work: CaseWork,
    clock: Clock,
    committed: Callable[[Outcome], None],
    session: AsyncSession,
    envelope: Envelope[Any],
) -> None:
    """Any consumed event or command: queue it on the transaction; applied in bulk just before commit."""
    batch: _Batch | None = session.info.get(_BATCH_KEY)
    if batch is None:
        batch = _Batch()
        session.info[_BATCH_KEY] = batch

        def before_commit(_sync_session: Any) -> None:
            # runs inside SQLAlchemy's greenlet: awaiting the async flush here is what the asyncio
            # extension itself does for every statement
            queued = session.info.pop(_BATCH_KEY, None)
            if queued is not None and queued.inputs:
                outcome = await_only(work.apply(session, queued.inputs, clock.now()))
                session.info["dunning.outcome"] = outcome

        def after_commit(_sync_session: Any) -> None:
            outcome = session.info.pop("dunning.outcome", None)
            if outcome is not None:
                committed(outcome)

        event.listen(session.sync_session, "before_commit", before_commit, once=True)
        event.listen(session.sync_session, "after_commit", after_commit, once=True)
    batch.add(envelope)


def consumer_handlers(
    work: CaseWork, clock: Clock, committed: Callable[[Outcome], None]
) -> Mapping[str, Handler]:
    """The HANDLERS registry of the consumer: every consumed type goes through ``on_message``."""

    async def handler(session: AsyncSession, envelope: Envelope[Any]) -> None:
        await on_message(work, clock, committed, session, envelope)

    return dict.fromkeys(HANDLED_TYPES, handler)
