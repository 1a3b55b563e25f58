"""Outbox tables, migrations, enqueue semantics, relay ordering, lease, retention and re-publish."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from ar_events_itest_support import TOPIC, payment, setup_database, unpublished, wait_until, write
from sqlalchemy import MetaData, inspect, select, text, update

from ar_events.envelope import decode
from ar_events.kafka import ensure_topics, make_producer
from ar_events.outbox import enqueue
from ar_events.relay import OutboxRelay, publish_rows, purge_published, republish
from ar_events.settings import KafkaSettings, OutboxSettings
from ar_events.tables import TABLES, add_plumbing_tables
from ar_events.testing import unique_prefix


async def read_records(kafka: KafkaSettings, topic: str, expected: int, timeout: float = 15) -> list[Any]:
    """Every record of ``topic`` from the beginning: until ``expected`` arrived, then 0.3 s more (nothing more)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(seen) < expected and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(records)
        await asyncio.sleep(0.3)  # and nothing more
        for records in (await consumer.getmany(timeout_ms=200)).values():
            seen.extend(records)
        return seen
    finally:
        await consumer.stop()


async def read_topic(kafka: KafkaSettings, topic: str, expected: int, timeout: float = 15) -> list[bytes]:
    return [r.value for r in await read_records(kafka, topic, expected, timeout)]


def test_add_plumbing_tables_is_idempotent_per_metadata() -> None:
    metadata = MetaData()
    first = add_plumbing_tables(metadata)
    again = add_plumbing_tables(metadata)
    assert first == again
    assert sorted(metadata.tables) == ["inbox", "outbox", "outbox_relay_lease"]


async def test_migration_creates_tables_and_the_unpublished_index(any_database_url: str) -> None:
    engine, sessions = await setup_database(any_database_url)
    try:
        async with engine.connect() as conn:
            names, indexes, pk = await conn.run_sync(
                lambda c: (
                    set(inspect(c).get_table_names()),
                    {i["name"] for i in inspect(c).get_indexes("outbox")},
                    inspect(c).get_pk_constraint("inbox")["constrained_columns"],
                )
            )
        assert {"outbox", "inbox", "outbox_relay_lease"} <= names
        assert "ix_outbox_unpublished" in indexes
        assert pk == ["consumer", "event_id"]
        # The relay's query uses the partial index (plan shown in the failure message).
        async with sessions() as session:
            if engine.dialect.name == "postgresql":
                await session.execute(text("SET LOCAL enable_seqscan = off"))
                plan = "\n".join(
                    r[0]
                    for r in await session.execute(
                        text("EXPLAIN SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 500")
                    )
                )
            else:
                plan = "\n".join(
                    str(r[-1])
                    for r in await session.execute(
                        text(
                            "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE published_at IS NULL"
                            " ORDER BY id LIMIT 500"
                        )
                    )
                )
        assert "ix_outbox_unpublished" in plan, plan
    finally:
        await engine.dispose()


async def test_enqueue_writes_rows_in_the_callers_transaction_and_never_commits(
    any_database_url: str,
) -> None:
    engine, sessions = await setup_database(any_database_url)
    try:
        kept, dropped = payment("cli_a", 1), payment("cli_b", 2)
        async with sessions() as session, session.begin():
            await enqueue(session, kept, headers={"tenant": "acme"})
        async with sessions() as session:
            await enqueue(session, dropped)
            await session.rollback()  # the caller's change rolled back: no event either
        async with sessions() as session:
            rows = (await session.execute(select(TABLES.outbox))).all()
        assert [r.event_id for r in rows] == [kept.id]
        row = rows[0]
        assert (row.topic, row.key, row.type) == (TOPIC, "cli_a", kept.type)
        assert decode(row.value) == kept
        assert row.headers == {"tenant": "acme"}
        assert row.published_at is None
        assert row.created_at.tzinfo is not None
    finally:
        await engine.dispose()


