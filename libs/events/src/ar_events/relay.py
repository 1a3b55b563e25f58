"""The outbox relay: publishes committed outbox rows to Kafka, in commit order per key, and marks them sent.

Several instances may run against one database (one per service replica). A lease row
(``outbox_relay_lease``) makes exactly one of them the publisher at a time; the others stand by and take
over when the holder stops renewing (it died or lost the database) for ``lease_ttl`` seconds. See the
README, "Plumbing", for the reasoning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
import weakref
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple, cast

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ar_events.clock import Clock, SystemClock
from ar_events.consumer import GC_GEN0_THRESHOLD, raise_gc_threshold
from ar_events.db import PgDriver, asyncpg_dsn, is_postgres
from ar_events.envelope import CONTENT_TYPE
from ar_events.kafka import make_producer
from ar_events.metrics import (
    EVENTS_PRODUCED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PURGED,
    RELAY_ERRORS,
    RELAY_LEASE_HELD,
    RELAY_PUBLISHED,
)
from ar_events.outbox import NOTIFY_CHANNEL
from ar_events.settings import KafkaSettings, OutboxSettings
from ar_events.tables import TABLES

log = logging.getLogger(__name__)

_OUTBOX = TABLES.outbox
_LEASE = TABLES.relay_lease
_COLUMNS = (_OUTBOX.c.id, _OUTBOX.c.topic, _OUTBOX.c.key, _OUTBOX.c.type, _OUTBOX.c.value, _OUTBOX.c.headers)
_ID_CHUNK = 1000
# PostgreSQL statements, sent through PgDriver (straight to asyncpg: each pass of a lightly loaded relay is a
# few small statements, where SQLAlchemy's per-statement cost dominated).
# Planner settings for the read (transaction-local): walk the partial index in id order, stop at the limit.
_PG_INDEX_ORDER = (
    "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)"
)
# The rows in flight, as a subquery: PostgreSQL hashes it once per read ("hashed SubPlan"). ``id <> ALL($1)``
# is hashed only in a custom plan; once the prepared statement goes generic (after five runs) it compares every
# row with every excluded id, which measured 50 ms per read of 1,000 rows beside 2,000 in flight. The list is
# always passed (empty or not): one text, one prepared statement.
_READ_PG = (
    f"SELECT id, topic, key, type, value, headers FROM {_OUTBOX.name}"
    " WHERE published_at IS NULL AND id NOT IN (SELECT unnest($1::bigint[])) ORDER BY id LIMIT $2"
)
# synchronous_commit is read at commit, so setting it (transaction-local) inside the UPDATE is enough.
_MARK_SENT_PG = (
    f"UPDATE {_OUTBOX.name} SET published_at = $2 WHERE id = ANY($1::bigint[])"
    " AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'"
)


def _headers(value: Any) -> Any:
    """The headers column as read through PgDriver: JSON text (or NULL)."""
    return json.loads(value) if isinstance(value, str) else value


class OutboxRow(NamedTuple):
    """One outbox row as the relay reads it (a plain tuple: SQLAlchemy's Row resolves each attribute by name,
    which measured about 1 us per access, and the relay touches a row's fields several times)."""

    id: int
    topic: str
    key: str
    type: str
    value: bytes
    headers: dict[str, Any] | None


_BASE_HEADERS: list[tuple[str, bytes]] = [("content-type", CONTENT_TYPE.encode())]


def record_headers(row: Any) -> list[tuple[str, bytes]]:
    """Kafka headers of an outbox row: the structured-mode content type, plus any stored headers.

    No ``ce_*`` headers: in the CloudEvents Kafka binding those mean binary mode, and ours is structured.
    """
    if not row.headers:
        return _BASE_HEADERS
    return [*_BASE_HEADERS, *((str(k), str(v).encode()) for k, v in dict(row.headers).items())]


async def send_rows(
    producer: AIOKafkaProducer, rows: Sequence[Any], kafka: KafkaSettings | None
) -> list[asyncio.Future[Any]]:
    """Hand rows (in id order) to the producer; returns one ack future per row.

    Rows are packed into one record batch per partition (aiokafka's batch API) instead of ``send()`` per row:
    the same partitioner, batches and acks, at a fraction of the CPU per record. The rows of one batch share
    its future; each partition's batches are submitted in row order, so per-key order holds.
    """
    topics: dict[str, str] = {}
    partitions: dict[str, _Partitioner] = {}
    builders: dict[TopicPartition, BatchBuilder] = {}
    pending: dict[TopicPartition, list[int]] = {}  # row indexes in the open builder of each partition
    futures: list[asyncio.Future[Any] | None] = [None] * len(rows)

    async def submit(tp: TopicPartition) -> None:
        batch = builders.pop(tp)
        batch.close()
        future = await producer.send_batch(batch, tp.topic, partition=tp.partition)
        for index in pending.pop(tp):
            futures[index] = future

    for index, row in enumerate(rows):
        topic = topics.get(row.topic)
        if topic is None:
            topic = topics[row.topic] = kafka.topic(row.topic) if kafka else row.topic
        partitioner = partitions.get(topic)
        if partitioner is None:
            partitioner = partitions[topic] = await _Partitioner.of(producer, topic)
        key = row.key.encode()
        tp = partitioner.partition(key)
        builder = builders.get(tp)
        if builder is None:
            builder = builders[tp] = producer.create_batch()
            pending[tp] = []
        headers = record_headers(row)
        if builder.append(timestamp=None, key=key, value=row.value, headers=headers) is None:
            await submit(tp)  # full: send it, start the next batch of this partition
            builder = builders[tp] = producer.create_batch()
            pending[tp] = []
            builder.append(timestamp=None, key=key, value=row.value, headers=headers)  # first always fits
        pending[tp].append(index)
    for tp in list(builders):
        await submit(tp)
    return cast(list[asyncio.Future[Any]], futures)


class _Partitioner:
    """The producer's own partitioner for one topic; with aiokafka's default (murmur2 of the key, in pure
    Python), the key -> partition answers are remembered, per producer, topic and partition list."""

    _memo: ClassVar[weakref.WeakKeyDictionary[Any, dict[tuple[str, tuple[int, ...]], dict[bytes, int]]]] = (
        weakref.WeakKeyDictionary()
    )
    _MEMO_MAX = 100_000

    def __init__(self, producer: AIOKafkaProducer, topic: str, all_partitions: list[int]) -> None:
        self.topic = topic
        self.all_partitions = all_partitions
        self.available = list(producer.client.cluster.available_partitions_for_topic(topic))
        self.partitioner = producer._partitioner
        self.memo: dict[bytes, int] | None = None
        self.tps = {p: TopicPartition(topic, p) for p in all_partitions}
        if isinstance(self.partitioner, DefaultPartitioner):
            per_producer = self._memo.setdefault(producer, {})
            self.memo = per_producer.setdefault((topic, tuple(all_partitions)), {})

    @classmethod
    async def of(cls, producer: AIOKafkaProducer, topic: str) -> _Partitioner:
        # As AIOKafkaProducer.send(): wait for the topic's metadata, then the same partition list.
        return cls(producer, topic, list(await producer.partitions_for(topic)))

    def partition(self, key: bytes) -> TopicPartition:
        memo = self.memo
        if memo is not None:
            partition = memo.get(key)
            if partition is None:
                if len(memo) >= self._MEMO_MAX:
                    memo.clear()
                partition = memo[key] = self.partitioner(key, self.all_partitions, self.available)
        else:
            partition = self.partitioner(key, self.all_partitions, self.available)
        tp = self.tps.get(partition)
        if tp is None:
            tp = self.tps[partition] = TopicPartition(self.topic, partition)
        return tp


async def collect_acks(
    rows: Sequence[Any], futures: Sequence[asyncio.Future[Any]]
) -> tuple[list[int], BaseException | None]:
    """Wait for the acks; return the ids safe to mark sent and the first error.

    After a failed row, later rows of the same key are not marked, so a key is never marked past a hole.
    """
    distinct = list(dict.fromkeys(futures))  # rows of one record batch share its future
    outcomes = dict(zip(distinct, await asyncio.gather(*distinct, return_exceptions=True), strict=True))
    if not any(isinstance(o, BaseException) for o in outcomes.values()):
        return [row.id for row in rows], None
    ok: list[int] = []
    failed_keys: set[str] = set()
    first_error: BaseException | None = None
    for row, future in zip(rows, futures, strict=True):
        result = outcomes[future]
        if isinstance(result, BaseException):
            failed_keys.add(row.key)
            first_error = first_error or result
        elif row.key not in failed_keys:
            ok.append(row.id)
    return ok, first_error


async def publish_rows(
    producer: AIOKafkaProducer, rows: Sequence[Any], kafka: KafkaSettings | None
) -> tuple[list[int], BaseException | None]:
    """Send rows and wait for their acks (see :func:`collect_acks`)."""
    return await collect_acks(rows, await send_rows(producer, rows, kafka))


class OutboxRelay:
    """Publishes outbox rows of one database; ``await relay.run(stop)`` until ``stop`` is set.

    Without ``producer`` the relay makes, starts and stops its own; a ``producer`` passed in is the caller's,
    already started, and is neither started again nor stopped here. ``run()`` raises the process's
    generation-0 GC threshold to ``gc_gen0_threshold`` (see :func:`ar_events.consumer.raise_gc_threshold`).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        kafka: KafkaSettings,
        settings: OutboxSettings | None = None,
        *,
        name: str = "relay",
        producer: AIOKafkaProducer | None = None,
        clock: Clock | None = None,
        lease_name: str = "outbox",
        lease_ttl: float = 10.0,
        retention_every: float = 3600.0,
        gc_gen0_threshold: int | None = GC_GEN0_THRESHOLD,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.kafka = kafka
        self.settings = settings or OutboxSettings()
        self.name = name
        self.clock = clock or SystemClock()
        self.lease_name = lease_name
        self.lease_ttl = lease_ttl
        self.retention_every = retention_every
        self.gc_gen0_threshold = gc_gen0_threshold
        self.holder = f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.published = 0
        self.holds_lease = False
        self._producer = producer
        self._own_producer = producer is None
        self._wake = asyncio.Event()
        self._mark_task: asyncio.Future[None] | None = None
        self._listener: Any = None
        self._next_listen_attempt = 0.0
        self._inflight: tuple[Sequence[Any], list[asyncio.Future[Any]]] | None = None
        self._marking_ids: list[int] = []
        self._lease_until = 0.0
        self._next_retention = 0.0
        self._next_backlog = 0.0

    def wake(self) -> None:
        """Publish now (call after a local commit that enqueued events)."""
        self._wake.set()

    @property
    def poll_interval(self) -> float:
        """Seconds between idle passes: short when polling is all there is, long while NOTIFY wakes us."""
        if self._listener is not None and not self._listener.is_closed():
            return max(self.settings.poll_interval_ms, self.settings.listen_poll_interval_ms) / 1000
        return self.settings.poll_interval_ms / 1000

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; survives database and broker outages by retrying."""
        raise_gc_threshold(self.gc_gen0_threshold)
        producer = self._producer or make_producer(self.kafka)
        self._producer = producer
        # Starting the caller's producer again would run a second sender loop on the same accumulator, and the
        # two wake each other for as long as the producer lives (a busy loop measured at thousands per second).
        started = not self._own_producer
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                try:
                    if not started:
                        await producer.start()
                        started = True
                    if not await self._ensure_lease(loop.time()):
                        await self.settle()  # lost it: finish what is in flight, let the holder go on
                        await self.drain()
                        await self._sleep(stop, min(self.lease_ttl / 3, 2.0))
                        continue
                    await self._ensure_listening(loop.time())
                    if loop.time() >= self._next_backlog:
                        await self.measure_backlog()
                        self._next_backlog = loop.time() + 5.0
                    if loop.time() >= self._next_retention:
                        await self.purge()
                        self._next_retention = loop.time() + self.retention_every
                    count = await self.publish_batch()
                except Exception as exc:
                    RELAY_ERRORS.labels(self.name).inc()
                    log.warning(
                        "relay %s: pass failed (%s: %s); retrying", self.name, type(exc).__name__, exc
                    )
                    await self._sleep(stop, 1.0)
                    continue
                if count < self.settings.batch_size:
                    if count and self.settings.coalesce_ms:
                        # Commits that arrive now wait a moment and share the next pass: a busy REST service
                        # otherwise runs a whole publish pass (several round trips) per request.
                        await self._sleep_unwoken(stop, self.settings.coalesce_ms / 1000)
                    await self._sleep(stop, self.poll_interval)
        finally:
            await self._shutdown(producer, started)

    async def _ensure_listening(self, now_mono: float) -> None:
        """PostgreSQL: LISTEN for commits of other processes (``enqueue`` NOTIFYs); polling stays the backstop."""
        if self._listener is not None and not self._listener.is_closed():
            return
        if now_mono < self._next_listen_attempt:
            return
        self._next_listen_attempt = now_mono + 5.0
        engine = self.sessionmaker.kw.get("bind")
        if not isinstance(engine, AsyncEngine) or engine.dialect.name != "postgresql":
            self._next_listen_attempt = float("inf")
            return
        try:
            import asyncpg  # type: ignore[import-untyped]

            conn = await asyncpg.connect(asyncpg_dsn(engine.url), timeout=5)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception as exc:  # polling still works; try again later
            log.info("relay %s: cannot LISTEN (%s); polling only", self.name, exc)
            return
        self._listener = conn

    def _on_notify(self, *args: Any) -> None:
        self._wake.set()

    async def _shutdown(self, producer: AIOKafkaProducer, started: bool) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None
        with contextlib.suppress(Exception):
            await self.settle()
        with contextlib.suppress(Exception):
            await self.drain()
        if self.holds_lease:
            with contextlib.suppress(Exception):
                await self._release_lease()
        if self._own_producer and started:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _sleep_unwoken(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep ``seconds`` (or until ``stop``) whatever wakes arrive; they are kept for the next ``_sleep``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self._wake.clear()

    # ---------------------------------------------------------------- publishing

    async def publish_batch(self) -> int:
        """One pipeline step: read up to ``batch_size`` unsent rows in id order and send them.

        The step overlaps three things: reading batch k+1 while batch k waits for its acks, and marking
        batch k sent while batch k+1 is sent. Reads exclude the rows in flight instead of reading "after
        the last id", so a row that committed late with a lower id is never skipped. Batch k+1 is sent only
        after batch k's acks, so a key whose send failed is not sent past its hole. Returns rows read.
        """
        assert self._producer is not None, "run() or publish_pending() starts the producer"
        exclude = [*self._inflight_ids(), *self._marking_ids]
        async with self.sessionmaker() as session:
            if is_postgres(session):
                # Walk the partial index in id order and stop after batch_size rows. Without this the planner,
                # misled by stale statistics on a table that churns, may fetch and sort every unpublished row
                # (bitmap scan + top-N sort) for each batch, which makes a backlog quadratic.
                driver = await PgDriver.of(session)
                await driver.execute(_PG_INDEX_ORDER)
                records = await driver.fetch(_READ_PG, exclude, self.settings.batch_size)
                rows = [OutboxRow(r[0], r[1], r[2], r[3], r[4], _headers(r[5])) for r in records]
            else:
                query = select(*_COLUMNS).where(_OUTBOX.c.published_at.is_(None))
                if exclude:
                    query = query.where(_OUTBOX.c.id.not_in(exclude))
                query = query.order_by(_OUTBOX.c.id).limit(self.settings.batch_size)
                rows = [OutboxRow(*row) for row in (await session.execute(query)).all()]
            await session.rollback()  # release the snapshot (SQLite: the lock of BEGIN IMMEDIATE)
        await self.settle()
        if rows:
            self._inflight = (rows, await send_rows(self._producer, rows, self.kafka))
        if len(rows) < self.settings.batch_size:
            await self.settle()  # idle: no next read to overlap with, finish now
        return len(rows)

    def _inflight_ids(self) -> list[int]:
        return [row.id for row in self._inflight[0]] if self._inflight is not None else []

    async def settle(self) -> None:
        """Wait for the acks of the batch in flight and start marking it sent; raise its first send error."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        ok, error = await collect_acks(*inflight)
        await self.drain()
        if ok:
            self._marking_ids = ok
            self._mark_task = asyncio.ensure_future(self._mark_sent(ok))
        self.published += len(ok)
        RELAY_PUBLISHED.labels(self.name).inc(len(ok))
        sent = set(ok)
        sent_rows = inflight[0] if len(sent) == len(inflight[0]) else [r for r in inflight[0] if r.id in sent]
        for event_type, n in Counter(row.type for row in sent_rows).items():
            EVENTS_PRODUCED.labels(self.name, event_type).inc(n)
        if error is not None:
            raise error

    async def drain(self) -> None:
        """Wait for the pending "mark sent" update (a failure leaves rows to be re-sent: harmless)."""
        task, self._mark_task = self._mark_task, None
        if task is not None:
            try:
                await task
            finally:
                self._marking_ids = []

    async def _mark_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        now = self.clock.now()
        async with self.sessionmaker() as session, session.begin():
            if is_postgres(session):
                # Losing this commit in a server crash only means re-sending the rows, which consumers
                # absorb, so it need not wait for the WAL flush. One array parameter: one cached statement.
                await (await PgDriver.of(session)).execute(_MARK_SENT_PG, ids, now)
                return
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start : start + _ID_CHUNK]
                await session.execute(
                    update(_OUTBOX).where(_OUTBOX.c.id.in_(chunk)).values(published_at=now),
                    execution_options={"synchronize_session": False},
                )

    async def publish_pending(self) -> int:
        """Publish everything unsent right now, ignoring the lease (tests, CLI). Returns rows published."""
        own = self._producer is None
        if own:
            self._producer = make_producer(self.kafka)
            await self._producer.start()
        before = self.published
        try:
            while await self.publish_batch():
                pass
            await self.settle()
            await self.drain()
            total = self.published - before
        finally:
            if own and self._producer is not None:
                await self._producer.stop()
                self._producer = None
        return total

    # ---------------------------------------------------------------- lease

    async def _ensure_lease(self, now_mono: float) -> bool:
        if self.holds_lease and now_mono < self._lease_until - self.lease_ttl * 2 / 3:
            return True
        held = await self._try_lease()
        if held != self.holds_lease:
            log.info("relay %s %s the lease %r", self.holder, "took" if held else "lost", self.lease_name)
        self.holds_lease = held
        RELAY_LEASE_HELD.labels(self.name).set(1 if held else 0)
        if held:
            self._lease_until = now_mono + self.lease_ttl
        return held

    async def _try_lease(self) -> bool:
        now = self.clock.now()
        async with self.sessionmaker() as session, session.begin():
            dialect = session.get_bind().dialect.name
            ins: Any = postgresql.insert(_LEASE) if dialect == "postgresql" else sqlite.insert(_LEASE)
            await session.execute(ins.values(name=self.lease_name).on_conflict_do_nothing())
            result = await session.execute(
                update(_LEASE)
                .where(
                    and_(
                        _LEASE.c.name == self.lease_name,
                        or_(
                            _LEASE.c.holder == self.holder,
                            _LEASE.c.holder.is_(None),
                            _LEASE.c.expires_at.is_(None),
                            _LEASE.c.expires_at < now,
                        ),
                    )
                )
                .values(holder=self.holder, expires_at=now + timedelta(seconds=self.lease_ttl))
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    async def _release_lease(self) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(_LEASE)
                .where(and_(_LEASE.c.name == self.lease_name, _LEASE.c.holder == self.holder))
                .values(holder=None, expires_at=None)
            )
        self.holds_lease = False
        RELAY_LEASE_HELD.labels(self.name).set(0)

    # ---------------------------------------------------------------- retention

    async def measure_backlog(self) -> tuple[int, float]:
        """Set the backlog gauges: unpublished rows and the age of the oldest (the partial index answers)."""
        async with self.sessionmaker() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(_OUTBOX.c.created_at)).where(
                        _OUTBOX.c.published_at.is_(None)
                    )
                )
            ).one()
            await session.rollback()
        age = max(0.0, (self.clock.now() - oldest).total_seconds()) if oldest is not None else 0.0
        OUTBOX_BACKLOG.labels(self.name).set(count)
        OUTBOX_OLDEST_AGE.labels(self.name).set(age)
        return int(count), age

    async def purge(self) -> int:
        """Delete published rows older than ``retention_days``; return how many."""
        cutoff = self.clock.now() - timedelta(days=self.settings.retention_days)
        deleted = await purge_published(self.sessionmaker, cutoff)
        if deleted:
            OUTBOX_PURGED.labels(self.name).inc(deleted)
            log.info("relay %s purged %d published outbox rows older than %s", self.name, deleted, cutoff)
        return deleted


async def purge_published(sessionmaker: async_sessionmaker[AsyncSession], before: datetime) -> int:
    """Delete outbox rows created before ``before`` that were published; keep unpublished ones."""
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            delete(_OUTBOX).where(and_(_OUTBOX.c.created_at < before, _OUTBOX.c.published_at.is_not(None)))
        )
        return int(getattr(result, "rowcount", 0) or 0)


async def republish(
    sessionmaker: async_sessionmaker[AsyncSession],
    producer: AIOKafkaProducer,
    since: datetime,
    until: datetime,
    *,
    kafka: KafkaSettings | None = None,
    batch_size: int = 1000,
) -> int:
    """Send again every outbox row created in ``[since, until)``, in id order (after a broker lost its data).

    ``kafka`` supplies the topic prefix. Consumers dedupe, so re-sending what they saw is harmless.
    """
    sent = 0
    last_id = 0
    while True:
        async with sessionmaker() as session:
            query = (
                select(*_COLUMNS)
                .where(
                    and_(_OUTBOX.c.created_at >= since, _OUTBOX.c.created_at < until, _OUTBOX.c.id > last_id)
                )
                .order_by(_OUTBOX.c.id)
                .limit(batch_size)
            )
            rows = [OutboxRow(*row) for row in (await session.execute(query)).all()]
            await session.rollback()
        if not rows:
            return sent
        ok, error = await publish_rows(producer, rows, kafka)
        if error is not None:
            raise error
        sent += len(ok)
        last_id = rows[-1].id
