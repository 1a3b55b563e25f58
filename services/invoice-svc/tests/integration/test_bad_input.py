"""Every rejection: problem+json, a 4xx with the field and the reason, and nothing written (PostgreSQL and SQLite)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from invoice_svc.repository import metadata

from .conftest import Svc, client_body, invoice_body
from .test_api import pay

COUNTED = ("client", "invoice", "invoice_line", "credit_note", "dispute", "ledger_entry", "allocation", "outbox",
           "idempotency_key")  # fmt: skip


async def counts(svc: Svc) -> dict[str, int]:
    async with svc.runtime.sessionmaker() as s:
        return {t: int((await s.execute(select(func.count()).select_from(metadata.tables[t]))).scalar_one())
                for t in COUNTED}  # fmt: skip


async def assert_refused(
    svc: Svc, method: str, path: str, status: int, field: str | None, **kw: Any
) -> dict[str, Any]:
    before = await counts(svc)
    kw.setdefault("headers", {})["Idempotency-Key"] = f"bad-{uuid.uuid4().hex}"
    r = await svc.http.request(method, path, **kw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field, body
    assert body.get("detail"), body
    assert await counts(svc) == before
    return dict(body)


def line(qty: int = 1, price: int = 100, currency: str = "EUR") -> dict[str, Any]:
    return {"description": "x", "quantity": qty, "unit_price": {"amount_minor": price, "currency": currency}}


BAD_INVOICES: list[tuple[dict[str, Any], str]] = [
    ({"lines": [line(qty=0)]}, "lines[0].quantity"),
    ({"lines": [line(), line(qty=-3)]}, "lines[1].quantity"),
    ({"lines": [line(price=0)]}, "lines[0].unit_price.amount_minor"),
    ({"lines": [line(price=-100)]}, "lines[0].unit_price.amount_minor"),
    ({"currency": "XXY"}, "currency"),
    ({"currency": "eur"}, "currency"),
    ({"lines": [line(currency="USD")]}, "lines[0].unit_price.currency"),
    ({"lines": [line(currency="ZZZ")]}, "lines[0].unit_price.currency"),
    ({"issue_date": "2026-03-10", "due_date": "2026-03-09"}, "due_date"),
    ({"lines": []}, "lines"),
    ({"lines": [line(qty=1_000_000_000, price=10**15)]}, "lines"),
    # JSON's own types only: lax coercions a billing API must not make
    ({"lines": [{**line(), "quantity": "2"}]}, "lines[0].quantity"),
    ({"lines": [{**line(), "quantity": 2.5}]}, "lines[0].quantity"),
    ({"lines": [{**line(), "tax_rate_bp": True}]}, "lines[0].tax_rate_bp"),
    (
        {"lines": [{**line(), "unit_price": {"amount_minor": "100", "currency": "EUR"}}]},
        "lines[0].unit_price.amount_minor",
    ),
    (
        {"lines": [{**line(), "unit_price": {"amount_minor": 99.5, "currency": "EUR"}}]},
        "lines[0].unit_price.amount_minor",
    ),
    ({"issue_date": 0}, "issue_date"),
    ({"due_date": "2026-03-09T00:00:00"}, "due_date"),
]


async def test_bad_invoice_is_422(svc: Svc) -> None:
    c = await svc.client()
    for overrides, field in BAD_INVOICES:
        await assert_refused(svc, "POST", "/v1/invoices", 422, field, json=invoice_body(c["id"], **overrides))


async def test_unknown_client_is_422(svc: Svc) -> None:
    await assert_refused(svc, "POST", "/v1/invoices", 422, "client_id", json=invoice_body("cli_nope"))


async def test_duplicate_invoice_number_is_409(svc: Svc) -> None:
    c = await svc.client()
    await svc.invoice(c["id"], number="F-1")
    await assert_refused(svc, "POST", "/v1/invoices", 409, "number", json=invoice_body(c["id"], number="F-1"))
    # the same number for another client is fine
    other = await svc.client()
    await svc.invoice(other["id"], number="F-1")


async def test_void_of_paid_invoice_is_409(svc: Svc) -> None:
    c = await svc.client()
    inv = await svc.invoice(c["id"])
    await pay(svc, c["id"], inv["total"]["amount_minor"], "pay_full")
    await assert_refused(svc, "POST", f"/v1/invoices/{inv['id']}/void", 409, "invoice_id", json={})


async def test_credit_note_larger_than_what_remains_is_422(svc: Svc) -> None:
    c = await svc.client()
    inv = await svc.invoice(c["id"])  # 12,000
    await pay(svc, c["id"], 5_000, "pay_part")
    body = {"amount": {"amount_minor": 7_001, "currency": "EUR"}}
    await assert_refused(
        svc, "POST", f"/v1/invoices/{inv['id']}/credit-notes", 422, "amount.amount_minor", json=body
    )
    body = {"amount": {"amount_minor": 0, "currency": "EUR"}}
    await assert_refused(
        svc, "POST", f"/v1/invoices/{inv['id']}/credit-notes", 422, "amount.amount_minor", json=body
    )
    body = {"amount": {"amount_minor": 10, "currency": "USD"}}
    await assert_refused(
        svc, "POST", f"/v1/invoices/{inv['id']}/credit-notes", 422, "amount.currency", json=body
    )
    body = {"amount": {"amount_minor": 10, "currency": "EUR"}}
    await assert_refused(svc, "POST", "/v1/invoices/inv_missing/credit-notes", 404, "invoice_id", json=body)


async def test_body_over_one_mib_is_413(svc: Svc) -> None:
    c = await svc.client()
    body = invoice_body(c["id"], lines=[{**line(), "description": "x" * 400}] * 3000)
    await assert_refused(svc, "POST", "/v1/invoices", 413, None, json=body)


async def test_malformed_json_is_400(svc: Svc) -> None:
    body = await assert_refused(
        svc,
        "POST",
        "/v1/invoices",
        400,
        "body",
        content=b'{"client_id": "x", ',
        headers={"Content-Type": "application/json"},
    )
    assert "JSON" in body["title"]


async def test_dispute_on_paid_invoice_is_409(svc: Svc) -> None:
    c = await svc.client()
    inv = await svc.invoice(c["id"])
    await pay(svc, c["id"], inv["total"]["amount_minor"], "pay_full")
    await assert_refused(svc, "POST", f"/v1/invoices/{inv['id']}/disputes", 409, "invoice_id",
                         json={"reason": "billing_error"})  # fmt: skip
    await assert_refused(
        svc, "POST", f"/v1/invoices/{inv['id']}/disputes", 422, "reason", json={"reason": "angry"}
    )


async def test_resolution_of_unknown_dispute_is_404(svc: Svc) -> None:
    await assert_refused(
        svc, "POST", "/v1/disputes/dsp_nope/resolve", 404, "dispute_id", json={"outcome": "upheld"}
    )


async def test_rejected_dispute_with_credit_note_is_422(svc: Svc) -> None:
    c = await svc.client()
    inv = await svc.invoice(c["id"])
    d = (await svc.http.post(f"/v1/invoices/{inv['id']}/disputes", json={"reason": "technical"})).json()
    body = {"outcome": "rejected", "credit_note": {"amount": {"amount_minor": 5, "currency": "EUR"}}}
    await assert_refused(svc, "POST", f"/v1/disputes/{d['id']}/resolve", 422, "credit_note", json=body)
    body = {"outcome": "upheld", "credit_note": {"amount": {"amount_minor": 999_999, "currency": "EUR"}}}
    await assert_refused(
        svc, "POST", f"/v1/disputes/{d['id']}/resolve", 422, "credit_note.amount_minor", json=body
    )


BAD_CLIENTS: list[tuple[dict[str, Any], str]] = [
    ({"contacts": [{"name": "T", "email": "t@example.com", "role": "technical"}]}, "contacts"),
    ({"contacts": []}, "contacts"),
    ({"contacts": [{"name": "T", "email": "not-an-email", "role": "billing"}]}, "contacts[0].email"),
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ({"country": "France"}, "country"),
    ({"payment_terms_days": -1}, "payment_terms_days"),
    ({"credit_limit": {"amount_minor": -5, "currency": "EUR"}}, "credit_limit"),
    ({"name": ""}, "name"),
]


async def test_bad_client_is_422(svc: Svc) -> None:
    for overrides, field in BAD_CLIENTS:
        await assert_refused(svc, "POST", "/v1/clients", 422, field, json=client_body(**overrides))


async def test_bad_client_update_is_refused(svc: Svc) -> None:
    c = await svc.client()
    other = await svc.client()
    await assert_refused(svc, "PATCH", f"/v1/clients/{c['id']}", 409, "external_id",
                         json={"external_id": other["external_id"]})  # fmt: skip
    await assert_refused(svc, "PATCH", f"/v1/clients/{c['id']}", 422, "contacts",
                         json={"contacts": [{"name": "T", "email": "t@example.com", "role": "other"}]})  # fmt: skip
    await assert_refused(svc, "PATCH", "/v1/clients/cli_nope", 404, "client_id", json={"name": "x"})


async def test_nul_character_is_422_and_writes_nothing(pg_svc: Svc) -> None:
    # PostgreSQL text cannot hold NUL: a 422 problem (not a 500 from the driver), and the transaction rolled back.
    c = await pg_svc.client()
    await assert_refused(pg_svc, "POST", "/v1/clients", 422, None, json=client_body(name="bad\x00name"))
    body = invoice_body(c["id"], lines=[line() | {"description": "x\x00"}])
    await assert_refused(pg_svc, "POST", "/v1/invoices", 422, None, json=body)
    await assert_refused(pg_svc, "GET", "/v1/invoices", 422, None, params={"client_id": "cli\x00"})
    await assert_refused(pg_svc, "GET", "/v1/clients/cli%00x", 422, None)


async def test_a_date_in_the_query_must_be_an_iso_date(svc: Svc) -> None:
    c = await svc.client()
    for path in (
        f"/v1/clients/{c['id']}/statement?as_of=0",
        "/v1/reports/aging?as_of=20260301",
        "/v1/invoices?overdue_as_of=1",
        "/v1/reports/payment-delay?since=0",
    ):
        r = await svc.http.get(path)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["field"] in ("as_of", "overdue_as_of", "since"), r.json()
        assert "YYYY-MM-DD" in r.json()["detail"], r.json()
    assert (await svc.http.get("/v1/reports/aging?as_of=2026-03-01")).status_code == 200


async def test_method_not_allowed_lists_every_method_of_the_path(svc: Svc) -> None:
    r = await svc.http.delete("/v1/invoices")
    assert r.status_code == 405
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["allow"] == "GET, POST"
