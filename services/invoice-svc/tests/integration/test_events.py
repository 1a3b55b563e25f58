"""Events on the real topics: the REST changes and the payment consumer, read back from the embedded broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from ar_events import events as ev
from ar_events.envelope import Envelope, decode, encode, new_event
from ar_events.kafka import make_producer
from ar_events.money import Money
from ar_events.settings import KafkaSettings
from ar_events.topics import Topic
from invoice_svc.bootstrap import CONSUMER, RELAY

from .conftest import Svc, start_service


@pytest_asyncio.fixture
async def live(postgres_url: str, kafka_settings: KafkaSettings) -> AsyncIterator[tuple[Svc, KafkaSettings]]:
    """The service on PostgreSQL with its relay and payment consumer running against the broker."""
    s, _ = await start_service(postgres_url, kafka_settings)
    await s.runtime.start((RELAY, CONSUMER))
    try:
        yield s, kafka_settings
    finally:
        await s.http.aclose()
        await s.runtime.close()


async def read_events(kafka: KafkaSettings, topic: Topic, until: Callable[[list[Envelope[Any]]], bool],
                      timeout: float = 30) -> list[Envelope[Any]]:  # fmt: skip
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(kafka.topic(topic.value), p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Envelope[Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until(out) and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(decode(r.value) for r in records)
        await asyncio.sleep(0.5)  # and nothing more
        for records in (await consumer.getmany(timeout_ms=200)).values():
            out.extend(decode(r.value) for r in records)
        out.sort(key=lambda e: (e.subject, e.time))
        return out
    finally:
        await consumer.stop()


async def publish(kafka: KafkaSettings, *payloads: ev.Payload) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        for p in payloads:
            env = new_event(p, source="payment-svc", time=datetime.now(UTC))
            await producer.send_and_wait(kafka.topic(p.TOPIC.value), encode(env), key=env.key)
    finally:
        await producer.stop()


async def wait_for(svc: Svc, path: str, check: Callable[[Any], bool], timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        body = await svc.get(path)
        if check(body) or loop.time() > deadline:
            return body
        await asyncio.sleep(0.2)


def of_type(events: list[Envelope[Any]], cls: type[ev.Payload]) -> list[Any]:
    return [e.data for e in events if isinstance(e.data, cls)]


async def test_rest_changes_emit_catalogued_events(live: tuple[Svc, KafkaSettings]) -> None:
    svc, kafka = live
    c = await svc.client(external_id=f"ERP-{uuid.uuid4().hex[:6]}")
    await svc.http.patch(f"/v1/clients/{c['id']}", json={"segment": "enterprise"})
    inv = await svc.invoice(c["id"], early_payment_discount={"rate_bp": 200, "days": 10})
    await svc.http.post(
        f"/v1/invoices/{inv['id']}/credit-notes", json={"amount": {"amount_minor": 2_000, "currency": "EUR"}}
    )
    d = (await svc.http.post(f"/v1/invoices/{inv['id']}/disputes", json={"reason": "service_quality"})).json()
    await svc.http.post(f"/v1/disputes/{d['id']}/resolve", json={"outcome": "upheld",
                        "credit_note": {"amount": {"amount_minor": 1_000, "currency": "EUR"}}})  # fmt: skip
    other = await svc.invoice(c["id"])
    await svc.http.post(f"/v1/invoices/{other['id']}/void", json={"reason": "sent twice"})
    events = await read_events(kafka, Topic.INVOICE_EVENTS, lambda es: len(es) >= 9)
    assert [e.type for e in events] == [
        ev.ClientRegistered.TYPE, ev.ClientUpdated.TYPE, ev.InvoiceIssued.TYPE, ev.CreditNoteIssued.TYPE,
        ev.DisputeOpened.TYPE, ev.CreditNoteIssued.TYPE, ev.DisputeResolved.TYPE, ev.InvoiceIssued.TYPE,
        ev.InvoiceVoided.TYPE,
    ]  # fmt: skip
    assert all(e.subject == c["id"] and e.source == "invoice-svc" for e in events)
    reg, upd = events[0].data, events[1].data
    assert (reg.external_id, reg.segment, upd.segment) == (c["external_id"], "smb", "enterprise")
    assert reg.contacts[0].role is ev.ContactRole.BILLING
    assert reg.account_manager.email == "claire@example.com"
    issued = events[2].data
    assert isinstance(issued, ev.InvoiceIssued)
    assert (issued.total.amount_minor, issued.amount_due.amount_minor, issued.due_date.isoformat()) == (
        12_000, 12_000, "2026-03-31",
    )  # fmt: skip
    assert issued.lines[0].tax.amount_minor == 2_000
    assert (
        issued.early_payment_discount is not None and issued.early_payment_discount.amount.amount_minor == 240
    )
    notes = of_type(events, ev.CreditNoteIssued)
    assert [n.amount_due_after.amount_minor for n in notes] == [10_000, 9_000]
    resolved = of_type(events, ev.DisputeResolved)[0]
    assert (resolved.outcome, resolved.credit_note_id) == (ev.DisputeOutcome.UPHELD, notes[1].credit_note_id)
    assert of_type(events, ev.InvoiceVoided)[0].reason == "sent twice"


async def test_payment_events_are_allocated_and_announced(live: tuple[Svc, KafkaSettings]) -> None:
    svc, kafka = live
    c = await svc.client()
    cid = c["id"]
    old = await svc.invoice(cid, issue_date="2026-01-01", due_date="2026-01-31")  # 12,000
    new = await svc.invoice(cid, issue_date="2026-02-20", early_payment_discount={"rate_bp": 200, "days": 10})
    # new: 12,000, discount 240 until 2026-03-02; paying 12,000 + 11,760 on 03-01 settles both
    at = datetime(2026, 3, 1, 9, tzinfo=UTC)

    def eur(n: int) -> Money:
        return Money(amount_minor=n, currency="EUR")

    received = ev.PaymentReceived(client_id=cid, payment_id="pay_A", amount=eur(23_760 + 500),
                                  method=ev.PaymentMethod.CARD, processor="stripe", received_at=at)  # fmt: skip
    await publish(kafka, received, received)  # the second copy (new event id) must change nothing
    await wait_for(svc, f"/v1/invoices/{new['id']}", lambda b: b["status"] == "paid")
    await publish(kafka, ev.PaymentRefunded(client_id=cid, refund_id="re_1", payment_id="pay_A", amount=eur(1_500),
                                            refunded_at=at))  # fmt: skip
    # 500 of credit goes first, then 1,000 from the newest allocation (`new`) plus its 240 discount
    await wait_for(svc, f"/v1/invoices/{new['id']}", lambda b: b["status"] == "open")
    await publish(
        kafka,
        ev.ChargebackOpened(client_id=cid, chargeback_id="cb_1", payment_id="pay_A", amount=eur(5_000), opened_at=at),
        ev.ChargebackClosed(client_id=cid, chargeback_id="cb_1", payment_id="pay_A", amount=eur(5_000),
                            outcome=ev.ChargebackOutcome.MERCHANT_WON, closed_at=at),
    )  # fmt: skip
    events = await read_events(
        kafka, Topic.INVOICE_EVENTS, lambda es: len(of_type(es, ev.InvoicePaymentApplied)) >= 3
    )
    applied = of_type(events, ev.InvoicePaymentApplied)
    # payment: old 12,000 (due first), new 11,760 + discount 240
    assert [(a.invoice_id, a.amount.amount_minor, a.discount and a.discount.amount_minor,
             a.amount_due_after.amount_minor) for a in applied[:2]] == [
        (old["id"], 12_000, None, 0), (new["id"], 11_760, 240, 0),
    ]  # fmt: skip
    paid = of_type(events, ev.InvoicePaid)
    assert [(p.invoice_id, p.days_late) for p in paid[:2]] == [(old["id"], 29), (new["id"], -21)]
    reopened = of_type(events, ev.InvoiceReopened)
    assert [(r.invoice_id, r.reason, r.amount_due_after.amount_minor, r.payment_id) for r in reopened] == [
        (new["id"], ev.ReopenReason.REFUND, 1_240, "pay_A"),  # 1,000 cash + the 240 discount it earned
        (new["id"], ev.ReopenReason.CHARGEBACK, 6_240, "pay_A"),  # newest allocation first
    ]
    # merchant won: the 5,000 goes back to the invoice it reopened (no discount: it no longer settles it)
    restored = [
        (a.invoice_id, a.amount.amount_minor, a.discount, a.amount_due_after.amount_minor)
        for a in applied[2:]
    ]
    assert restored == [(new["id"], 5_000, None, 1_240)]
    st = await svc.get(f"/v1/clients/{cid}/statement")
    balance = sum(i["amount_due"]["amount_minor"] for i in st["open_items"])
    # what is still owed: 24,000 total - (23,760 + 500 - 1,500 refunded) cash - no discount left on `new`
    assert balance == 24_000 - (23_760 + 500 - 1_500)
    assert st["unapplied_credit"] == []