async def test_enqueue_serialises_transactions_of_one_key_so_ids_follow_commit_order(
    postgres_url: str,
) -> None:
    engine, sessions = await setup_database(postgres_url)
    try:
        first, second = payment("cli_k", 1), payment("cli_k", 2)
        async with sessions() as a:
            await a.begin()
            await enqueue(a, first)

            async def other() -> None:
                async with sessions() as b, b.begin():
                    await enqueue(b, second)

            blocked = asyncio.create_task(other())
            await asyncio.sleep(0.5)
            assert not blocked.done(), "a second transaction on the same key waits for the first to commit"
            await a.commit()
        await asyncio.wait_for(blocked, 5)
        async with sessions() as session:
            ids = (
                await session.execute(select(TABLES.outbox.c.event_id).order_by(TABLES.outbox.c.id))
            ).scalars()
            assert list(ids) == [first.id, second.id]
    finally:
        await engine.dispose()


async def test_a_row_that_commits_late_with_a_lower_id_is_still_published(
    postgres_url: str, kafka_settings: KafkaSettings
) -> None:
    engine, sessions = await setup_database(postgres_url)
    relay = OutboxRelay(sessions, kafka_settings, name="late")
    try:
        late, early = payment("cli_late", 1), payment("cli_early", 2)
        async with sessions() as slow:
            await slow.begin()
            await enqueue(slow, late)  # takes the lower id, commits last
            await write(sessions, [early])
            assert await relay.publish_pending() == 1
            await slow.commit()
        assert await relay.publish_pending() == 1
        assert await unpublished(sessions) == 0
        values = await read_topic(kafka_settings, kafka_settings.topic(TOPIC), expected=2)
        assert sorted(decode(v).id for v in values) == sorted([late.id, early.id])
    finally:
        await engine.dispose()


async def test_only_one_relay_publishes_and_another_takes_over_when_it_dies(
    any_database_url: str, kafka_settings: KafkaSettings
) -> None:
    engine, sessions = await setup_database(any_database_url)
    stop = asyncio.Event()
    dead = OutboxRelay(sessions, kafka_settings, name="dead", lease_ttl=3.0)
    standby = OutboxRelay(sessions, kafka_settings, name="standby", lease_ttl=5.0)
    try:
        assert await dead._try_lease()  # then it "dies": never renews, never releases
        task = asyncio.create_task(standby.run(stop))
        await write(sessions, [payment("cli_x", i) for i in range(20)])
        await asyncio.sleep(0.5)
        assert not standby.holds_lease and await unpublished(sessions) == 20, (
            "the lease holder alone publishes"
        )

        async def all_published() -> bool:
            return await unpublished(sessions) == 0

        await wait_until(all_published, timeout=10)
        assert standby.holds_lease and standby.published == 20
        # A live holder keeps the lease: a second instance stays standby.
        third = OutboxRelay(sessions, kafka_settings, name="third", lease_ttl=5.0)
        assert not await third._try_lease()
        stop.set()
        await task
        assert await third._try_lease(), "a clean stop releases the lease at once"
    finally:
        stop.set()
        await engine.dispose()


