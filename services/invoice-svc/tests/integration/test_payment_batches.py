"""The consumer applies the PaymentReceived records of a poll together (``handlers.queue_payment``): the result must
be exactly what applying them one record per transaction gives, on PostgreSQL and SQLite.

Each scenario runs twice in one database, on two twin sets of clients with the same invoices: once one record per
transaction, once all records in ONE consumer transaction (as ``ConsumerRunner`` applies a poll). Invoices,
payments, allocation rows, ledger entries and the events in the outbox must match, twin for twin.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from ar_events import events as ev
from ar_events.envelope import Envelope, decode, new_event
from ar_events.money import Money
from ar_events.tables import TABLES
from invoice_svc.bootstrap import consumer_handlers
from invoice_svc.repository import allocation, invoice, ledger_entry, payment

from .conftest import T0, Svc

CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP")  # GBP: no invoices, all credit


def _received(client_id: str, pid: str, amount: int, currency: str, at: datetime,
              invoice_ids: tuple[str, ...] = ()) -> ev.PaymentReceived:  # fmt: skip
    return ev.PaymentReceived(
        client_id=client_id, payment_id=pid, amount=Money(amount_minor=amount, currency=currency),
        method=ev.PaymentMethod.TRANSFER, processor="manual", reference=f"ref-{pid}", invoice_ids=invoice_ids,
        received_at=at,
    )  # fmt: skip


async def _twin_clients(svc: Svc, rng: random.Random, n_clients: int) -> list[tuple[str, str, list[str]]]:
    """Pairs of clients with the same invoices (numbers differ by prefix): (client a, client b, numbers)."""
    out = []
    for _ in range(n_clients):
        a, b = (await svc.client())["id"], (await svc.client())["id"]
        numbers = []
        for k in range(rng.randint(1, 4)):
            issue = T0.date() - timedelta(days=rng.randint(0, 60))
            body: dict[str, Any] = {
                "issue_date": str(issue),
                "due_date": str(issue + timedelta(days=rng.choice((0, 10, 30)))),
                "currency": "USD" if k == 3 else "EUR",
                "lines": [{"description": "x", "quantity": rng.randint(1, 3),
                           "unit_price": {"amount_minor": rng.choice((1_000, 2_500, 9_999)),
                                          "currency": "USD" if k == 3 else "EUR"},
                           "tax_rate_bp": rng.choice((0, 2000))}],
            }  # fmt: skip
            if rng.random() < 0.3:
                body["early_payment_discount"] = {"rate_bp": 200, "days": 30}
            number = f"N{len(numbers)}-{rng.randrange(10**9)}"
            await svc.invoice(a, number=number, **body)
            await svc.invoice(b, number=number, **body)
            numbers.append(number)
        out.append((a, b, numbers))
    return out


async def _invoice_ids(svc: Svc, client_id: str) -> dict[str, str]:
    async with svc.runtime.sessionmaker() as s:
        rows = (
            await s.execute(select(invoice.c.number, invoice.c.id).where(invoice.c.client_id == client_id))
        ).all()
    return {number: id_ for number, id_ in rows}


def _script(rng: random.Random, twins: list[tuple[str, str, list[str]]], n: int) -> list[dict[str, Any]]:
    """Abstract payment records (client index, amounts, named invoice numbers, duplicates, refunds)."""
    steps: list[dict[str, Any]] = []
    for k in range(n):
        c = rng.randrange(len(twins))
        if steps and rng.random() < 0.1:  # the same payment id again (a processor retry)
            steps.append(dict(rng.choice([s for s in steps if s["kind"] == "pay"])))
            continue
        if k > 2 and rng.random() < 0.1:
            paid = [s for s in steps if s["kind"] == "pay"]
            if paid:
                target = rng.choice(paid)
                steps.append({"kind": "refund", "client": target["client"], "pid": target["pid"],
                              "rid": f"r{k}", "amount": rng.randint(1, target["amount"])})  # fmt: skip
                continue
        numbers = twins[c][2]
        named = tuple(rng.sample(numbers, rng.randint(0, min(2, len(numbers))))) if rng.random() < 0.4 else ()
        steps.append({"kind": "pay", "client": c, "pid": f"p{k}", "amount": rng.choice((500, 4_000, 12_000, 30_000)),
                      "currency": rng.choice(CURRENCIES), "named": named,
                      "at": T0 - timedelta(days=rng.randint(0, 20), minutes=k)})  # fmt: skip
    return steps


def _payloads(steps: list[dict[str, Any]], side: int, twins: list[tuple[str, str, list[str]]],
              ids: dict[str, dict[str, str]], prefix: str) -> list[ev.Payload]:  # fmt: skip
    out: list[ev.Payload] = []
    for s in steps:
        client = twins[s["client"]][side]
        if s["kind"] == "pay":
            named = tuple(ids[client][n] for n in s["named"])
            out.append(_received(client, prefix + s["pid"], s["amount"], s["currency"], s["at"], named))
        else:
            out.append(ev.PaymentRefunded(client_id=client, refund_id=prefix + s["rid"], payment_id=prefix + s["pid"],
                                          amount=Money(amount_minor=s["amount"], currency="EUR"), refunded_at=T0))  # fmt: skip
    return out


async def _consume(svc: Svc, envelopes: list[Envelope[Any]]) -> None:
    """As ConsumerRunner applies a poll: every record's handler in one transaction, then commit."""
    handlers = consumer_handlers(svc.clock)
    async with svc.runtime.sessionmaker() as session, session.begin():
        for envelope in envelopes:
            await handlers[envelope.type](session, envelope)


