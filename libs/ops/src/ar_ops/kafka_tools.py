"""Kafka operations behind ``arctl``: topics, tail, lag, dead letters, commands, outbox re-publish.

Only the plain Kafka protocol is used (nothing broker-specific), so the same commands work against the
embedded broker and a real cluster. Lag comes from the consumer's ``committed()`` and ``end_offsets``
(admin ``list_consumer_group_offsets`` does not decode against the embedded broker, infra.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ar_events.envelope import CONTENT_TYPE, encode, new_event
from ar_events.events import Command
from ar_events.kafka import make_producer
from ar_events.settings import KafkaSettings
from ar_events.topics import DLQ_SUFFIX, Topic, dlq_of

log = logging.getLogger(__name__)

TOPIC_ALIASES = {
    "invoice": Topic.INVOICE_EVENTS,
    "invoices": Topic.INVOICE_EVENTS,
    "payment": Topic.PAYMENT_EVENTS,
    "payments": Topic.PAYMENT_EVENTS,
    "dunning": Topic.DUNNING_EVENTS,
    "commands": Topic.DUNNING_COMMANDS,
    "notify": Topic.NOTIFY_EVENTS,
}
DLQ_REPLAYED_FROM = "dlq.replayed_from"


def physical_topic(kafka: KafkaSettings, name: str) -> str:
    """``invoice`` / ``ar.invoice.events`` / an already prefixed name -> the topic name on the broker."""
    name = str(TOPIC_ALIASES.get(name, name))
    if kafka.topic_prefix and name.startswith(kafka.topic_prefix):
        return name
    return kafka.topic(name)


def _consumer(kafka: KafkaSettings, group_id: str | None = None, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
        "client_id": "arctl",
        "request_timeout_ms": 15_000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(**options)


@contextlib.asynccontextmanager
async def _started(consumer: AIOKafkaConsumer) -> AsyncIterator[AIOKafkaConsumer]:
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic)
    if parts is None:
        await consumer.topics()  # refresh metadata once
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise LookupError(f"topic {topic!r} does not exist")
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def _start_producer(producer: Any) -> None:
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise


async def end_offsets(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """End offsets, checked against the records themselves.

    The embedded broker answers ListOffsets(latest) with the base offset of the last record batch + 1, so a
    batch of several records at the end is under-counted. Reading from ``end - 1`` returns that whole batch,
    and its last offset + 1 is the true end (on a real Kafka the two agree). Uses ``consumer``'s assignment.
    """
    reported = {tp: int(o) for tp, o in (await consumer.end_offsets(list(tps))).items()}
    pending = {tp for tp in tps if reported[tp] > 0}
    if not pending:
        return reported
    consumer.assign(list(pending))
    for tp in pending:
        consumer.seek(tp, reported[tp] - 1)
    result = dict(reported)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while pending and loop.time() < deadline:
        batch = await consumer.getmany(*pending, timeout_ms=200)
        for tp, messages in batch.items():
            if messages:
                result[tp] = max(result[tp], messages[-1].offset + 1)
                pending.discard(tp)
    return result


# ------------------------------------------------------------------------------------------ topics


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    records: int  # end offset minus beginning offset, summed over partitions
    end_offsets: dict[int, int]


async def describe_topics(kafka: KafkaSettings, *, all_topics: bool = False) -> list[TopicInfo]:
    """Topics (with the configured prefix unless ``all_topics``), partition counts and record counts."""
    async with _started(_consumer(kafka)) as consumer:
        names = sorted(t for t in await consumer.topics() if not t.startswith("__"))
        if not all_topics and kafka.topic_prefix:
            names = [n for n in names if n.startswith(kafka.topic_prefix)]
        # Metadata first: once end_offsets() assigns partitions, the consumer tracks only those topics.
        by_topic = {name: await _partitions(consumer, name) for name in names}
        all_tps = [tp for tps in by_topic.values() for tp in tps]
        end = await end_offsets(consumer, all_tps) if all_tps else {}
        begin = await consumer.beginning_offsets(all_tps) if all_tps else {}
        return [
            TopicInfo(
                name=name,
                partitions=len(tps),
                records=sum(end[tp] - begin[tp] for tp in tps),
                end_offsets={tp.partition: end[tp] for tp in tps},
            )
            for name, tps in by_topic.items()
        ]


# ------------------------------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: str | None
    headers: dict[str, str]
    value: Any  # parsed JSON when the value is JSON, else the text
    raw_value: bytes | None = field(default=None, repr=False)
    raw_headers: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    @property
    def event_type(self) -> str | None:
        if isinstance(self.value, dict):
            value = self.value.get("type")
            return str(value) if value is not None else None
        return self.headers.get("ce_type")

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "key": self.key,
            "headers": self.headers,
            "value": self.value,
        }


def to_record(msg: Any) -> Record:
    raw = msg.value
    value: Any
    if raw is None:
        value = None
    else:
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = raw.decode("utf-8", errors="replace")
    headers = tuple((str(k), bytes(v or b"")) for k, v in (msg.headers or ()))
    return Record(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp=datetime.fromtimestamp(msg.timestamp / 1000, UTC)
        if msg.timestamp and msg.timestamp > 0
        else None,
        key=msg.key.decode("utf-8", errors="replace") if msg.key is not None else None,
        headers={k: v.decode("utf-8", errors="replace") for k, v in headers},
        value=value,
        raw_value=raw,
        raw_headers=headers,
    )


def matches(record: Record, *, client_id: str | None = None, event_type: str | None = None) -> bool:
    """Filter: the record key (= client id) or envelope subject, and the type (exact, glob or substring)."""
    if client_id is not None:
        subject = record.value.get("subject") if isinstance(record.value, dict) else None
        if client_id not in (record.key, subject):
            return False
    if event_type is not None:
        etype = record.event_type or ""
        if not (etype == event_type or fnmatch.fnmatchcase(etype, event_type) or event_type in etype):
            return False
    return True


async def tail(
    kafka: KafkaSettings,
    topic: str,
    *,
    client_id: str | None = None,
    event_type: str | None = None,
    from_beginning: bool = False,
    stop: asyncio.Event | None = None,
    until_end: bool = False,
) -> AsyncIterator[Record]:
    """Records of ``topic`` as they arrive (no consumer group, nothing committed), filtered.

    ``until_end``: stop once the end offsets seen at start are reached (scripts and tests).
    """
    name = physical_topic(kafka, topic)
    async with _started(_consumer(kafka)) as consumer:
        tps = await _partitions(consumer, name)
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        end = await consumer.end_offsets(tps) if until_end else {}
        while stop is None or not stop.is_set():
            if until_end and await _reached(consumer, end):
                return
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            for messages in batch.values():
                for msg in messages:
                    record = to_record(msg)
                    if matches(record, client_id=client_id, event_type=event_type):
                        yield record


async def _reached(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, last in end.items():
        if int(await consumer.position(tp)) < last:
            return False
    return True


async def read_all(kafka: KafkaSettings, topic: str) -> list[Record]:
    """Every record currently in ``topic`` (from the beginning to the end offsets at call time)."""
    return [record async for record in tail(kafka, topic, from_beginning=True, until_end=True)]


# ------------------------------------------------------------------------------------------ lag


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.committed or 0))


async def list_groups(kafka: KafkaSettings) -> list[str]:
    """Consumer group ids known to the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id="arctl")
    try:
        await admin.start()
        groups = await admin.list_consumer_groups()
    finally:
        await admin.close()
    return sorted({str(g[0]) for g in groups})