async def test_retention_deletes_only_old_published_rows_and_republish_resends_a_range(
    any_database_url: str, kafka_settings: KafkaSettings
) -> None:
    engine, sessions = await setup_database(any_database_url)
    try:
        now = datetime.now(UTC)
        old, recent, old_unsent = payment("c1", 1), payment("c2", 2), payment("c3", 3)
        async with sessions() as session, session.begin():
            await enqueue(session, old, now=now - timedelta(days=10))
            await enqueue(session, old_unsent, now=now - timedelta(days=10))
            await enqueue(session, recent, now=now - timedelta(days=1))
            await session.execute(
                update(TABLES.outbox)
                .where(TABLES.outbox.c.event_id != old_unsent.id)
                .values(published_at=now)
            )
        producer = make_producer(kafka_settings)
        await producer.start()
        try:
            sent = await republish(
                sessions, producer, now - timedelta(days=2), now, kafka=kafka_settings, batch_size=1
            )
        finally:
            await producer.stop()
        assert sent == 1
        values = await read_topic(kafka_settings, kafka_settings.topic(TOPIC), expected=1)
        assert [decode(v).id for v in values] == [recent.id]

        relay = OutboxRelay(sessions, kafka_settings, OutboxSettings(retention_days=7), name="ret")
        assert await relay.purge() == 1
        assert await purge_published(sessions, now) == 1  # the recent one, when the cutoff passes it
        async with sessions() as session:
            left = (await session.execute(select(TABLES.outbox.c.event_id))).scalars().all()
        assert left == [old_unsent.id], "unpublished rows are never purged"
    finally:
        await engine.dispose()


async def test_ensure_topics_is_idempotent_and_uses_the_partition_count(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique_prefix(), partitions=3)
    first = await ensure_topics(kafka)
    assert await ensure_topics(kafka) == first
    assert len(first) == 10 and all(n.startswith(kafka.topic_prefix) for n in first)
    assert sum(n.endswith(".dlq") for n in first) == 5
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        assert all(consumer.partitions_for_topic(n) == {0, 1, 2} for n in first)
    finally:
        await consumer.stop()


async def test_relay_wake_publishes_immediately(sqlite_url: str, kafka_settings: KafkaSettings) -> None:
    engine, sessions = await setup_database(sqlite_url)  # SQLite: no NOTIFY, only wake() can be quick
    stop = asyncio.Event()
    relay = OutboxRelay(sessions, kafka_settings, OutboxSettings(poll_interval_ms=30_000), name="wake")
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_until(lambda: _holds(relay), timeout=10, interval=0.02)
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        await write(sessions, [payment("cli_w", 0)])
        started = loop.time()
        relay.wake()
        while relay.published == 0:
            await asyncio.sleep(0.005)
        assert loop.time() - started < 5.0, "wake() does not wait for the 30 s poll interval"
    finally:
        stop.set()
        await task
        await engine.dispose()


async def _holds(relay: OutboxRelay) -> bool:
    return relay.holds_lease


async def test_on_postgres_a_commit_elsewhere_wakes_the_relay_through_notify(
    postgres_url: str, kafka_settings: KafkaSettings
) -> None:
    engine, sessions = await setup_database(postgres_url)
    stop = asyncio.Event()
    settings = OutboxSettings(poll_interval_ms=50, listen_poll_interval_ms=10_000)
    relay = OutboxRelay(sessions, kafka_settings, settings, name="notify")
    assert relay.poll_interval == 0.05  # not listening yet: polling is all there is
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_until(lambda: _listening(relay), timeout=10, interval=0.02)
        assert relay.poll_interval == 10.0  # listening: the idle relay stops polling every 50 ms
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        for i in range(3):
            before = relay.published
            await write(sessions, [payment("cli_n", i)])  # no wake(): only NOTIFY can beat the 10 s poll
            started = loop.time()
            while relay.published == before:
                await asyncio.sleep(0.005)
            assert loop.time() - started < 2.0
        async with sessions() as session:
            await enqueue(session, payment("cli_n", 99))
            await session.rollback()  # no commit, no notification, nothing to publish
        await asyncio.sleep(0.3)
        assert relay.published == 3
    finally:
        stop.set()
        await task
        await engine.dispose()


async def _listening(relay: OutboxRelay) -> bool:
    return relay.holds_lease and relay._listener is not None