async def _state(svc: Svc, client_id: str, prefix: str) -> dict[str, Any]:
    """What the payments did to one client, with ids replaced by invoice numbers and unprefixed payment ids."""
    async with svc.runtime.sessionmaker() as s:
        numbers = {
            r.id: r.number for r in (await s.execute(select(invoice).where(invoice.c.client_id == client_id)))
        }

        def pid(p: str) -> str:
            assert p.startswith(prefix), p
            return p[len(prefix) :]

        invoices = sorted(
            (r.number, r.amount_due, r.paid_amount, r.status, r.paid_at)
            for r in await s.execute(select(invoice).where(invoice.c.client_id == client_id))
        )
        payments = sorted(
            (pid(r.id), r.currency, r.amount, r.allocated, r.refunded, r.held, r.method, r.processor, r.reference.replace(prefix, "", 1),
             tuple(numbers.get(i, i) for i in r.invoice_ids))
            for r in await s.execute(select(payment).where(payment.c.client_id == client_id))
        )  # fmt: skip
        allocations = [
            (
                pid(r.payment_id),
                numbers[r.invoice_id],
                r.amount,
                r.discount,
                r.value_date,
                r.days_late,
                r.cause.replace(prefix, "", 1),
            )
            for r in await s.execute(
                select(allocation).where(allocation.c.client_id == client_id).order_by(allocation.c.id)
            )
        ]
        ledger = sorted(
            (numbers[r.invoice_id], r.entry_date, r.kind, r.amount)
            for r in await s.execute(select(ledger_entry).where(ledger_entry.c.client_id == client_id))
        )
        outbox = TABLES.outbox
        rows = (await s.execute(select(outbox).where(outbox.c.key == client_id).order_by(outbox.c.id))).all()
    events = []
    for r in rows:
        env = decode(r.value)
        if env.type in (ev.ClientRegistered.TYPE, ev.InvoiceIssued.TYPE):
            continue
        data = json.loads(env.data.model_dump_json())
        data.pop("client_id")
        data["invoice_id"] = numbers[data["invoice_id"]]
        if data.get("payment_id"):
            data["payment_id"] = pid(data["payment_id"])
        events.append((env.type, r.type, data))
    return {"invoices": invoices, "payments": payments, "allocations": allocations, "ledger": ledger,
            "events": events}  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_poll_applied_together_equals_one_record_per_transaction(svc: Svc, seed: int) -> None:
    rng = random.Random(seed)
    twins = await _twin_clients(svc, rng, 4)
    ids = {c: await _invoice_ids(svc, c) for a, b, _ in twins for c in (a, b)}
    steps = _script(rng, twins, 40)
    # a payment stored before the poll: the poll's copy of it changes nothing
    pre = [s for s in steps if s["kind"] == "pay"][:2]
    now = svc.clock.now()
    single = [new_event(p, source="payment-svc", time=now) for p in _payloads(steps, 0, twins, ids, "s-")]
    batch = [new_event(p, source="payment-svc", time=now) for p in _payloads(steps, 1, twins, ids, "b-")]
    for before in (
        [new_event(p, source="payment-svc", time=now) for p in _payloads(pre, 0, twins, ids, "s-")],
        [new_event(p, source="payment-svc", time=now) for p in _payloads(pre, 1, twins, ids, "b-")],
    ):
        await _consume(svc, before)
    for envelope in single:
        await _consume(svc, [envelope])
    await _consume(svc, batch)
    for a, b, _ in twins:
        got, want = await _state(svc, b, "b-"), await _state(svc, a, "s-")
        for part in want:
            assert got[part] == want[part], part


