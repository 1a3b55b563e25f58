"""The plumbing's Prometheus figures move with real traffic: produced and consumed per type, handler latency,
outbox backlog and the age of its oldest row, dead letters."""

from __future__ import annotations

import asyncio

from ar_events_itest_support import (
    TOPIC,
    TYPE,
    payment,
    recorder,
    setup_database,
    unpublished,
    wait_until,
    write,
)
from prometheus_client import REGISTRY

from ar_events.consumer import ConsumerRunner
from ar_events.relay import OutboxRelay
from ar_events.settings import ConsumerSettings, KafkaSettings, OutboxSettings


def _value(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_follow_events_through_relay_and_consumer(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    engine, sessions = await setup_database(database_url)
    relay_name, consumer = (
        f"metrics-relay-{kafka_settings.topic_prefix}",
        f"metrics-{kafka_settings.topic_prefix}",
    )
    events = [payment("cli_metrics", i) for i in range(7)]
    await write(sessions, events)
    relay = OutboxRelay(sessions, kafka_settings, OutboxSettings(poll_interval_ms=20), name=relay_name)
    count, age = await relay.measure_backlog()
    assert count == 7
    assert age >= 0.0
    assert _value("ar_events_outbox_backlog", {"relay": relay_name}) == 7

    stop = asyncio.Event()
    runner = ConsumerRunner(
        consumer, [TOPIC], sessions, {TYPE: recorder(consumer)}, kafka_settings, ConsumerSettings()
    )
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(runner.run(stop))]
    try:

        async def all_applied() -> bool:
            return runner.stats.processed >= len(events) and await unpublished(sessions) == 0

        await wait_until(all_applied, timeout=60)
        assert _value("ar_events_produced_total", {"relay": relay_name, "type": TYPE}) == 7
        assert _value("ar_events_consumed_total", {"consumer": consumer, "type": TYPE}) == 7
        assert _value("ar_events_handler_seconds_count", {"consumer": consumer, "type": TYPE}) == 7
        assert _value("ar_events_batch_seconds_count", {"consumer": consumer}) >= 1
        assert await relay.measure_backlog() == (0, 0.0)
        assert _value("ar_events_outbox_oldest_unsent_seconds", {"relay": relay_name}) == 0.0
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await engine.dispose()