async def test_send_rows_batches_per_partition_where_send_would_put_each_key_and_keeps_key_order(
    kafka_settings: KafkaSettings,
) -> None:
    """The batch path (one record batch per partition, split when full) puts every record where
    ``producer.send`` puts its key, in row order within a key, with the headers."""
    await ensure_topics(kafka_settings)
    topic = kafka_settings.topic(TOPIC)
    # Small batches, so one call fills several per partition.
    producer = make_producer(kafka_settings, max_batch_size=4096)
    await producer.start()
    try:
        keys = [f"cli_{k}" for k in range(13)]
        rows = [
            SimpleNamespace(
                id=i, topic=TOPIC, key=keys[i % len(keys)], type="t", value=f"v{i}".encode() * 40,
                headers={"n": str(i)} if i % 2 else None,
            )
            for i in range(400)
        ]  # fmt: skip
        ok, error = await publish_rows(producer, rows, kafka_settings)
        assert error is None
        assert ok == [row.id for row in rows]
        probes = {key: await (await producer.send(topic, value=b"probe", key=key.encode())) for key in keys}
    finally:
        await producer.stop()
    seen = await read_records(kafka_settings, topic, len(rows) + len(keys))
    data = [r for r in seen if r.value != b"probe"]
    assert len(data) == len(rows)
    for key in keys:
        mine = [r for r in data if r.key == key.encode()]
        assert {r.partition for r in mine} == {probes[key].partition}, key
        assert [r.value for r in mine] == [row.value for row in rows if row.key == key], "order within a key"
    by_value = {r.value: r for r in data}
    for row in rows:
        headers = dict(by_value[row.value].headers)
        assert headers["content-type"] == b"application/cloudevents+json"
        assert headers.get("n") == (str(row.id).encode() if row.id % 2 else None)


async def test_a_relay_given_a_started_producer_neither_restarts_nor_stops_it(
    sqlite_url: str, kafka_settings: KafkaSettings
) -> None:
    """A second start() would add a second sender loop on the same accumulator (they wake each other)."""
    await ensure_topics(kafka_settings)
    engine, sessions = await setup_database(sqlite_url)
    producer = make_producer(kafka_settings)
    await producer.start()
    sender_task = producer._sender.sender_task
    stop = asyncio.Event()
    relay = OutboxRelay(sessions, kafka_settings, name="shared", producer=producer)
    task = asyncio.create_task(relay.run(stop))
    try:
        await write(sessions, [payment("cli_shared", 1)])
        relay.wake()

        async def published() -> bool:
            return relay.published == 1

        await wait_until(published, timeout=15)
        assert producer._sender.sender_task is sender_task, "the relay started the caller's producer again"
    finally:
        stop.set()
        await task
        await engine.dispose()
    try:
        await producer.send_and_wait(kafka_settings.topic(TOPIC), b"still open", key=b"cli_shared")
    finally:
        await producer.stop()


class _CountingRelay(OutboxRelay):
    """The real relay, counting the publish passes that found rows."""

    passes_with_rows = 0

    async def publish_batch(self) -> int:
        count = await super().publish_batch()
        if count:
            self.passes_with_rows += 1
        return count


async def test_commits_arriving_right_after_a_pass_share_the_next_one(
    sqlite_url: str, kafka_settings: KafkaSettings
) -> None:
    engine, sessions = await setup_database(sqlite_url)
    stop = asyncio.Event()
    settings = OutboxSettings(poll_interval_ms=30_000, coalesce_ms=500)
    relay = _CountingRelay(sessions, kafka_settings, settings, name="coalesce")
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_until(lambda: _holds(relay), timeout=10, interval=0.02)
        await write(sessions, [payment("cli_c", 0)])
        relay.wake()
        await wait_until(lambda: _published(relay, 1), timeout=10, interval=0.005)
        for i in range(1, 6):  # five commits, each waking the relay, within the coalescing window
            await write(sessions, [payment("cli_c", i)])
            relay.wake()
        await wait_until(lambda: _published(relay, 6), timeout=10, interval=0.005)
        assert relay.passes_with_rows == 2  # one pass for the first, one for the five that followed
    finally:
        stop.set()
        await task
        await engine.dispose()


async def _published(relay: OutboxRelay, n: int) -> bool:
    return relay.published >= n
