"""arctl's Kafka operations against a real broker (the embedded one unless KAFKA_BOOTSTRAP_SERVERS is set)."""

from __future__ import annotations

import asyncio
import json
from datetime import date

from aiokafka import TopicPartition

from ar_events.envelope import decode
from ar_events.events import EscalateNow, PauseDunning, ResumeDunning
from ar_events.kafka import make_consumer, make_producer
from ar_events.settings import KafkaSettings
from ar_events.topics import Topic
from ar_ops import kafka_tools as kt


async def _produce(
    kafka: KafkaSettings, topic: str, items: list[tuple[str, dict[str, object]]], **kw: object
) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value=json.dumps(value).encode(), key=key.encode(), **kw)  # type: ignore[arg-type]
    finally:
        await producer.stop()


async def test_topics_lists_the_contract_topics_with_partitions(kafka_settings: KafkaSettings) -> None:
    infos = {t.name: t for t in await kt.describe_topics(kafka_settings)}
    commands = kafka_settings.topic(Topic.DUNNING_COMMANDS)
    assert commands in infos
    assert kafka_settings.topic(Topic.INVOICE_EVENTS) + ".dlq" in infos
    assert infos[commands].partitions == kafka_settings.partitions
    assert infos[commands].records == 0


async def test_case_commands_are_produced_as_cloudevents_keyed_by_client(
    kafka_settings: KafkaSettings,
) -> None:
    await kt.send_command(kafka_settings, PauseDunning(client_id="c-1", until=date(2026, 12, 1), note="call"))
    await kt.send_command(kafka_settings, ResumeDunning(client_id="c-2"))
    await kt.send_command(kafka_settings, EscalateNow(client_id="c-1", requested_by="ops"))
    records = await kt.read_all(kafka_settings, "commands")
    assert len(records) == 3
    by_type = {r.event_type: r for r in records}
    pause = by_type[PauseDunning.TYPE]
    assert pause.key == "c-1"
    assert pause.headers["content-type"] == "application/cloudevents+json"
    envelope = decode(pause.raw_value)
    assert isinstance(envelope.data, PauseDunning)
    assert envelope.data.until == date(2026, 12, 1)
    assert envelope.subject == "c-1"
    # both commands of one client land in one partition, in order
    c1 = [r for r in records if r.key == "c-1"]
    assert len({r.partition for r in c1}) == 1
    assert [r.event_type for r in sorted(c1, key=lambda r: r.offset)] == [PauseDunning.TYPE, EscalateNow.TYPE]


async def test_tail_filters_by_client_and_type(kafka_settings: KafkaSettings) -> None:
    topic = kafka_settings.topic(Topic.INVOICE_EVENTS)
    await _produce(
        kafka_settings,
        topic,
        [
            ("c-1", {"type": "ar.invoice.issued.v1", "subject": "c-1", "data": {}}),
            ("c-2", {"type": "ar.invoice.issued.v1", "subject": "c-2", "data": {}}),
            ("c-1", {"type": "ar.invoice.paid.v1", "subject": "c-1", "data": {}}),
        ],
    )
    got = [
        r
        async for r in kt.tail(
            kafka_settings, "invoice", client_id="c-1", from_beginning=True, until_end=True
        )
    ]
    assert [r.event_type for r in got] == ["ar.invoice.issued.v1", "ar.invoice.paid.v1"]
    typed = [
        r
        async for r in kt.tail(
            kafka_settings, topic, event_type="invoice.issued", from_beginning=True, until_end=True
        )
    ]
    assert sorted(r.key or "" for r in typed) == ["c-1", "c-2"]


