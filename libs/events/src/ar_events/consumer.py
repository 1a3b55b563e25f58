"""The consumer runner: a Kafka consumer group member that applies each event exactly once to a database.

Per poll (``getmany``): decode every record; dead-letter the undecodable, skip unknown types; then apply the
rest in ONE transaction (inbox rows plus the handlers' effects) and commit it; then commit the Kafka offsets.
When a poll brings at least half a batch (the consumer is behind), the next poll is fetched and decoded in a task
of its own while this one's transaction runs, so the CPU work of reading records overlaps the database's work
instead of following it; batches are still applied and their offsets committed one after the other, in order.
When that transaction fails because of a record (a handler raised), the batch is re-run one record per
transaction, so a poison record goes to ``<topic>.dlq`` after ``max_attempts`` and the others still apply.
Database or broker outages are retried (tenacity) without counting against a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from ar_events.context import correlation_id_var, new_correlation_id
from ar_events.db import PgDriver, is_postgres, is_transient
from ar_events.envelope import DecodeError, Envelope, UnknownEventType, decode
from ar_events.kafka import make_consumer, make_producer
from ar_events.metrics import (
    CONSUMER_RETRIES,
    DEAD_LETTERS,
    ConsumerMetrics,
)
from ar_events.settings import ConsumerSettings, KafkaSettings
from ar_events.tables import TABLES
from ar_events.topics import dlq_of

log = logging.getLogger(__name__)

#: A handler applies one event inside the runner's transaction. It must not commit; it may ``enqueue``.
Handler = Callable[[AsyncSession, Envelope[Any]], Awaitable[None]]

_INBOX = TABLES.inbox
_INBOX_INSERT_SQLITE = (
    sqlite.insert(_INBOX)
    .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
    .returning(_INBOX.c.event_id)
)
# One statement with an array parameter, whatever the batch size; the new ids come back as one array value
# (decoded by the driver) rather than a result row each.
_INBOX_INSERT_PG_SQL = (  # the same, for PgDriver (straight to asyncpg: one statement per batch)
    "WITH fresh AS (INSERT INTO inbox (consumer, event_id, processed_at)"
    " SELECT $1, e, $3 FROM unnest($2::varchar[]) AS e"
    " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id)"
    " SELECT array_agg(event_id) FROM fresh"
)
_ERROR_HEADER_MAX = 2000
#: Generation-0 GC threshold that consumer runners and relays raise their process to (raise_gc_threshold).
GC_GEN0_THRESHOLD = 50_000
#: records decoded between two yields to the event loop while a poll is decoded beside a running transaction
_DECODE_SLICE = 64


class Abandoned(Exception):
    """Processing stopped before the batch committed (shutdown or rebalance); offsets stay uncommitted."""


@dataclass
class ConsumerStats:
    """Counters of one runner (also exported to Prometheus)."""

    processed: int = 0
    duplicates: int = 0
    skipped_unknown: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    commit_failures: int = 0


@dataclass(slots=True)
class _Item:
    record: ConsumerRecord[Any, Any]
    envelope: Envelope[Any]
    handler: Handler


@dataclass(slots=True)
class _Poll:
    """One ``getmany``, decoded: the records by partition, what to apply, and what never reaches a handler."""

    generation: int  # the assignment the records were fetched under (see _Listener)
    batch: Mapping[TopicPartition, list[ConsumerRecord[Any, Any]]]
    size: int = 0  # records in the batch
    items: list[_Item] = field(default_factory=list)
    dead: list[_DeadLetter] = field(default_factory=list)
    unknown: int = 0
    ignored: int = 0


@dataclass
class _DeadLetter:
    record: ConsumerRecord[Any, Any]
    error: BaseException
    attempts: int


@dataclass
class _Outcome:
    processed: int = 0
    duplicates: int = 0
    dead: list[_DeadLetter] = field(default_factory=list)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Let the batch in hand finish and commit (or abandon a stuck retry), then release the partitions.
        self.runner._generation += 1
        self.runner._revoking = True
        try:
            async with self.runner._lock:
                pass
        finally:
            self.runner._revoking = False
        log.info("consumer %s: partitions revoked %s", self.runner.name, sorted(map(str, revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.runner.assignment = set(assigned)
        self.runner.ready.set()
        log.info("consumer %s: partitions assigned %s", self.runner.name, sorted(map(str, assigned)))


class ConsumerRunner:
    """Consumes ``topics`` as a member of ``group_id`` (logical names: the topic prefix is applied to both).

    ``name`` (default: the group id) is the consumer's name in the inbox and in metrics. ``run()`` raises the
    process's generation-0 GC threshold to ``gc_gen0_threshold`` (see :func:`raise_gc_threshold`; None: leave it).
    """

    def __init__(
        self,
        group_id: str,
        topics: Sequence[str],
        sessionmaker: async_sessionmaker[AsyncSession],
        handlers: Mapping[str, Handler],
        kafka: KafkaSettings,
        settings: ConsumerSettings | None = None,
        *,
        name: str | None = None,
        producer: AIOKafkaProducer | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        poll_timeout_ms: int = 200,
        gc_gen0_threshold: int | None = GC_GEN0_THRESHOLD,
    ) -> None:
        self.group_id = group_id
        self.name = name or group_id
        self.topics = [kafka.topic(t) for t in topics]
        self.sessionmaker = sessionmaker
        self.handlers = dict(handlers)
        self.kafka = kafka
        self.settings = settings or ConsumerSettings()
        self.poll_timeout_ms = poll_timeout_ms
        self.gc_gen0_threshold = gc_gen0_threshold
        self.stats = ConsumerStats()
        self._metrics = ConsumerMetrics(self.name)
        self.assignment: set[TopicPartition] = set()
        #: Set once the group gave this member its first assignment.
        self.ready = asyncio.Event()
        self._consumer_options = dict(consumer_options or {})
        self._producer = producer
        self._own_producer = producer is None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._generation = 0
        self._revoking = False
        self._stop: asyncio.Event = asyncio.Event()
        #: polls of at least this many records start the next poll at once (see run)
        self._read_ahead_at = max(1, self.settings.batch_max_records // 2)

    # ---------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in hand, commit, leave the group, close."""
        self._stop = stop
        raise_gc_threshold(self.gc_gen0_threshold)
        # The topic prefix isolates tests and tenants; it isolates their consumer groups too.
        options = {"fetch_max_wait_ms": self.settings.fetch_max_wait_ms, **self._consumer_options}
        consumer = make_consumer(self.kafka, self.kafka.topic(self.group_id), **options)
        producer = self._producer or make_producer(self.kafka)
        self._consumer, self._producer = consumer, producer
        try:
            try:
                await self._start(consumer, producer, stop)
            except Exception:
                if stop.is_set():  # asked to stop while the broker was unreachable: nothing to finish
                    return
                raise
            pending: asyncio.Task[_Poll | None] | None = None
            try:
                while not stop.is_set():
                    polled = await (pending if pending is not None else self._poll(consumer))
                    pending = None
                    if polled is None:
                        continue
                    if polled.size >= self._read_ahead_at:
                        # Behind (a large poll): the next one is fetched and decoded while this one's transaction
                        # waits on the database. A small poll means the consumer keeps up; reading ahead would
                        # only delay this batch's commit with the next one's decoding.
                        pending = asyncio.create_task(self._poll(consumer))
                    async with self._lock:
                        if polled.generation != self._generation:
                            # Revoked since the fetch: the next assignment restarts from the committed offsets,
                            # so these records come again (to us or to the new owner).
                            continue
                        try:
                            await self._handle_batch(consumer, polled)
                        except Abandoned:
                            log.info(
                                "consumer %s: batch abandoned (uncommitted, will be redelivered)", self.name
                            )
                            # Stop: we close without committing. Rebalance: positions restart from the commit.
                            if stop.is_set():
                                break
            finally:
                if pending is not None:  # fetched but never applied: uncommitted, so delivered again
                    pending.cancel()
                    await asyncio.wait((pending,))
                    if not pending.cancelled():
                        pending.exception()  # a poll that failed on its own: nothing left to apply it to
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            if self._own_producer:
                with contextlib.suppress(Exception):
                    await producer.stop()

    async def _start(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, stop: asyncio.Event
    ) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=self._stop_when_abandoned,
            reraise=True,
        ):
            with attempt:
                await consumer.start()
                if self._own_producer:
                    await producer.start()
        consumer.subscribe(self.topics, listener=_Listener(self))

    # ---------------------------------------------------------------- one poll

    async def _poll(self, consumer: AIOKafkaConsumer) -> _Poll | None:
        """One ``getmany``, decoded; None when it brought nothing (or failed: it is retried by the next)."""
        try:
            batch = await consumer.getmany(
                timeout_ms=self.poll_timeout_ms, max_records=self.settings.batch_max_records
            )
        except KafkaError as exc:
            log.warning("consumer %s: poll failed (%s); retrying", self.name, exc)
            await asyncio.sleep(0.5)
            return None
        if not batch:
            return None
        polled = _Poll(self._generation, batch)  # the records belong to the assignment current right now
        items, dead, handlers = polled.items, polled.dead, self.handlers
        n = 0
        for records in batch.values():
            for record in records:
                n += 1
                if n % _DECODE_SLICE == 0:
                    await asyncio.sleep(0)  # let the batch being applied see its database replies
                try:
                    envelope = decode(record.value)
                except UnknownEventType:
                    polled.unknown += 1
                    continue
                except DecodeError as exc:
                    dead.append(_DeadLetter(record, exc, 1))
                    continue
                handler = handlers.get(envelope.type)
                if handler is None:
                    polled.ignored += 1
                    continue
                items.append(_Item(record, envelope, handler))
        polled.size = n
        return polled

    async def _handle_batch(self, consumer: AIOKafkaConsumer, polled: _Poll) -> None:
        outcome = await self._apply(polled.items)
        dead = polled.dead + outcome.dead
        for letter in dead:
            await self._dead_letter(letter)
        await self._commit(consumer, polled.batch)
        self._count(outcome.processed, outcome.duplicates, polled.unknown, polled.ignored, len(dead))

    def _count(self, processed: int, duplicates: int, unknown: int, ignored: int, dead: int) -> None:
        s = self.stats
        s.processed += processed
        s.duplicates += duplicates
        s.skipped_unknown += unknown
        s.ignored += ignored
        s.dead_lettered += dead
        s.batches += 1
        self._metrics.finished_batch(
            processed=processed,
            duplicate=duplicates,
            unknown_type=unknown,
            ignored=ignored,
            dead_lettered=dead,
        )

    async def _apply(self, items: list[_Item]) -> _Outcome:
        if not items:
            return _Outcome()
        try:
            processed, duplicates = await self._retry_transient(lambda: self._transaction(items))
            return _Outcome(processed, duplicates)
        except Abandoned:
            raise
        except Exception as exc:
            log.info(
                "consumer %s: batch of %d failed (%s); one record per transaction", self.name, len(items), exc
            )
        outcome = _Outcome()
        for item in items:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(lambda e: not isinstance(e, Abandoned)),
                    stop=stop_after_attempt(self.settings.max_attempts),
                    wait=wait_exponential(
                        multiplier=self.settings.retry_initial_ms / 1000,
                        max=self.settings.retry_max_ms / 1000,
                    ),
                    before_sleep=self._count_retry("handler"),
                    reraise=True,
                ):
                    with attempt:
                        processed, duplicates = await self._retry_transient(
                            lambda item=item: self._transaction([item])  # type: ignore[misc]
                        )
                outcome.processed += processed
                outcome.duplicates += duplicates
            except Abandoned:
                raise
            except Exception as exc:
                log.warning(
                    "consumer %s: %s at %s[%d]@%d failed %d times, dead-lettering: %s",
                    self.name,
                    item.envelope.type,
                    item.record.topic,
                    item.record.partition,
                    item.record.offset,
                    self.settings.max_attempts,
                    exc,
                )
                outcome.dead.append(_DeadLetter(item.record, exc, self.settings.max_attempts))
        return outcome

    async def _transaction(self, items: list[_Item]) -> tuple[int, int]:
        """Inbox rows and handler effects of ``items`` in one transaction; returns (processed, duplicates)."""
        now = datetime.now(UTC)
        batch_started = perf_counter()
        ids = list(dict.fromkeys(item.envelope.id for item in items))
        log_events = self.settings.log_events and log.isEnabledFor(logging.INFO)
        applied: dict[str, list[float]] = {}  # event type -> handler seconds of each applied event
        async with self.sessionmaker() as session, session.begin():
            if is_postgres(session):
                driver = await PgDriver.of(session)
                fresh = set(await driver.fetchval(_INBOX_INSERT_PG_SQL, self.name, ids, now) or ())
            else:
                # executemany with RETURNING: SQLAlchemy batches it into multi-row INSERTs.
                rows = [{"consumer": self.name, "event_id": i, "processed_at": now} for i in ids]
                fresh = set((await session.execute(_INBOX_INSERT_SQLITE, rows)).scalars())
            duplicates = 0
            for item in items:
                envelope = item.envelope
                if envelope.id not in fresh:
                    duplicates += 1
                    continue
                fresh.discard(envelope.id)  # a second copy in the same batch is a duplicate
                started = perf_counter()
                # As correlation_scope(): logs and caused events carry the record's correlation id.
                token = correlation_id_var.set(envelope.correlationid or new_correlation_id())
                try:
                    await item.handler(session, envelope)
                    if log_events:
                        log.info(
                            "%s handled %s",
                            self.name,
                            envelope.type,
                            extra={"event_id": envelope.id, "event_type": envelope.type,
                                   "subject": envelope.subject},
                        )  # fmt: skip
                finally:
                    correlation_id_var.reset(token)
                elapsed = perf_counter() - started
                durations = applied.get(envelope.type)
                if durations is None:
                    applied[envelope.type] = [elapsed]
                else:
                    durations.append(elapsed)
        self._metrics.observe_batch(perf_counter() - batch_started)
        processed = 0
        for event_type, durations in applied.items():  # counted once committed
            processed += len(durations)
            self._metrics.applied(event_type, durations)
        return processed, duplicates

    # ---------------------------------------------------------------- retries

    def _stop_when_abandoned(self, state: RetryCallState) -> bool:
        return self._stop.is_set() or self._revoking

    def _count_retry(self, kind: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            CONSUMER_RETRIES.labels(self.name, kind).inc()
            exc = state.outcome.exception() if state.outcome else None
            log.info("consumer %s: %s error, attempt %d: %r", self.name, kind, state.attempt_number, exc)

        return before_sleep

    async def _retry_transient(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``fn``, retrying database/broker unavailability without limit until stop or rebalance."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_transient),
                wait=wait_exponential(
                    multiplier=self.settings.retry_initial_ms / 1000, max=self.settings.retry_max_ms / 1000
                ),
                stop=self._stop_when_abandoned,
                before_sleep=self._count_retry("transient"),
                reraise=True,
            ):
                with attempt:
                    return await fn()
        except Exception as exc:
            if is_transient(exc):
                raise Abandoned(str(exc)) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    # ---------------------------------------------------------------- DLQ and commits

    async def _dead_letter(self, letter: _DeadLetter) -> None:
        record = letter.record
        headers = [(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq.")]
        error = f"{type(letter.error).__name__}: {letter.error}"[:_ERROR_HEADER_MAX]
        headers += [
            ("dlq.error", error.encode()),
            ("dlq.error_type", type(letter.error).__name__.encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.attempts", str(letter.attempts).encode()),
            ("dlq.consumer", self.name.encode()),
            ("dlq.time", datetime.now(UTC).isoformat().encode()),
        ]
        producer = self._producer
        assert producer is not None

        async def send() -> None:
            await producer.send_and_wait(
                dlq_of(record.topic), value=record.value, key=record.key, headers=headers
            )

        await self._retry_transient(send)
        DEAD_LETTERS.labels(self.name, record.topic).inc()

    async def _commit(
        self, consumer: AIOKafkaConsumer, batch: Mapping[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> None:
        assigned = consumer.assignment()
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records and tp in assigned}
        if not offsets:
            return
        try:
            await self._retry_transient(lambda: consumer.commit(offsets))
        except (CommitFailedError, Abandoned) as exc:
            # The group moved on; the new owner re-reads from the last commit and the inbox drops duplicates.
            self.stats.commit_failures += 1
            log.warning("consumer %s: offset commit failed (%s); records will be redelivered", self.name, exc)


def raise_gc_threshold(gen0: int | None) -> None:
    """Raise the garbage collector's generation-0 threshold of this process to ``gen0`` (never lower it).

    A poll batch allocates tens of thousands of short-lived objects that die by reference counting; at Python's
    default of 700 the collector ran some 20 times per batch of 1,000 events and took about a fifth of the
    runner's CPU. Collections still run, only less often; objects without reference cycles are freed at once
    either way.
    """
    if gen0 is None:
        return
    threshold0, threshold1, threshold2 = gc.get_threshold()
    if threshold0 and threshold0 < gen0:  # 0: the collector is off, leave it off
        gc.set_threshold(gen0, threshold1, threshold2)


def stop_on_signals(
    stop: asyncio.Event, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Set ``stop`` on SIGTERM/SIGINT so runners stop polling, finish their batch, commit and close."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)


async def wait_ready(runners: Iterable[ConsumerRunner]) -> None:
    """Wait until every runner has its first assignment (wrap in ``asyncio.timeout``)."""
    for runner in runners:
        await runner.ready.wait()
