"""A real poison record: the plumbing's consumer dead-letters it, `arctl dlq replay` sends it back, and once
the cause is fixed the same consumer handles it exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from ar_events.consumer import ConsumerRunner
from ar_events.db import make_engine, make_sessionmaker
from ar_events.envelope import encode, new_event
from ar_events.events import InvoiceIssued
from ar_events.kafka import make_producer
from ar_events.samples import sample_payload
from ar_events.settings import ConsumerSettings, KafkaSettings
from ar_events.tables import add_plumbing_tables
from ar_events.topics import Topic
from ar_ops import kafka_tools as kt


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_dead_letter_replayed_after_the_fix_is_handled_once(
    kafka_settings: KafkaSettings, database_url: str
) -> None:
    engine = make_engine(database_url)
    metadata = MetaData()
    add_plumbing_tables(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessionmaker = make_sessionmaker(engine)
    broken = True
    handled: list[str] = []

    async def on_invoice_issued(session: AsyncSession, envelope: Any) -> None:
        if broken:
            raise ValueError("template missing for segment smb")
        handled.append(envelope.id)

    runner = ConsumerRunner(
        "dlq-roundtrip",
        [Topic.INVOICE_EVENTS],
        sessionmaker,
        {InvoiceIssued.TYPE: on_invoice_issued},
        kafka_settings,
        ConsumerSettings(max_attempts=2, retry_initial_ms=10, retry_max_ms=20),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.ready.wait(), 30)
        envelope = new_event(
            InvoiceIssued.model_validate(sample_payload(InvoiceIssued)), source="test", time=datetime.now(UTC)
        )
        producer = make_producer(kafka_settings)
        await producer.start()
        try:
            await producer.send_and_wait(
                kafka_settings.topic(Topic.INVOICE_EVENTS),
                value=encode(envelope),
                key=envelope.subject.encode(),
            )
        finally:
            await producer.stop()

        async def dead_lettered() -> bool:
            return len(await kt.dlq_list(kafka_settings, "invoice")) == 1

        await _eventually(dead_lettered)
        [letter] = await kt.dlq_list(kafka_settings, "invoice")
        assert "template missing" in letter.headers["dlq.error"]
        assert letter.headers["dlq.consumer"] == "dlq-roundtrip"
        assert handled == []

        broken = False
        [replayed] = await kt.dlq_replay(kafka_settings, "invoice", replay_all=True)
        assert replayed.topic == kafka_settings.topic(Topic.INVOICE_EVENTS)

        async def handled_once() -> bool:
            return handled == [envelope.id]

        await _eventually(handled_once)
        # A second replay of the same dead letter is absorbed by the inbox: still handled once.
        await kt.dlq_replay(kafka_settings, "invoice", replay_all=True)

        async def duplicate_seen() -> bool:
            return runner.stats.duplicates == 1

        await _eventually(duplicate_seen)
        assert handled == [envelope.id]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await engine.dispose()
