"""The Kafka consumer of dunning-svc: invoice, payment and notification events plus ops commands."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_events.clock import Clock
from ar_events.consumer import ConsumerRunner
from ar_events.settings import ConsumerSettings, KafkaSettings
from ar_events.topics import Topic
from dunning_svc.casework import CaseWork, Outcome
from dunning_svc.handlers import consumer_handlers
from dunning_svc.settings import SERVICE

TOPICS = (Topic.INVOICE_EVENTS, Topic.PAYMENT_EVENTS, Topic.NOTIFY_EVENTS, Topic.DUNNING_COMMANDS)


def build_consumer(
    group_id: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    work: CaseWork,
    clock: Clock,
    kafka: KafkaSettings,
    settings: ConsumerSettings,
    committed: Callable[[Outcome], None],
) -> ConsumerRunner:
    return ConsumerRunner(
        group_id,
        [t.value for t in TOPICS],
        sessionmaker,
        consumer_handlers(work, clock, committed),
        kafka,
        settings,
        name=SERVICE,
    )
