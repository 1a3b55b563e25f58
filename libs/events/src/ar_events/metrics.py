"""Prometheus metrics of the plumbing (exposed by each service's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
