"""Crash windows: rows left in 'sending' are resolved once; projection keeps the newest profile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from ar_events.clock import ManualClock
from ar_events.envelope import decode
from ar_events.events import ClientRegistered, ClientUpdated, ReminderRequested
from ar_events.outbox import TABLES
from ar_events.testing import sample_event
from notify_svc.bootstrap import Services, build, outbound
from notify_svc.dispatcher import Dispatcher
from notify_svc.repository import Repository, UnitOfWork, delivery_attempt, notification

from .conftest import MailSink, dispatching, eventually, ingest, make_settings, migrated

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@contextlib.asynccontextmanager
async def dispatcher_at(
    database_url: str, port: int, clock: ManualClock
) -> AsyncIterator[tuple[Services, Dispatcher]]:
    settings = make_settings(database_url, smtp_port=port, lease_s=60.0)
    await migrated(settings)
    services = build(settings, clock)
    try:
        async with outbound(settings) as (smtp, webhooks):
            yield (
                services,
                Dispatcher(
                    services.sessionmaker, settings, services.renderer, clock, smtp=smtp, webhooks=webhooks
                ),
            )
    finally:
        await services.close()


async def crash_after_send(d: Dispatcher) -> None:
    """Claim (commit 'sending'), hand the message to the SMTP server, and die before recording it."""
    now = d.clock.now()
    async with UnitOfWork(d.sessionmaker) as uow:
        rows = await uow.repo.claim_due(now, now + timedelta(seconds=60), 10)
        await uow.commit()
    for row in rows:
        result = await d._deliver(row, {}, {})
        assert result.outcome == "sent"


async def _status(d: Dispatcher) -> tuple[str, int]:
    async with d.sessionmaker() as session:
        row = (await session.execute(select(notification.c.status, notification.c.recoveries))).one()
    return row.status, row.recoveries


async def test_crash_between_send_and_record_gives_at_most_one_duplicate_with_the_same_message_id(
    database_url: str, mail_sink: MailSink
) -> None:
    clock = ManualClock(T0)
    async with dispatcher_at(database_url, mail_sink.port, clock) as (services, d):
        await ingest(services, sample_event(ReminderRequested))
        await crash_after_send(d)
        assert await _status(d) == ("sending", 0)
        assert await d.recover() == 0  # lease still running: a live process may own it

        clock.advance(timedelta(seconds=61))
        assert await d.recover() == 1
        assert await d.run_once() == 1  # the resend: the one documented duplicate
        assert await _status(d) == ("sent", 1)
        assert await d.run_once() == 0
    ids = [m["Message-ID"] for m in mail_sink.parsed()]
    assert len(ids) == 2 and ids[0] == ids[1]  # same Message-ID: mail clients show one message


async def test_second_crash_in_the_window_stops_and_reports_unknown(
    database_url: str, mail_sink: MailSink
) -> None:
    clock = ManualClock(T0)
    async with dispatcher_at(database_url, mail_sink.port, clock) as (services, d):
        await ingest(services, sample_event(ReminderRequested))
        await crash_after_send(d)
        clock.advance(timedelta(seconds=61))
        await d.recover()
        await crash_after_send(d)  # dies again in the same window
        clock.advance(timedelta(seconds=61))
        await d.recover()
        assert await _status(d) == ("unknown", 2)
        assert await d.run_once() == 0  # no third copy
        async with d.sessionmaker() as session:
            outcomes = (await session.execute(select(delivery_attempt.c.outcome))).scalars().all()
            events = [decode(v) for v in (await session.execute(select(TABLES.outbox.c.value))).scalars()]
    assert len(mail_sink.messages) == 2
    assert outcomes == ["crashed", "crashed"]
    assert [(e.type, e.data.permanent, e.data.error_code) for e in events] == [
        ("ar.notify.failed.v1", False, "unknown")
    ]


async def test_crash_after_claim_before_send_delivers_exactly_once(
    database_url: str, mail_sink: MailSink
) -> None:
    clock = ManualClock(T0)
    async with dispatcher_at(database_url, mail_sink.port, clock) as (services, d):
        await ingest(services, sample_event(ReminderRequested))
        async with UnitOfWork(d.sessionmaker) as uow:
            await uow.repo.claim_due(clock.now(), clock.now() + timedelta(seconds=60), 10)
            await uow.commit()  # ... and the process dies here
        clock.advance(timedelta(seconds=61))
        await d.recover()
        await d.run_once()
        assert await _status(d) == ("sent", 1)
    assert len(mail_sink.messages) == 1


async def test_contact_projection_keeps_the_newest_profile_when_events_arrive_out_of_order(
    database_url: str,
) -> None:
    settings = make_settings(database_url)
    await migrated(settings)
    services = build(settings, ManualClock(T0))
    newer = sample_event(ClientUpdated, name="New Name SA", time=T0 + timedelta(hours=1))
    older = sample_event(ClientRegistered, name="Old Name SARL", time=T0)
    try:
        await ingest(services, newer, older)
        async with services.sessionmaker() as session:
            profile: dict[str, Any] | None = await Repository(session).contact_profile(newer.data.client_id)
    finally:
        await services.close()
    assert profile is not None and profile["name"] == "New Name SA"


async def test_reply_lost_after_data_is_resent_once_with_the_same_message_id(
    database_url: str, mail_sink: MailSink
) -> None:
    mail_sink.stall_replies, mail_sink.stall_s = 1, 2.0
    settings = make_settings(database_url, smtp_port=mail_sink.port)
    settings.smtp.timeout_s = 0.7
    async with dispatching(settings) as services:
        await ingest(services, sample_event(ReminderRequested))

        async def settled() -> Any:
            async with services.sessionmaker() as session:
                row = (await session.execute(select(notification))).one()
                return row if row.status in ("sent", "unknown", "failed") else None

        row = await eventually(settled)
        async with services.sessionmaker() as session:
            outcomes = (await session.execute(select(delivery_attempt.c.outcome))).scalars().all()
    assert (row.status, row.recoveries) == ("sent", 1)
    assert outcomes == ["uncertain", "sent"]
    ids = [m["Message-ID"] for m in mail_sink.parsed()]
    assert len(ids) == 2 and ids[0] == ids[1]


async def test_reply_lost_twice_stops_at_unknown(database_url: str, mail_sink: MailSink) -> None:
    mail_sink.stall_replies, mail_sink.stall_s = 5, 2.0
    settings = make_settings(database_url, smtp_port=mail_sink.port)
    settings.smtp.timeout_s = 0.7
    async with dispatching(settings) as services:
        await ingest(services, sample_event(ReminderRequested))

        async def settled() -> Any:
            async with services.sessionmaker() as session:
                row = (await session.execute(select(notification))).one()
                return row if row.status in ("sent", "unknown", "failed") else None

        row = await eventually(settled)
        await asyncio.sleep(1.5)
        async with services.sessionmaker() as session:
            events = [decode(v) for v in (await session.execute(select(TABLES.outbox.c.value))).scalars()]
    assert row.status == "unknown"
    assert len(mail_sink.messages) == 2  # never a third copy
    assert [(e.type, e.data.error_code, e.data.permanent) for e in events] == [
        ("ar.notify.failed.v1", "uncertain", False)
    ]
