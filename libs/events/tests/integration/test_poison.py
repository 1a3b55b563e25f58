"""Poison records go to <topic>.dlq with useful headers; later records are still processed; unknown types skip."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from ar_events_itest_support import TOPIC, TYPE, applied_rows, payment, recorder, setup_database, wait_until
from sqlalchemy.ext.asyncio import AsyncSession

from ar_events.consumer import ConsumerRunner
from ar_events.envelope import Envelope, encode
from ar_events.events import PaymentFailed
from ar_events.kafka import make_producer
from ar_events.settings import ConsumerSettings, KafkaSettings
from ar_events.testing import sample_event
from ar_events.topics import dlq_of

KEY = "cli_poison"


async def always_fails(session: AsyncSession, envelope: Envelope[Any]) -> None:
    raise RuntimeError(f"cannot apply {envelope.id}: ledger closed")


async def read_all(kafka: KafkaSettings, topic: str, expected: int, timeout: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(records) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


async def test_poison_records_are_dead_lettered_and_later_records_still_apply(
    any_database_url: str, kafka_settings: KafkaSettings
) -> None:
    engine, sessions = await setup_database(any_database_url)
    good = [payment(KEY, i) for i in range(5)]
    invalid = json.loads(encode(payment(KEY, 99)))
    invalid["data"]["amount"]["amount_minor"] = "lots"
    unknown = {**json.loads(encode(payment(KEY, 98))), "type": "ar.payment.teleported.v1"}
    failing = sample_event(PaymentFailed, client_id=KEY)
    values = [
        encode(good[0]),
        b"{not json",
        json.dumps(invalid).encode(),
        json.dumps(unknown).encode(),
        encode(failing),
        *(encode(e) for e in good[1:]),
    ]
    topic = kafka_settings.topic(TOPIC)
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        for value in values:  # one key: one partition, in this order
            await producer.send_and_wait(topic, value=value, key=KEY.encode(), headers=[("trace", b"t-1")])
    finally:
        await producer.stop()

    stop = asyncio.Event()
    runner = ConsumerRunner(
        "poison",
        [TOPIC],
        sessions,
        {TYPE: recorder("poison"), PaymentFailed.TYPE: always_fails},
        kafka_settings,
        ConsumerSettings(max_attempts=3, retry_initial_ms=10, retry_max_ms=50),
    )
    task = asyncio.create_task(runner.run(stop))
    try:

        async def all_good_applied() -> bool:
            return runner.stats.processed >= len(good) and runner.stats.dead_lettered >= 3

        await wait_until(all_good_applied, timeout=60)
        rows = await applied_rows(sessions)
        assert [r.event_id for r in rows] == [e.id for e in good]
        assert runner.stats.skipped_unknown == 1
        assert runner.stats.dead_lettered == 3

        dead = await read_all(kafka_settings, dlq_of(topic), expected=3)
        assert len(dead) == 3
        dead.sort(key=lambda r: int(dict(r.headers)["dlq.offset"]))
        headers = [{k: v.decode() for k, v in r.headers} for r in dead]
        assert [r.value for r in dead] == [values[1], values[2], values[4]]
        assert all(r.key == KEY.encode() for r in dead)
        for h in headers:
            assert h["dlq.topic"] == topic
            assert h["dlq.consumer"] == "poison"
            assert h["trace"] == "t-1", "original headers are kept"
            assert h["dlq.partition"] == str(dead[0].partition)
        assert [int(h["dlq.offset"]) for h in headers] == sorted(int(h["dlq.offset"]) for h in headers)
        assert "not JSON" in headers[0]["dlq.error"]
        assert headers[0]["dlq.attempts"] == "1"
        assert "amount" in headers[1]["dlq.error"] and headers[1]["dlq.error_type"] == "DecodeError"
        assert "ledger closed" in headers[2]["dlq.error"] and headers[2]["dlq.error_type"] == "RuntimeError"
        assert headers[2]["dlq.attempts"] == "3"
    finally:
        stop.set()
        await task
        await engine.dispose()
