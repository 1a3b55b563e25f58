"""Payment handlers end to end on the database (PostgreSQL and SQLite): refunds restore exact amounts, a chargeback
the client wins keeps the invoices reopened, one the merchant wins re-applies, repeats change nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from ar_events import events as ev
from ar_events.money import Money
from invoice_svc import handlers

from .conftest import Svc
from .test_api import pay

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


def eur(n: int) -> Money:
    return Money(amount_minor=n, currency="EUR")


async def run(svc: Svc, handler: handlers.EventHandler, event: ev.Payload) -> None:
    async with svc.runtime.make_uow() as uow:
        await handler(event, uow)
        await uow.commit()


async def dues(svc: Svc, *ids: str) -> list[int]:
    return [(await svc.get(f"/v1/invoices/{i}"))["amount_due"]["amount_minor"] for i in ids]


async def test_full_refund_restores_exact_amounts_including_credit_used_later(svc: Svc) -> None:
    c = await svc.client()
    a = await svc.invoice(c["id"], issue_date="2026-01-01", due_date="2026-01-31")  # 12,000
    b = await svc.invoice(c["id"], issue_date="2026-02-01", due_date="2026-03-03")  # 12,000
    await pay(svc, c["id"], 5_000, "p0")  # a: 7,000 left
    before = await dues(svc, a["id"], b["id"])
    await pay(svc, c["id"], 25_000, "p1")  # a 7,000, b 12,000, credit 6,000
    n = await svc.invoice(c["id"])  # consumes the 6,000 credit
    assert n["amount_due"]["amount_minor"] == 6_000
    refund = ev.PaymentRefunded(
        client_id=c["id"], refund_id="r1", payment_id="p1", amount=eur(25_000), refunded_at=AT
    )
    await run(svc, handlers.on_payment_refunded, refund)
    await run(svc, handlers.on_payment_refunded, refund)  # the same refund again: nothing more
    assert await dues(svc, a["id"], b["id"]) == before
    assert await dues(svc, n["id"]) == [12_000]
    st = await svc.get(f"/v1/clients/{c['id']}/statement")
    assert st["unapplied_credit"] == []
    assert (await svc.get(f"/v1/invoices/{b['id']}"))["status"] == "open"


async def test_chargeback_client_won_keeps_reopened_merchant_won_reapplies(svc: Svc) -> None:
    c = await svc.client()
    a = await svc.invoice(c["id"])
    b = await svc.invoice(c["id"])
    await pay(svc, c["id"], 12_000, "pa", invoice_ids=(a["id"],))
    await pay(svc, c["id"], 12_000, "pb", invoice_ids=(b["id"],))
    for pid, cb in (("pa", "cb_a"), ("pb", "cb_b")):
        await run(svc, handlers.on_chargeback_opened, ev.ChargebackOpened(
            client_id=c["id"], chargeback_id=cb, payment_id=pid, amount=eur(12_000), opened_at=AT))  # fmt: skip
    assert await dues(svc, a["id"], b["id"]) == [12_000, 12_000]
    for pid, cb, outcome in (("pa", "cb_a", ev.ChargebackOutcome.CLIENT_WON),
                             ("pb", "cb_b", ev.ChargebackOutcome.MERCHANT_WON)):  # fmt: skip
        closed = ev.ChargebackClosed(client_id=c["id"], chargeback_id=cb, payment_id=pid, amount=eur(12_000),
                                     outcome=outcome, closed_at=AT)  # fmt: skip
        await run(svc, handlers.on_chargeback_closed, closed)
        await run(svc, handlers.on_chargeback_closed, closed)  # repeat: no second re-application
    assert await dues(svc, a["id"], b["id"]) == [12_000, 0]
    assert [(await svc.get(f"/v1/invoices/{i}"))["status"] for i in (a["id"], b["id"])] == ["open", "paid"]
    st = await svc.get(f"/v1/clients/{c['id']}/statement")
    assert st["unapplied_credit"] == []
