"""Invoice notices and receipts follow the client's projection; a hostile override template sends nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from ar_events.envelope import decode
from ar_events.events import ClientRegistered, InvoiceIssued, PaymentReceived, ReminderRequested
from ar_events.outbox import TABLES
from ar_events.testing import sample_event
from notify_svc.repository import notification

from .conftest import MailSink, Receiver, dispatching, eventually, ingest, make_settings


async def _settled(services: Any, n: int) -> list[Any]:
    async def check() -> list[Any] | None:
        async with services.sessionmaker() as session:
            rows = list((await session.execute(select(notification))).all())
        return rows if len(rows) >= n and all(r.status in ("sent", "failed") for r in rows) else None

    result: list[Any] = await eventually(check)
    return result


async def test_invoice_notice_and_receipt_in_the_clients_language(
    database_url: str, mail_sink: MailSink
) -> None:
    settings = make_settings(database_url, smtp_port=mail_sink.port)
    async with dispatching(settings) as services:
        await ingest(services, sample_event(ClientRegistered))  # fr, receipts wanted
        await ingest(services, sample_event(InvoiceIssued), sample_event(PaymentReceived))
        await _settled(services, 2)
    subjects = sorted(m["Subject"] for m in mail_sink.parsed())
    assert subjects == [
        "Facture F-2026-0017 : 1\u202f200,00\u00a0€ à régler avant le 14 février 2026",
        "Paiement reçu : 1\u202f200,00\u00a0€, merci",
    ]
    invoice = next(m for m in mail_sink.parsed() if m["Subject"].startswith("Facture"))
    text = invoice.get_body(("plain",)).get_content()
    assert "https://pay.example.com/i/inv_1" in text and "économisez 24,00\u00a0€" in text
    assert invoice["From"] == "ACME Receivables <ar@seller.example>"


async def test_invoice_notice_goes_by_webhook_when_the_client_prefers_it(
    database_url: str, mail_sink: MailSink, receiver: Receiver
) -> None:
    settings = make_settings(database_url, smtp_port=mail_sink.port)
    client = sample_event(
        ClientRegistered, preferences={"channels": ["webhook"], "webhook_url": receiver.url()}
    )
    async with dispatching(settings) as services:
        await ingest(services, client, sample_event(InvoiceIssued))
        rows = await _settled(services, 1)
    assert [(r.channel, r.status) for r in rows] == [("webhook", "sent")]
    assert mail_sink.messages == [] and len(receiver.requests) == 1


async def test_hostile_override_template_fails_the_notification_and_sends_nothing(
    database_url: str, mail_sink: MailSink, tmp_path: Path
) -> None:
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "overdue-2.subject.txt").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    settings = make_settings(database_url, smtp_port=mail_sink.port)
    settings.templates.override_dir = tmp_path
    async with dispatching(settings) as services:
        await ingest(services, sample_event(ReminderRequested))  # template overdue-2, fr
        [row] = await _settled(services, 1)
        async with services.sessionmaker() as session:
            events = [decode(v) for v in (await session.execute(select(TABLES.outbox.c.value))).scalars()]
    assert mail_sink.messages == []
    assert (row.status, row.error_code, row.permanent) == ("failed", "template", False)
    assert "<class" not in (row.last_error or "")
    assert [(e.type, e.data.error_code, e.data.permanent) for e in events] == [
        ("ar.notify.failed.v1", "template", False)
    ]
