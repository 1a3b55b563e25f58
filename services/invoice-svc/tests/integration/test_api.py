"""Core REST behaviour, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ar_events.events import PaymentMethod, PaymentReceived
from ar_events.money import Money
from invoice_svc import handlers

from .conftest import Svc, invoice_body


async def pay(svc: Svc, client_id: str, amount: int, pid: str, currency: str = "EUR", **kw: Any) -> None:
    """Feed a PaymentReceived through the same handler the consumer uses (Kafka is covered in test_events)."""
    event = PaymentReceived(
        client_id=client_id,
        payment_id=pid,
        amount=Money(amount_minor=amount, currency=currency),
        method=PaymentMethod.TRANSFER,
        processor="manual",
        received_at=kw.pop("received_at", svc.clock.now()),
        **kw,
    )
    async with svc.runtime.make_uow() as uow:
        await handlers.on_payment_received(event, uow)
        await uow.commit()


async def test_client_create_get_update_list(svc: Svc) -> None:
    c = await svc.client(external_id="ERP-1")
    assert c["id"].startswith("cli_")
    assert c["contacts"][0]["role"] == "billing"
    assert c["credit_limit"] == {"amount_minor": 500_000, "currency": "EUR"}
    got = await svc.get(f"/v1/clients/{c['id']}")
    assert got == c
    r = await svc.http.patch(
        f"/v1/clients/{c['id']}", json={"segment": "enterprise", "payment_terms_days": 45}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["segment"], r.json()["payment_terms_days"], r.json()["name"]) == (
        "enterprise",
        45,
        c["name"],
    )
    page = await svc.get("/v1/clients", external_id="ERP-1")
    assert [x["id"] for x in page["items"]] == [c["id"]]


async def test_duplicate_external_id_is_409_and_writes_nothing(svc: Svc) -> None:
    await svc.client(external_id="ERP-DUP")
    r = await svc.http.post("/v1/clients", json={**(await _body()), "external_id": "ERP-DUP"})
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == "external_id"
    assert len((await svc.get("/v1/clients"))["items"]) == 1


async def _body() -> dict[str, Any]:
    from .conftest import client_body

    return client_body()


async def test_issue_invoice_computes_totals_and_due_date_from_terms(svc: Svc) -> None:
    c = await svc.client(payment_terms_days=30)
    inv = await svc.invoice(
        c["id"],
        lines=[
            {"description": "a", "quantity": 1, "unit_price": {"amount_minor": 5, "currency": "EUR"}, "tax_rate_bp": 1000},
            {"description": "b", "quantity": 7, "unit_price": {"amount_minor": 333, "currency": "EUR"}, "tax_rate_bp": 550},
        ],
        early_payment_discount={"rate_bp": 200, "days": 10},
    )  # fmt: skip
    assert inv["id"].startswith("inv_")
    assert inv["due_date"] == "2026-03-31"
    assert [li["tax"]["amount_minor"] for li in inv["lines"]] == [1, 128]  # half-up per line
    assert inv["subtotal"]["amount_minor"] == 2336
    assert inv["tax"]["amount_minor"] == 129
    assert inv["total"]["amount_minor"] == 2465
    assert inv["amount_due"]["amount_minor"] == 2465
    assert inv["early_payment_discount"] == {
        "rate_bp": 200, "days": 10, "until": "2026-03-11", "amount": {"amount_minor": 49, "currency": "EUR"},
    }  # fmt: skip
    assert inv["status"] == "open"
    assert await svc.get(f"/v1/invoices/{inv['id']}") == inv


async def test_idempotency_key_same_body_same_response_other_body_409(svc: Svc) -> None:
    c = await svc.client()
    body = invoice_body(c["id"], number="IDEM-1")
    h = {"Idempotency-Key": "k-1"}
    r1 = await svc.http.post("/v1/invoices", json=body, headers=h)
    r2 = await svc.http.post("/v1/invoices", json=body, headers=h)
    assert r1.status_code == r2.status_code == 201
    assert r1.json() == r2.json()
    r3 = await svc.http.post("/v1/invoices", json={**body, "number": "IDEM-2"}, headers=h)
    assert r3.status_code == 409
    assert r3.json()["field"] == "Idempotency-Key"
    items = (await svc.get("/v1/invoices", client_id=c["id"]))["items"]
    assert [i["number"] for i in items] == ["IDEM-1"]


async def test_list_filters_and_cursor_pagination(svc: Svc) -> None:
    a = await svc.client()
    b = await svc.client()
    ids = []
    for n in range(5):
        svc.clock.current = datetime(2026, 3, 1, 12, n, tzinfo=UTC)
        ids.append((await svc.invoice(a["id"], due_date=f"2026-03-0{n + 2}"))["id"])
    await svc.invoice(b["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"client_id": a["id"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await svc.get("/v1/invoices", **params)
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    overdue = await svc.get("/v1/invoices", client_id=a["id"], overdue_as_of="2026-03-04")
    assert [i["id"] for i in overdue["items"]] == ids[:2]  # due 03-02 and 03-03
    await svc.http.post(f"/v1/invoices/{ids[0]}/void", json={"reason": "duplicate"})
    void = await svc.get("/v1/invoices", status="void")
    assert [i["id"] for i in void["items"]] == [ids[0]]
    r = await svc.http.get("/v1/invoices", params={"cursor": "not-a-cursor!!"})
    assert r.status_code == 400
    assert r.json()["field"] == "cursor"


async def test_void_credit_note_and_statuses(svc: Svc) -> None:
    c = await svc.client()
    inv = await svc.invoice(c["id"])  # 12,000
    r = await svc.http.post(f"/v1/invoices/{inv['id']}/credit-notes",
                            json={"amount": {"amount_minor": 2_000, "currency": "EUR"}, "reason": "goodwill"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["amount_due_after"] == {"amount_minor": 10_000, "currency": "EUR"}
    r = await svc.http.post(f"/v1/invoices/{inv['id']}/credit-notes",
                            json={"amount": {"amount_minor": 10_000, "currency": "EUR"}})  # fmt: skip
    assert r.status_code == 201
    got = await svc.get(f"/v1/invoices/{inv['id']}")
    assert (got["status"], got["amount_due"]["amount_minor"], got["credited"]["amount_minor"]) == (
        "credited",
        0,
        12_000,
    )
    notes = await svc.get(f"/v1/invoices/{inv['id']}/credit-notes")
    assert [n["amount"]["amount_minor"] for n in notes] == [2_000, 10_000]
    other = await svc.invoice(c["id"])
    r = await svc.http.post(f"/v1/invoices/{other['id']}/void", json={"reason": "wrong client"})
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["amount_due"]["amount_minor"], r.json()["void_reason"]) == (
        "void", 0, "wrong client",
    )  # fmt: skip


async def test_disputes_open_upheld_with_credit_note_and_rejected(svc: Svc) -> None:
    c = await svc.client()
    inv = await svc.invoice(c["id"])
    r = await svc.http.post(f"/v1/invoices/{inv['id']}/disputes",
                            json={"reason": "billing_error", "note": "two loaves missing",
                                  "amount": {"amount_minor": 2_400, "currency": "EUR"}})  # fmt: skip
    assert r.status_code == 201, r.text
    d = r.json()
    assert (d["status"], d["reason"]) == ("open", "billing_error")
    assert (await svc.get(f"/v1/invoices/{inv['id']}"))["disputed"] is True
    r = await svc.http.post(f"/v1/invoices/{inv['id']}/disputes", json={"reason": "other"})
    assert r.status_code == 409  # one open dispute at a time
    r = await svc.http.post(f"/v1/disputes/{d['id']}/resolve", json={"outcome": "upheld"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "upheld"
    assert r.json()["credit_note_id"].startswith("cn_")
    got = await svc.get(f"/v1/invoices/{inv['id']}")
    assert (got["amount_due"]["amount_minor"], got["disputed"]) == (9_600, False)
    r = await svc.http.post(f"/v1/disputes/{d['id']}/resolve", json={"outcome": "rejected"})
    assert r.status_code == 409
    d2 = (await svc.http.post(f"/v1/invoices/{inv['id']}/disputes", json={"reason": "cash_flow"})).json()
    r = await svc.http.post(f"/v1/disputes/{d2['id']}/resolve", json={"outcome": "rejected", "note": "no"})
    assert r.json()["status"] == "rejected"
    assert (await svc.get(f"/v1/invoices/{inv['id']}"))["amount_due"]["amount_minor"] == 9_600
    assert len(await svc.get(f"/v1/invoices/{inv['id']}/disputes")) == 2


async def test_payment_allocation_overpayment_credit_and_statement(svc: Svc) -> None:
    c = await svc.client()
    old = await svc.invoice(c["id"], issue_date="2026-01-01", due_date="2026-01-31")  # 12,000
    new = await svc.invoice(c["id"], issue_date="2026-02-01", due_date="2026-03-03")  # 12,000
    await pay(svc, c["id"], 15_000, "pay_1")
    assert (await svc.get(f"/v1/invoices/{old['id']}"))["status"] == "paid"
    assert (await svc.get(f"/v1/invoices/{new['id']}"))["amount_due"]["amount_minor"] == 9_000
    await pay(svc, c["id"], 15_000, "pay_1")  # same payment id again: nothing happens
    await pay(svc, c["id"], 10_000, "pay_2")  # 9,000 to `new`, 1,000 credit
    await pay(svc, c["id"], 700, "pay_usd", currency="USD")  # no USD invoice: credit in USD
    st = await svc.get(f"/v1/clients/{c['id']}/statement")
    assert st["open_items"] == []
    assert st["unapplied_credit"] == [
        {"amount_minor": 1_000, "currency": "EUR"}, {"amount_minor": 700, "currency": "USD"},
    ]  # fmt: skip
    nxt = await svc.invoice(c["id"])
    assert nxt["credit_applied"]["amount_minor"] == 1_000
    assert nxt["amount_due"]["amount_minor"] == 11_000
    svc.clock.current = datetime(2026, 4, 15, tzinfo=UTC)
    late = await svc.invoice(c["id"], issue_date="2026-03-01", due_date="2026-03-10")
    st = await svc.get(f"/v1/clients/{c['id']}/statement")
    assert st["as_of"] == "2026-04-15"
    assert [i["invoice_id"] for i in st["open_items"]] == [late["id"], nxt["id"]]
    assert st["balances"] == [{"amount_minor": 23_000, "currency": "EUR"}]
    assert st["overdue"] == [{"amount_minor": 23_000, "currency": "EUR"}]
    assert st["oldest_overdue"]["invoice_id"] == late["id"]
    assert st["oldest_overdue"]["days_overdue"] == 36
    assert st["unapplied_credit"] == [{"amount_minor": 700, "currency": "USD"}]


async def test_void_of_paid_invoice_refused(svc: Svc) -> None:
    c = await svc.client()
    inv = await svc.invoice(c["id"])
    await pay(svc, c["id"], 100, "pay_part")
    r = await svc.http.post(f"/v1/invoices/{inv['id']}/void", json={})
    assert r.status_code == 409
    assert r.json()["field"] == "invoice_id"
    assert (await svc.get(f"/v1/invoices/{inv['id']}"))["status"] == "open"


async def test_auth_401_without_key_403_without_scope(svc: Svc) -> None:
    r = await svc.http.get("/v1/invoices", headers={"Authorization": ""})
    assert r.status_code == 401
    r = await svc.http.get("/v1/reports/aging", headers={"Authorization": f"Bearer {svc.keys['write']}"})
    assert r.status_code == 403
    c = await svc.client()
    r = await svc.http.post(
        "/v1/invoices",
        json=invoice_body(c["id"]),
        headers={"Authorization": "", "X-API-Key": svc.keys["read"]},
    )
    assert r.status_code == 403
    r = await svc.http.get("/v1/reports/aging", headers={"Authorization": f"Bearer {svc.keys['read']}"})
    assert r.status_code == 200


async def test_cursor_with_a_naive_or_odd_position_is_handled(svc: Svc) -> None:
    from ar_web import encode_cursor

    for position in (["2026-03-01T12:00:00", "x"], ["not a date", "x"], {"a": 1}, "abc", [None, None]):
        for path in ("/v1/invoices", "/v1/clients"):
            r = await svc.http.get(path, params={"cursor": encode_cursor(position)})
            assert r.status_code in (200, 400), (path, position, r.text)