async def test_events_are_caused_by_their_own_payment_record(svc: Svc) -> None:
    c = (await svc.client())["id"]
    d = (await svc.client())["id"]
    for client in (c, d):
        await svc.invoice(client)  # 12,000
    now = svc.clock.now()
    envelopes = [
        new_event(_received(c, "pc", 12_000, "EUR", now), source="payment-svc", time=now),
        new_event(_received(d, "pd1", 5_000, "EUR", now), source="payment-svc", time=now),
        new_event(_received(d, "pd2", 7_000, "EUR", now), source="payment-svc", time=now),
    ]
    await _consume(svc, envelopes)
    outbox = TABLES.outbox
    async with svc.runtime.sessionmaker() as s:
        rows = (
            await s.execute(
                select(outbox).where(outbox.c.type.in_((ev.InvoicePaymentApplied.TYPE, ev.InvoicePaid.TYPE)))
                .order_by(outbox.c.id)
            )
        ).all()  # fmt: skip
    got = [(decode(r.value).type, decode(r.value).causationid, decode(r.value).correlationid) for r in rows]
    by_id = {e.id: e for e in envelopes}
    assert [(t, by_id[cause].data.payment_id) for t, cause, _ in got] == [
        (ev.InvoicePaymentApplied.TYPE, "pc"),
        (ev.InvoicePaid.TYPE, "pc"),
        (ev.InvoicePaymentApplied.TYPE, "pd1"),
        (ev.InvoicePaymentApplied.TYPE, "pd2"),
        (ev.InvoicePaid.TYPE, "pd2"),
    ]
    assert all(corr == by_id[cause].correlationid for _, cause, corr in got)


async def test_a_failing_poll_applies_nothing(pg_svc: Svc) -> None:
    """An error while applying the held-back records fails the whole transaction (the runner then retries record
    by record): nothing of the poll is stored. (PostgreSQL: SQLite does not enforce the column's length.)"""
    svc = pg_svc
    c = (await svc.client())["id"]
    await svc.invoice(c)
    now = svc.clock.now()
    good = new_event(_received(c, "ok", 12_000, "EUR", now), source="payment-svc", time=now)
    bad = _received(c, "bad", 1_000, "EUR", now).model_copy(update={"reference": "r" * 300})  # column: 255
    with pytest.raises(DBAPIError, match="too long"):
        await _consume(svc, [good, new_event(bad, source="payment-svc", time=now)])
    async with svc.runtime.sessionmaker() as s:
        assert (await s.execute(select(payment.c.id))).all() == []
    await _consume(svc, [good])
    async with svc.runtime.sessionmaker() as s:
        assert (await s.execute(select(payment.c.id))).scalars().all() == ["ok"]
