"""When behind, the runner fetches and decodes the next poll while the current one's transaction runs, without
changing what is applied: the same order per key, exactly once, and a fetched poll that was never applied comes
again. A consumer that keeps up (small polls) does not read ahead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from ar_events_itest_support import (
    TOPIC,
    TYPE,
    Applied,
    applied_rows,
    assert_exactly_once,
    payment,
    setup_database,
    wait_until,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ar_events import consumer as consumer_module
from ar_events.consumer import ConsumerRunner
from ar_events.envelope import Envelope, Payload, encode
from ar_events.kafka import make_producer
from ar_events.settings import ConsumerSettings, KafkaSettings

KEY = "cli_prefetch"


class Gate:
    """A handler that records each event and holds the transaction of ``hold_id`` open until released."""

    def __init__(self, hold_id: str) -> None:
        self.hold_id = hold_id
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, session: AsyncSession, envelope: Envelope[Any]) -> None:
        session.add(Applied(event_id=envelope.id, key=envelope.subject, consumer="prefetch"))
        if envelope.id == self.hold_id:
            self.entered.set()
            await self.release.wait()


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the envelopes the runner has decoded, in order (a spy on the pure decode function)."""
    seen: list[str] = []
    real = consumer_module.decode

    def spy(value: bytes | str | None) -> Envelope[Payload]:
        envelope = real(value)
        seen.append(envelope.id)
        return envelope

    monkeypatch.setattr(consumer_module, "decode", spy)
    return seen


async def _send(kafka: KafkaSettings, *envelopes: Envelope[Any]) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        for e in envelopes:  # one key: one partition, in this order
            await producer.send_and_wait(kafka.topic(TOPIC), value=encode(e), key=KEY.encode())
    finally:
        await producer.stop()


def _runner(sessions: Any, kafka: KafkaSettings, handler: Any, batch: int = 2) -> ConsumerRunner:
    """A runner whose polls of one record count as half a batch (it reads ahead after each), unless ``batch``
    says otherwise."""
    settings = ConsumerSettings(batch_max_records=batch)
    return ConsumerRunner("prefetch", [TOPIC], sessions, {TYPE: handler}, kafka, settings)


@dataclass
class Held:
    """A runner whose first event's transaction is held open by ``gate``."""

    sessions: Any
    gate: Gate
    stop: asyncio.Event
    runner: ConsumerRunner
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def held(url: str, kafka: KafkaSettings, first: Envelope[Any], batch: int = 2) -> AsyncIterator[Held]:
    """Start a runner, send ``first`` and wait until its handler holds the transaction open."""
    engine, sessions = await setup_database(url)
    gate = Gate(first.id)
    stop = asyncio.Event()
    runner = _runner(sessions, kafka, gate, batch)
    task = asyncio.create_task(runner.run(stop))
    try:
        await _send(kafka, first)
        await asyncio.wait_for(gate.entered.wait(), 30)
        yield Held(sessions, gate, stop, runner, task)
    finally:
        gate.release.set()
        stop.set()
        await task
        await engine.dispose()


async def test_the_next_poll_is_decoded_while_a_transaction_is_open_and_applies_after_it(
    any_database_url: str, kafka_settings: KafkaSettings, decoded: list[str]
) -> None:
    first, later = payment(KEY, 1), [payment(KEY, n) for n in range(2, 6)]
    async with held(any_database_url, kafka_settings, first) as h:
        await _send(kafka_settings, *later)  # produced while the first one's transaction is still open

        async def later_decoded() -> bool:  # one poll ahead: at least the first of them
            return later[0].id in decoded

        await wait_until(later_decoded, timeout=30, interval=0.02)
        assert h.runner.stats.processed == 0 and h.runner.stats.batches == 0, "the first batch is still open"

        h.gate.release.set()

        async def all_applied() -> bool:
            return h.runner.stats.processed == 1 + len(later)

        await wait_until(all_applied, timeout=30)
        rows = await applied_rows(h.sessions)
        assert [r.event_id for r in rows] == [first.id, *(e.id for e in later)], "order per key is kept"
        assert_exactly_once(rows, {first.id, *(e.id for e in later)})


async def test_a_poll_fetched_but_not_applied_at_stop_is_delivered_again(
    any_database_url: str, kafka_settings: KafkaSettings, decoded: list[str]
) -> None:
    first, second = payment(KEY, 1), payment(KEY, 2)
    async with held(any_database_url, kafka_settings, first) as h:
        await _send(kafka_settings, second)

        async def second_decoded() -> bool:
            return second.id in decoded

        await wait_until(second_decoded, timeout=30, interval=0.02)
        h.stop.set()  # the first batch finishes and commits; the second was only fetched
        h.gate.release.set()
        await asyncio.wait_for(h.task, 30)
        assert h.runner.stats.processed == 1
        assert [r.event_id for r in await applied_rows(h.sessions)] == [first.id]

        # A new member of the group starts from the committed offset: the second event, once.
        stop = asyncio.Event()
        again = _runner(h.sessions, kafka_settings, Gate(hold_id=""))
        task = asyncio.create_task(again.run(stop))
        try:

            async def second_applied() -> bool:
                return again.stats.processed >= 1

            await wait_until(second_applied, timeout=30)
            rows = await applied_rows(h.sessions)
            assert_exactly_once(rows, {first.id, second.id})
            assert [r.event_id for r in rows] == [first.id, second.id]
            assert again.stats.duplicates == 0, "the committed offset was past the first event"
        finally:
            stop.set()
            await task


async def test_a_small_poll_does_not_read_ahead(
    any_database_url: str, kafka_settings: KafkaSettings, decoded: list[str]
) -> None:
    """One record out of a batch of 500: the consumer keeps up, so the next record waits for the commit (reading
    ahead would only delay this batch with the next one's decoding)."""
    first, second = payment(KEY, 1), payment(KEY, 2)
    async with held(any_database_url, kafka_settings, first, batch=500) as h:
        await _send(kafka_settings, second)
        await asyncio.sleep(1.0)  # ample time for a read-ahead poll to fetch and decode it
        assert second.id not in decoded
        h.gate.release.set()

        async def both_applied() -> bool:
            return h.runner.stats.processed == 2

        await wait_until(both_applied, timeout=30)
        assert second.id in decoded
        assert [r.event_id for r in await applied_rows(h.sessions)] == [first.id, second.id]
