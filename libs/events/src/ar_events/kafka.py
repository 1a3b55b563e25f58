"""aiokafka factories and topic bootstrap, configured from :class:`~ar_events.settings.KafkaSettings`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from ar_events.settings import KafkaSettings
from ar_events.topics import all_topics

log = logging.getLogger(__name__)


def make_producer(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer with ``acks=all``; idempotence as configured (off against the embedded broker)."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "acks": "all",
        "enable_idempotence": kafka.enable_idempotence,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 200,
    }
    if kafka.client_id:
        options["client_id"] = kafka.client_id
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(kafka: KafkaSettings, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer with manual commits, reading from the earliest offset when the group has none."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
        "max_poll_interval_ms": 300_000,
        "retry_backoff_ms": 200,
    }
    if kafka.client_id:
        options["client_id"] = kafka.client_id
    options.update(overrides)
    return AIOKafkaConsumer(**options)


async def ensure_topics(
    kafka: KafkaSettings,
    names: Iterable[str] | None = None,
    *,
    partitions: int | None = None,
    deadline_s: float = 30.0,
) -> list[str]:
    """Create missing topics (idempotent); default: the five topics and their ``.dlq``, with the prefix.

    ``names`` are physical names (already prefixed). Returns the names ensured.
    """
    wanted = list(names) if names is not None else all_topics(kafka.topic_prefix)
    count = partitions or kafka.partitions
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in wanted if n not in existing]
            if missing:
                new = [
                    NewTopic(n, num_partitions=count, replication_factor=kafka.replication_factor)
                    for n in missing
                ]
                try:
                    response = await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    response = None
                for topic_error in getattr(response, "topic_errors", None) or ():
                    name, code = topic_error[0], topic_error[1]
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise for_code(code)(f"cannot create topic {name}")
                log.info("created topics %s", missing)
            return wanted
        except KafkaError as exc:
            if loop.time() > deadline:
                raise
            log.warning("topic bootstrap failed (%s); retrying", exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
