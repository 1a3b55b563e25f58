"""Prometheus metrics of the plumbing (exposed by each service's /metrics)."""

from __future__ import annotations

import collections
import math
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

CONSUMER_RECORDS = Counter(
    "ar_events_consumer_records",
    "Records a consumer finished with, by outcome "
    "(processed, duplicate, unknown_type, ignored, dead_lettered)",
    ["consumer", "outcome"],
)
CONSUMER_RETRIES = Counter(
    "ar_events_consumer_retries", "Attempts a consumer repeated after an error, by kind", ["consumer", "kind"]
)
CONSUMER_BATCHES = Counter("ar_events_consumer_batches", "Poll batches committed", ["consumer"])
RELAY_PUBLISHED = Counter("ar_events_relay_published", "Outbox rows published by the relay", ["relay"])
RELAY_ERRORS = Counter("ar_events_relay_errors", "Relay passes that failed and will be retried", ["relay"])
RELAY_LEASE_HELD = Gauge(
    "ar_events_relay_lease_held", "1 while this relay holds the publishing lease", ["relay"]
)
OUTBOX_PURGED = Counter("ar_events_outbox_purged", "Published outbox rows deleted by retention", ["relay"])
EVENTS_CONSUMED = Counter(
    "ar_events_consumed",
    "Events a consumer applied (committed with their inbox row), by event type",
    ["consumer", "type"],
)
EVENTS_PRODUCED = Counter(
    "ar_events_produced",
    "Events the relay published (acknowledged by the broker), by event type",
    ["relay", "type"],
)
DEAD_LETTERS = Counter(
    "ar_events_dead_letters", "Records sent to a dead-letter topic, by source topic", ["consumer", "topic"]
)
HANDLER_LATENCY = Histogram(
    "ar_events_handler_seconds",
    "Time in a handler for one event (inside the batch transaction), by event type",
    ["consumer", "type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_LATENCY = Histogram(
    "ar_events_batch_seconds",
    "Time to apply and commit one poll batch (inbox, handlers, commit)",
    ["consumer"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OUTBOX_BACKLOG = Gauge("ar_events_outbox_backlog", "Outbox rows not yet published", ["relay"])
OUTBOX_OLDEST_AGE = Gauge(
    "ar_events_outbox_oldest_unsent_seconds",
    "Age of the oldest unpublished outbox row (0 when none)",
    ["relay"],
)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every value (a child, labels applied), in one update per bucket touched.

    Uses the client's bucket counters directly (the unit tests compare the result with ``observe``); falls
    back to ``observe`` if they are not there.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) < 4:
        for value in values:
            histogram.observe(value)
        return
    # observe() counts a value in the first bucket whose upper bound is >= it: bisect_left finds that bucket.
    for index, n in collections.Counter(bisect_left(bounds, value) for value in values).items():
        buckets[index].inc(n)
    total.inc(math.fsum(values))


class ConsumerMetrics:
    """The metric children of one consumer, looked up once per label set instead of once per record."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self._batch_latency = BATCH_LATENCY.labels(consumer)
        self._batches = CONSUMER_BATCHES.labels(consumer)
        self._records: dict[str, Counter] = {}
        self._consumed: dict[str, Counter] = {}
        self._handler: dict[str, Histogram] = {}

    def observe_batch(self, seconds: float) -> None:
        self._batch_latency.observe(seconds)

    def applied(self, event_type: str, handler_seconds: Sequence[float]) -> None:
        """Events of one type applied and committed, with the time each spent in its handler."""
        consumed = self._consumed.get(event_type)
        if consumed is None:
            consumed = self._consumed[event_type] = EVENTS_CONSUMED.labels(self.consumer, event_type)
            self._handler[event_type] = HANDLER_LATENCY.labels(self.consumer, event_type)
        consumed.inc(len(handler_seconds))
        observe_many(self._handler[event_type], handler_seconds)

    def finished_batch(self, **outcomes: int) -> None:
        """One poll batch done: records by outcome (processed, duplicate, unknown_type, ...)."""
        for outcome, n in outcomes.items():
            if n:
                counter = self._records.get(outcome)
                if counter is None:
                    counter = self._records[outcome] = CONSUMER_RECORDS.labels(self.consumer, outcome)
                counter.inc(n)
        self._batches.inc()
