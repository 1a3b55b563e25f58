"""The PaymentReceived records of one consumer transaction are planned together (one profile lookup): each
still gets exactly the receipt its client's preferences ask for, as one record per transaction would."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ar_events.envelope import Envelope
from ar_events.events import ClientRegistered, PaymentReceived
from ar_events.testing import sample_event
from notify_svc.bootstrap import build
from notify_svc.handlers import build_handlers
from notify_svc.repository import notification

from .conftest import ingest, make_settings, migrated


async def _consume_together(services: Any, *envelopes: Envelope[Any]) -> None:
    """As ConsumerRunner applies a poll: every record's handler in one transaction, then commit."""
    handlers = build_handlers(services.clock)
    async with services.sessionmaker() as session, session.begin():
        for env in envelopes:
            await handlers[env.type](session, env)


async def _receipts(services: Any) -> list[tuple[str, str, str, str]]:
    async with services.sessionmaker() as session:
        rows = (await session.execute(select(notification).where(notification.c.kind == "receipt"))).all()
    return sorted((r.notification_key, r.client_id, r.channel, r.status) for r in rows)


async def test_a_poll_of_payments_gets_the_receipts_each_client_wants(database_url: str) -> None:
    settings = make_settings(database_url)
    await migrated(settings)
    services = build(settings)
    try:
        wants = sample_event(ClientRegistered, client_id="cli_wants")  # the sample asks for receipts
        declines = sample_event(
            ClientRegistered,
            client_id="cli_declines",
            preferences={"channels": ["email"], "payment_receipts": False},
        )
        await ingest(services, wants, declines)
        payments = [
            sample_event(PaymentReceived, client_id=client, payment_id=pid)
            for client, pid in (
                ("cli_wants", "p1"),
                ("cli_declines", "p2"),
                ("cli_unknown", "p3"),
                ("cli_wants", "p4"),
                ("cli_wants", "p1"),
            )
        ]
        await _consume_together(services, *payments)
        expected = [
            ("payment:p1:receipt", "cli_wants", "email", "pending"),
            ("payment:p4:receipt", "cli_wants", "email", "pending"),
        ]
        assert await _receipts(services) == expected
        # the same records again, one per transaction: nothing new (the notification key is the primary key)
        await ingest(services, *payments)
        assert await _receipts(services) == expected
    finally:
        await services.close()


async def test_a_receipt_planned_in_the_poll_sees_a_profile_registered_earlier_in_it(
    database_url: str,
) -> None:
    settings = make_settings(database_url)
    await migrated(settings)
    services = build(settings)
    try:
        await _consume_together(
            services,
            sample_event(ClientRegistered, client_id="cli_new"),
            sample_event(PaymentReceived, client_id="cli_new", payment_id="p9"),
        )
        assert await _receipts(services) == [("payment:p9:receipt", "cli_new", "email", "pending")]
    finally:
        await services.close()