# The services' default consumer groups: listed even before they commit anything (some brokers list a
# group only once it has committed offsets).
KNOWN_GROUPS = ("invoice-svc", "dunning-svc", "notify-svc")


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group: str
    state: str  # Stable, PreparingRebalance, Empty, Dead, ...
    members: int


async def describe_groups(kafka: KafkaSettings, groups: Iterable[str]) -> list[GroupInfo]:
    """State and member count of each group; groups the broker does not know are left out."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id="arctl")
    out = []
    try:
        await admin.start()
        for group in groups:
            for response in await admin.describe_consumer_groups([group]):
                for described in response.groups:
                    error, group_id, state = described[0], described[1], described[2]
                    members = described[5] if len(described) > 5 else []
                    if error == 0 and state not in ("Dead", ""):
                        out.append(GroupInfo(str(group_id), str(state), len(members)))
    finally:
        await admin.close()
    return out


async def consumer_lag(
    kafka: KafkaSettings, groups: Sequence[str] | None = None, topics: Iterable[str] | None = None
) -> list[PartitionLag]:
    """Committed offset against end offset for every partition a group has committed on."""
    group_ids = list(groups) if groups else await list_groups(kafka)
    async with _started(_consumer(kafka)) as meta:
        names = (
            [physical_topic(kafka, t) for t in topics]
            if topics
            else sorted(
                t
                for t in await meta.topics()
                if not t.startswith("__") and (not kafka.topic_prefix or t.startswith(kafka.topic_prefix))
            )
        )
        tps = [tp for name in names for tp in await _partitions(meta, name)]
        # Committed offsets first, end offsets after: a record arriving in between can only
        # overstate the lag, never make it negative.
        committed: list[tuple[str, TopicPartition, int]] = []
        for group in group_ids:
            async with _started(_consumer(kafka, group_id=group)) as consumer:
                for tp in tps:
                    offset = await consumer.committed(tp)
                    if offset is not None:
                        committed.append((group, tp, int(offset)))
        end = await end_offsets(meta, list({tp for _, tp, _ in committed})) if committed else {}
    return [
        PartitionLag(group, tp.topic, tp.partition, offset, int(end[tp])) for group, tp, offset in committed
    ]


# ------------------------------------------------------------------------------------------ DLQ


def dlq_topic(kafka: KafkaSettings, topic: str) -> str:
    name = physical_topic(kafka, topic)
    return name if name.endswith(DLQ_SUFFIX) else dlq_of(name)


async def dlq_list(kafka: KafkaSettings, topic: str) -> list[Record]:
    """Every dead letter of ``topic`` (give the source topic or its ``.dlq``)."""
    return await read_all(kafka, dlq_topic(kafka, topic))


@dataclass(frozen=True, slots=True)
class Replayed:
    dlq_partition: int
    dlq_offset: int
    topic: str
    partition: int
    offset: int


async def dlq_replay(
    kafka: KafkaSettings,
    topic: str,
    *,
    offset: int | None = None,
    partition: int | None = None,
    replay_all: bool = False,
) -> list[Replayed]:
    """Re-produce dead letters to their source topic (from the ``dlq.topic`` header), same key and value.

    The ``dlq.*`` headers are dropped and ``dlq.replayed_from`` says where the copy came from. Consumers
    are idempotent, so replaying a record that was in fact handled is harmless.
    """
    if (offset is None) == (not replay_all):
        raise ValueError("give exactly one of --offset N or --all")
    letters = await dlq_list(kafka, topic)
    if not replay_all:
        letters = [
            r for r in letters if r.offset == offset and (partition is None or r.partition == partition)
        ]
        if not letters:
            raise LookupError(f"no dead letter at offset {offset} in {dlq_topic(kafka, topic)}")
        if len(letters) > 1:
            raise LookupError(
                f"offset {offset} exists in partitions {[r.partition for r in letters]}: give --partition"
            )
    producer = make_producer(kafka, client_id="arctl")
    await _start_producer(producer)
    out: list[Replayed] = []
    try:
        for letter in letters:
            source = letter.headers.get("dlq.topic") or dlq_topic(kafka, topic).removesuffix(DLQ_SUFFIX)
            headers = [(k, v) for k, v in letter.raw_headers if not k.startswith("dlq.")]
            headers.append((DLQ_REPLAYED_FROM, f"{letter.topic}:{letter.partition}:{letter.offset}".encode()))
            meta = await producer.send_and_wait(
                source,
                value=letter.raw_value,
                key=letter.key.encode() if letter.key is not None else None,
                headers=headers,
            )
            out.append(Replayed(letter.partition, letter.offset, source, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return out


# ------------------------------------------------------------------------------------------ commands


async def send_command(
    kafka: KafkaSettings, command: Command, *, now: datetime | None = None, source: str = "arctl"
) -> tuple[str, int, int]:
    """Produce a command event to ``ar.dunning.commands`` keyed by the client id; (topic, partition, offset)."""
    envelope = new_event(command, source=source, time=now or datetime.now(UTC))
    topic = kafka.topic(str(type(command).TOPIC))
    producer = make_producer(kafka, client_id="arctl")
    await _start_producer(producer)
    try:
        meta = await producer.send_and_wait(
            topic,
            value=encode(envelope),
            key=command.client_id.encode(),
            headers=[("content-type", CONTENT_TYPE.encode()), ("ce_type", command.TYPE.encode())],
        )
    finally:
        await producer.stop()
    return topic, meta.partition, meta.offset
