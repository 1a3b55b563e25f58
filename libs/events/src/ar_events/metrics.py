"""Prometheus metrics of the plumbing (exposed by each service's /metrics)."""

from __future__ import annotations

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