async def test_tail_follows_new_records(kafka_settings: KafkaSettings) -> None:
    stop = asyncio.Event()
    seen: list[kt.Record] = []

    async def follow() -> None:
        async for record in kt.tail(kafka_settings, "payment", stop=stop):
            seen.append(record)
            stop.set()

    task = asyncio.create_task(follow())
    await asyncio.sleep(1.0)  # tail seeks to the end first; produce after it is positioned
    await _produce(kafka_settings, kafka_settings.topic(Topic.PAYMENT_EVENTS), [("c-9", {"type": "x"})])
    await asyncio.wait_for(task, 20)
    assert [r.key for r in seen] == ["c-9"]


async def test_lag_is_end_offset_minus_committed(kafka_settings: KafkaSettings) -> None:
    topic = kafka_settings.topic(Topic.NOTIFY_EVENTS)
    await _produce(kafka_settings, topic, [("c-1", {"n": i}) for i in range(5)])
    records = await kt.read_all(kafka_settings, topic)
    partition = records[0].partition
    group = f"{kafka_settings.topic_prefix}lag-test"
    consumer = make_consumer(kafka_settings, group)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.commit({tp: 2})
    finally:
        await consumer.stop()
    lags = await kt.consumer_lag(kafka_settings, [group])
    assert [(lag.topic, lag.partition, lag.committed, lag.end, lag.lag) for lag in lags] == [
        (topic, partition, 2, 5, 3)
    ]
    assert group in await kt.list_groups(kafka_settings)


async def test_dlq_list_and_replay_one_then_all(kafka_settings: KafkaSettings) -> None:
    source = kafka_settings.topic(Topic.INVOICE_EVENTS)
    dlq = source + ".dlq"
    for n in range(2):
        await _produce(
            kafka_settings,
            dlq,
            [(f"c-{n}", {"type": "ar.invoice.issued.v1", "n": n})],
            headers=[
                ("content-type", b"application/cloudevents+json"),
                ("dlq.error", b"ValueError: boom"),
                ("dlq.topic", source.encode()),
                ("dlq.partition", b"0"),
                ("dlq.offset", str(n).encode()),
                ("dlq.consumer", b"dunning-svc"),
            ],
        )
    letters = await kt.dlq_list(kafka_settings, "invoice")
    assert len(letters) == 2
    assert {r.headers["dlq.error"] for r in letters} == {"ValueError: boom"}
    first = next(r for r in letters if r.key == "c-0")

    replayed = await kt.dlq_replay(kafka_settings, source, offset=first.offset, partition=first.partition)
    assert len(replayed) == 1
    back = await kt.read_all(kafka_settings, source)
    assert [(r.key, r.value["n"]) for r in back] == [("c-0", 0)]
    assert not any(k.startswith("dlq.") and k != kt.DLQ_REPLAYED_FROM for k in back[0].headers)
    assert back[0].headers["content-type"] == "application/cloudevents+json"
    assert back[0].headers[kt.DLQ_REPLAYED_FROM] == f"{dlq}:{first.partition}:{first.offset}"

    await kt.dlq_replay(kafka_settings, dlq, replay_all=True)
    back = await kt.read_all(kafka_settings, source)
    assert sorted(r.key or "" for r in back) == ["c-0", "c-0", "c-1"]


async def test_end_offsets_count_every_record_of_a_batched_produce(kafka_settings: KafkaSettings) -> None:
    """Several records sent in one batch: topics and lag still count all of them."""
    topic = kafka_settings.topic(Topic.PAYMENT_EVENTS)
    producer = make_producer(kafka_settings, linger_ms=100)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=b"{}", key=b"c-1", partition=2) for _ in range(3)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    info = {t.name: t for t in await kt.describe_topics(kafka_settings)}[topic]
    assert info.records == 3
    assert info.end_offsets[2] == 3
    group = f"{kafka_settings.topic_prefix}batch-lag"
    consumer = make_consumer(kafka_settings, group)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 2)
        consumer.assign([tp])
        await consumer.commit({tp: 1})
    finally:
        await consumer.stop()
    [lag] = await kt.consumer_lag(kafka_settings, [group])
    assert (lag.committed, lag.end, lag.lag) == (1, 3, 2)
