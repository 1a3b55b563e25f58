"""payment-svc's own Prometheus metrics (default registry, served by ar_web on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS_REJECTED = Counter(
    "payment_webhooks_rejected_total",
    "Webhooks refused before anything was stored, by scheme and reason",
    ["scheme", "reason"],
)
WEBHOOKS_ACCEPTED = Counter(
    "payment_webhooks_accepted_total",
    "Verified webhooks answered 2xx, by scheme and outcome (processed, ignored, parked, duplicate)",
    ["scheme", "outcome"],
)
