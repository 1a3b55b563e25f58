"""Events in on the real topics, emails out to a real SMTP server, NotificationSent/Failed on ar.notify.events."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from ar_events.events import AgencyWarningIssued, ClientRegistered, ReminderRequested
from ar_events.settings import KafkaSettings
from ar_events.testing import sample_event
from notify_svc.repository import Repository, delivery_attempt, suppression

from .conftest import MailSink, NotifyTopic, eventually, make_settings, publish, running

CLIENT = "cli_01HQ3ZK8"


def _reminder(key: str = "case_7f3a:1:2", **fields: Any) -> Any:
    return sample_event(ReminderRequested, notification_key=key, **fields)


async def test_agency_warning_email_content_headers_multipart_and_language(
    database_url: str, kafka_settings: KafkaSettings, mail_sink: MailSink
) -> None:
    settings = make_settings(database_url, kafka_settings, smtp_port=mail_sink.port)
    warning = sample_event(AgencyWarningIssued)  # fr, from the account manager, deadline 2026-03-12
    async with running(settings) as services, NotifyTopic(kafka_settings) as topic:
        # Different topics, so no order between them: let the profile land first (else the name falls back
        # to the recipient's, see the README).
        await publish(kafka_settings, sample_event(ClientRegistered))

        async def projected() -> bool:
            async with services.sessionmaker() as session:
                return await Repository(session).contact_profile(CLIENT) is not None

        await eventually(projected)
        await publish(kafka_settings, warning)
        sent = await topic.wait_for(lambda e: e.type == "ar.notify.sent.v1")
    assert len(mail_sink.messages) == 1
    rcpts, _ = mail_sink.messages[0]
    assert rcpts == ["paul@boulangerie-martin.example"]
    msg = mail_sink.parsed()[0]
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["From"] == "Claire Dubois <claire.dubois@example.com>"  # escalated: the account manager
    assert msg["Sender"] == "ACME Receivables <ar@seller.example>"
    assert msg["To"] == "Paul Martin <paul@boulangerie-martin.example>"
    assert msg["Content-Language"] == "fr"
    assert msg["Subject"].startswith("Mise en demeure") and "12 mars 2026" in msg["Subject"]
    assert msg["X-AR-Case-Id"] == "case_7f3a"
    assert msg["Message-ID"] == sent.data.message_id
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for body in (text, html):
        assert "F-2026-0017" in body and "F-2026-0031" in body
        assert "https://pay.example.com/c/cli_01HQ3ZK8" in body
        assert "12 mars 2026" in body
        assert "Boulangerie Martin SARL" in body  # client name from the contact projection
    assert sent.data.notification_key == "case_7f3a:1:5" and sent.data.case_id == "case_7f3a"
    assert sent.causationid == warning.id and sent.correlationid == warning.correlationid


async def test_duplicate_events_give_one_email(
    database_url: str, kafka_settings: KafkaSettings, mail_sink: MailSink
) -> None:
    settings = make_settings(database_url, kafka_settings, smtp_port=mail_sink.port)
    first = _reminder()
    again_same_key = _reminder()  # a different event id carrying the same notification key
    other = _reminder(key="case_7f3a:1:3", template="overdue-2")
    async with running(settings), NotifyTopic(kafka_settings) as topic:
        await publish(kafka_settings, first, first, again_same_key, first)
        await topic.wait_for(lambda e: e.type == "ar.notify.sent.v1")
        await publish(
            kafka_settings, other
        )  # same partition, after the duplicates: when it is sent, they were seen
        await topic.wait_for(
            lambda e: e.type == "ar.notify.sent.v1" and e.data.notification_key == "case_7f3a:1:3"
        )
        await asyncio.sleep(0.3)
        sent = [e for e in topic.events if e.type == "ar.notify.sent.v1"]
    assert len(mail_sink.messages) == 2
    assert sorted(e.data.notification_key for e in sent) == ["case_7f3a:1:2", "case_7f3a:1:3"]


async def test_smtp_down_then_up_delivers_once(database_url: str, kafka_settings: KafkaSettings) -> None:
    sink = MailSink()  # port chosen, nothing listening yet: connection refused
    settings = make_settings(database_url, kafka_settings, smtp_port=sink.port)
    async with running(settings) as services, NotifyTopic(kafka_settings) as topic:
        await publish(kafka_settings, _reminder())

        async def refused_attempts() -> int:
            async with services.sessionmaker() as session:
                rows = (await session.execute(select(delivery_attempt.c.outcome))).scalars().all()
            return sum(1 for r in rows if r == "transient")

        await eventually(lambda: refused_attempts())
        sink.start()
        try:
            sent = await topic.wait_for(lambda e: e.type == "ar.notify.sent.v1")
            await asyncio.sleep(1.0)  # room for a duplicate to show up, if there were one
        finally:
            sink.stop()
    assert len(sink.messages) == 1
    assert sent.data.notification_key == "case_7f3a:1:2"
    assert not [e for e in topic.events if e.type == "ar.notify.failed.v1"]


async def test_550_reply_gives_permanent_notification_failed_and_suppresses_the_address(
    database_url: str, kafka_settings: KafkaSettings, mail_sink: MailSink
) -> None:
    mail_sink.refuse.add("paul@boulangerie-martin.example")
    settings = make_settings(database_url, kafka_settings, smtp_port=mail_sink.port)
    async with running(settings) as services, NotifyTopic(kafka_settings) as topic:
        await publish(kafka_settings, _reminder())
        failed = await topic.wait_for(lambda e: e.type == "ar.notify.failed.v1")
        assert failed.data.permanent is True
        assert failed.data.error_code == "550"
        assert "User unknown" in failed.data.reason
        assert failed.data.recipient == "paul@boulangerie-martin.example"
        assert failed.data.case_id == "case_7f3a" and failed.data.step == 2
        async with services.sessionmaker() as session:
            suppressed = (await session.execute(select(suppression.c.address))).scalars().all()
        assert suppressed == ["paul@boulangerie-martin.example"]

        # The next message to a suppressed address is not attempted at all and is reported as failed.
        mail_sink.refuse.clear()
        await publish(kafka_settings, _reminder(key="case_7f3a:1:3", template="overdue-2"))
        second = await topic.wait_for(
            lambda e: e.type == "ar.notify.failed.v1" and e.data.notification_key == "case_7f3a:1:3"
        )
    assert second.data.permanent is True and second.data.error_code == "suppressed"
    assert mail_sink.messages == []


async def test_a_consumed_request_is_sent_at_once_not_at_the_next_dispatcher_poll(
    database_url: str, kafka_settings: KafkaSettings, mail_sink: MailSink
) -> None:
    # The dispatcher polls once a minute here: only the consumer's commit waking it can send within the test.
    settings = make_settings(database_url, kafka_settings, smtp_port=mail_sink.port, poll_interval_ms=60_000)
    async with running(settings), NotifyTopic(kafka_settings) as topic:
        await asyncio.sleep(1)  # the dispatcher's first pass is over: it now sleeps for its minute
        await publish(kafka_settings, _reminder())
        await topic.wait_for(lambda e: e.type == "ar.notify.sent.v1", timeout=20)
    assert len(mail_sink.messages) == 1
