"""Observability through the public interfaces: every service's /metrics carries the figures ops need, and
one correlation id follows a payment from the webhook through every service's events and logs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio

from ar_events.topics import Topic

from .ladder import new_tag, onboard, quiet_due_date
from .support import Api, E2EStack, TopicReader, eventually

REQUIRED_METRICS = {
    "invoice": ("ar_events_consumed", "ar_events_produced", "ar_events_handler_seconds", "ar_events_dead_letters",
                "ar_events_outbox_backlog", "ar_events_outbox_oldest_unsent_seconds", "http_requests"),
    "payment": ("ar_events_produced", "ar_events_outbox_backlog", "ar_events_outbox_oldest_unsent_seconds",
                "payment_webhooks_rejected"),
    "dunning": ("ar_events_consumed", "ar_events_produced", "ar_events_handler_seconds", "dunning_timers_due",
                "ar_events_outbox_backlog", "ar_events_dead_letters"),
    "notify": ("ar_events_consumed", "ar_events_produced", "notify_deliveries", "ar_events_outbox_backlog"),
}  # fmt: skip


@pytest_asyncio.fixture
async def topics(stack: E2EStack) -> AsyncIterator[TopicReader]:
    async with TopicReader(stack.kafka(), Topic.PAYMENT_EVENTS, Topic.INVOICE_EVENTS) as reader:
        yield reader


async def test_every_service_exposes_the_ops_metrics(stack: E2EStack, api: Api) -> None:
    for service, names in REQUIRED_METRICS.items():
        text = (await api.http.get(api.urls[service] + "/metrics")).text
        missing = [n for n in names if f"# TYPE {n}" not in text and f"# TYPE {n}_total" not in text]
        assert not missing, f"{service} /metrics lacks {missing}"
    await api.create_client(new_tag("metrics"))

    async def counted() -> bool:
        text = (await api.http.get(api.urls["invoice"] + "/metrics")).text
        return 'ar_events_produced_total{relay="invoice-svc",type="ar.client.registered.v1"}' in text

    await eventually(counted, what="invoice-svc to count the ClientRegistered it published")


async def test_one_correlation_id_follows_a_payment_across_services(
    stack: E2EStack, api: Api, topics: TopicReader
) -> None:
    due = quiet_due_date((await api.sim_now()).date() + timedelta(days=2))
    [party] = await onboard(api, [new_tag("trace")], due)
    trace = f"trace-{uuid.uuid4()}"
    await api.pay_stripe(party.client_id, party.total, "EUR", party.invoice_ids, correlation_id=trace)
    await topics.until(
        lambda: len(topics.of(party.client_id, "invoice.paid")) == len(party.invoices), what="InvoicePaid"
    )
    [received] = topics.of(party.client_id, "payment.received")
    assert received.correlationid == trace
    for event in topics.of(party.client_id, "invoice.payment_applied", "invoice.paid"):
        assert event.correlationid == trace, event.type
        assert event.causationid is not None

    def logs_with_trace() -> set[str]:
        return {
            path.stem
            for path in stack.config.log_dir.glob("*.log")
            if trace in path.read_text(encoding="utf-8", errors="replace")
        }

    async def followed() -> bool:
        return {"payment", "invoice", "dunning"} <= logs_with_trace()

    await eventually(followed, what=f"the correlation id in the logs (found in {logs_with_trace()})")
