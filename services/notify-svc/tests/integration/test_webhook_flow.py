"""Signed webhooks to a real HTTP receiver: retries as rows, one delivery, 410, and the SSRF guard."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from standardwebhooks import Webhook

from ar_events.envelope import decode
from ar_events.events import ReminderRequested
from ar_events.outbox import TABLES
from ar_events.testing import sample_event
from notify_svc.repository import delivery_attempt, notification, webhook_endpoint

from .conftest import Receiver, dispatching, eventually, ingest, make_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _webhook_reminder(url: str, key: str = "case_7f3a:1:2") -> Any:
    return sample_event(ReminderRequested, notification_key=key, channels=["webhook"], webhook_url=url)


async def _rows(services: Any, table: Any) -> list[Any]:
    async with services.sessionmaker() as session:
        return list((await session.execute(select(table))).all())


async def _notify_events(services: Any) -> list[Any]:
    return [decode(r.value) for r in await _rows(services, TABLES.outbox)]


async def test_receiver_failing_twice_then_ok_gets_one_signed_delivery(
    database_url: str, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    settings = make_settings(database_url)
    async with dispatching(settings) as services:
        await ingest(services, _webhook_reminder(receiver.url()))
        await eventually(lambda: any(status == 200 for _, _, status in receiver.requests))

        async def settled() -> bool:
            rows = await _rows(services, notification)
            return rows[0].status == "sent"

        await eventually(settled)
        attempts = await _rows(services, delivery_attempt)
        events = await _notify_events(services)
    assert [s for _, _, s in receiver.requests] == [500, 503, 200]
    assert [a.outcome for a in attempts] == ["transient", "transient", "sent"]
    ids = {h["webhook-id"] for h, _, _ in receiver.requests}
    assert len(ids) == 1  # the same message id on every attempt: receivers can dedupe
    verifier = Webhook(SECRET)
    for headers, body, _ in receiver.requests:
        data = verifier.verify(body, headers)  # the reference implementation accepts our signature
        assert data["type"] == "ar.notification.reminder"
        assert data["data"]["notification_key"] == "case_7f3a:1:2"
        assert "F-2026-0017" in data["data"]["text"]
    assert [e.type for e in events] == ["ar.notify.sent.v1"]
    assert events[0].data.channel == "webhook"


async def test_410_disables_the_endpoint_and_fails_permanently(database_url: str, receiver: Receiver) -> None:
    receiver.statuses = [410]
    settings = make_settings(database_url)
    async with dispatching(settings) as services:
        await ingest(services, _webhook_reminder(receiver.url()))
        await eventually(lambda: _failed(services))
        await ingest(services, _webhook_reminder(receiver.url(), key="case_7f3a:1:3"))
        await eventually(lambda: _failed(services, 2))
        disabled = await _rows(services, webhook_endpoint)
        events = await _notify_events(services)
    assert len(receiver.requests) == 1  # the second message never reached the disabled endpoint
    assert [d.url for d in disabled] == [receiver.url()]
    assert [(e.data.permanent, e.data.error_code) for e in events] == [(True, "410"), (True, "disabled")]


async def _failed(services: Any, n: int = 1) -> bool:
    rows = await _rows(services, notification)
    return sum(r.status == "failed" for r in rows) >= n


async def test_ssrf_attempt_is_refused(database_url: str, receiver: Receiver) -> None:
    settings = make_settings(database_url)
    settings.webhook.allow_loopback = False
    async with dispatching(settings) as services:
        await ingest(services, _webhook_reminder(receiver.url()))  # 127.0.0.1
        await ingest(services, _webhook_reminder(f"http://localhost:{receiver.port}/x", key="k2"))
        await ingest(services, _webhook_reminder("http://169.254.169.254/latest/meta-data/", key="k3"))
        await eventually(lambda: _failed(services, 3))
        events = await _notify_events(services)
    assert receiver.requests == []
    assert len(events) == 3
    for e in events:
        assert e.type == "ar.notify.failed.v1" and e.data.permanent and e.data.error_code == "ssrf"
        assert "refused by SSRF guard" in e.data.reason
