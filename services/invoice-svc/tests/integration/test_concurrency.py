"""Concurrent requests on one client: credit is consumed once, a number is taken once (PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio

from .conftest import Svc, invoice_body
from .test_api import pay


async def test_concurrent_invoices_share_the_credit_exactly_once(svc: Svc) -> None:
    c = await svc.client()
    await pay(svc, c["id"], 10_000, "p_credit")  # no invoice yet: 10,000 of credit
    bodies = [invoice_body(c["id"], lines=[{"description": "x", "quantity": 1,
                                            "unit_price": {"amount_minor": 3_000, "currency": "EUR"}}])
              for _ in range(5)]  # fmt: skip
    responses = await asyncio.gather(*(svc.http.post("/v1/invoices", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [201] * 5
    applied = sorted(r.json()["credit_applied"]["amount_minor"] for r in responses)
    assert sum(applied) == 10_000
    assert applied == [0, 1_000, 3_000, 3_000, 3_000]
    st = await svc.get(f"/v1/clients/{c['id']}/statement")
    assert st["unapplied_credit"] == []
    assert st["balances"] == [{"amount_minor": 5 * 3_000 - 10_000, "currency": "EUR"}]


async def test_concurrent_duplicate_numbers_one_wins_the_rest_409(svc: Svc) -> None:
    c = await svc.client()
    body = invoice_body(c["id"], number="SAME-1")
    responses = await asyncio.gather(*(svc.http.post("/v1/invoices", json=body) for _ in range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 409, 409, 409]
    assert all(r.json()["field"] == "number" for r in responses if r.status_code == 409)
    assert len((await svc.get("/v1/invoices", client_id=c["id"]))["items"]) == 1
