"""Broker paused (SIGSTOP 10 s) and database connections terminated mid-batch: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from ar_events_itest_support import (
    TOPIC,
    TYPE,
    applied_count,
    applied_rows,
    assert_exactly_once,
    payment,
    recorder,
    setup_database,
    unpublished,
    wait_until,
    write,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from ar_events.broker import EmbeddedBroker
from ar_events.consumer import ConsumerRunner
from ar_events.envelope import Envelope
from ar_events.kafka import ensure_topics
from ar_events.relay import OutboxRelay
from ar_events.settings import ConsumerSettings, KafkaSettings, OutboxSettings
from ar_events.testing import asyncpg_dsn, unique_prefix


@pytest.mark.slow
async def test_broker_paused_for_10s_mid_flow_loses_nothing(
    database_url: str, embedded_broker: EmbeddedBroker
) -> None:
    kafka = KafkaSettings(bootstrap_servers=embedded_broker.bootstrap_servers, topic_prefix=unique_prefix())
    await ensure_topics(kafka)
    engine, sessions = await setup_database(database_url)
    stop = asyncio.Event()
    relay = OutboxRelay(sessions, kafka, OutboxSettings(batch_size=100), name="pause")
    runner = ConsumerRunner("pause", [TOPIC], sessions, {TYPE: recorder("pause")}, kafka)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(runner.run(stop))]
    events = [payment(f"cli_{i % 40}", i) for i in range(3000)]
    try:
        async with asyncio.timeout(30):
            await runner.ready.wait()
        writer = asyncio.create_task(write(sessions, events, per_tx=10, pause=0.05, after_commit=relay.wake))
        await wait_until(lambda: _applied_at_least(sessions, 300), timeout=30)
        embedded_broker.pause()
        try:
            await asyncio.sleep(10)
            assert not writer.done(), (
                "the pause must fall mid-flow: the service keeps writing to the outbox meanwhile"
            )
        finally:
            embedded_broker.resume()
        await writer

        async def all_applied() -> bool:
            return await applied_count(sessions) >= len(events) and await unpublished(sessions) == 0

        await wait_until(all_applied, timeout=120, interval=0.25)
        await asyncio.sleep(1)
        assert_exactly_once(await applied_rows(sessions), {e.id for e in events})
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()


async def _applied_at_least(sessions: Any, n: int) -> bool:
    return await applied_count(sessions) >= n


async def test_database_connections_terminated_mid_batch_are_retried_without_loss_or_doubles(
    postgres_url: str, kafka_settings: KafkaSettings
) -> None:
    engine, sessions = await setup_database(postgres_url)
    database = make_url(postgres_url).database
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    terminated: list[int] = []
    record = recorder("pgkill")
    seen = 0

    async def handler(session: AsyncSession, envelope: Envelope[Any]) -> None:
        nonlocal seen
        await record(session, envelope)
        seen += 1
        if seen in (150, 1100):  # mid-batch, twice: kill every connection of this database but ours
            rows = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            terminated.append(len(rows))

    stop = asyncio.Event()
    relay = OutboxRelay(sessions, kafka_settings, OutboxSettings(batch_size=250), name="pgkill")
    runner = ConsumerRunner(
        "pgkill",
        [TOPIC],
        sessions,
        {TYPE: handler},
        kafka_settings,
        ConsumerSettings(batch_max_records=500, retry_initial_ms=50, retry_max_ms=500),
    )
    events = [payment(f"cli_{i % 25}", i) for i in range(2000)]
    await write(sessions, events, per_tx=100)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(runner.run(stop))]
    try:

        async def all_applied() -> bool:
            return await applied_count(sessions) >= len(events) and await unpublished(sessions) == 0

        await wait_until(all_applied, timeout=90, interval=0.25)
        await asyncio.sleep(1)
        assert len(terminated) == 2 and all(terminated), "the handler's own connection was terminated twice"
        assert runner.stats.retries >= 2, "the failed batches were retried"
        assert runner.stats.dead_lettered == 0, "a lost connection is not the record's fault"
        assert_exactly_once(await applied_rows(sessions), {e.id for e in events})
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await admin.close()
        await engine.dispose()
