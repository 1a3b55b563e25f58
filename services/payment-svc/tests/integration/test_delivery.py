"""Through the real broker: a duplicate storm ends as exactly one PaymentReceived on ar.payment.events."""

from __future__ import annotations

import asyncio
from typing import Any

from ar_events.events import PaymentReceived
from ar_events.topics import Topic


async def test_duplicate_storm_publishes_exactly_one_payment_received(svc_kafka: Any, h: Any) -> None:
    body = h.stripe_event(
        event_id="evt_storm_kafka", obj=h.payment_intent(pi="pi_storm", metadata={"client_id": "cli_S"})
    )
    responses = await asyncio.gather(*(svc_kafka.stripe(body) for _ in range(50)))
    assert {r.status_code for r in responses} == {200}
    await svc_kafka.publish()
    # A late duplicate after publishing changes nothing either.
    assert (await svc_kafka.stripe(body)).json()["status"] == "duplicate"
    await svc_kafka.publish()
    records = await h.read_topic(svc_kafka.kafka, Topic.PAYMENT_EVENTS)
    received = [e for e in records if isinstance(e.data, PaymentReceived)]
    assert len(received) == 1
    assert received[0].subject == "cli_S" and received[0].data.reference == "pi_storm"
    assert received[0].source == "payment-svc"
