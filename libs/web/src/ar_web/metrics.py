"""Prometheus metrics of the HTTP edge (process-wide, on the default registry)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests handled, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency in seconds, by method, route template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_REJECTED = Counter(
    "http_requests_rejected_total",
    "Requests refused at the edge before reaching a route, by reason",
    ["reason"],
)
AUTH_FAILURES = Counter(
    "http_auth_failures_total",
    "Requests refused by API-key authentication, by reason (missing, unknown, scope)",
    ["reason"],
)


def metrics_endpoint(registry: CollectorRegistry = REGISTRY) -> object:
    """A route handler exposing ``registry`` in the Prometheus text format."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
