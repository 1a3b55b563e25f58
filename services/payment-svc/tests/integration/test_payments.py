"""Manual payments (wire, check, cash): Idempotency-Key, scopes, bad input, listing with cursors."""

from __future__ import annotations

from typing import Any

from ar_events.events import PaymentMethod, PaymentReceived


def _body(**over: Any) -> dict[str, Any]:
    return {
        "client_id": "cli_W",
        "amount": {"amount_minor": 99_00, "currency": "USD"},
        "method": "wire",
        "reference": "WIRE-123",
        "invoice_ids": ["inv_1"],
        **over,
    }


async def test_manual_payment_is_idempotent_and_emits_once(svc: Any, h: Any) -> None:
    headers = {**h.auth(h.WRITE_KEY), "Idempotency-Key": "k-1"}
    first = await svc.client.post("/v1/payments", json=_body(), headers=headers)
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/v1/payments/{first.json()['id']}"
    again = await svc.client.post("/v1/payments", json=_body(), headers=headers)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    other = await svc.client.post("/v1/payments", json=_body(reference="WIRE-999"), headers=headers)
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"
    [event] = await svc.outbox()
    assert isinstance(event.data, PaymentReceived)
    assert event.data.method is PaymentMethod.TRANSFER and event.data.processor == "manual"
    assert event.data.reference == "WIRE-123" and event.data.amount.amount_minor == 9_900


async def test_manual_payment_bad_input_is_422_and_stores_nothing(svc: Any, h: Any) -> None:
    cases = [
        (_body(amount={"amount_minor": 0, "currency": "USD"}), "amount.amount_minor"),
        (_body(amount={"amount_minor": -10, "currency": "USD"}), "amount.amount_minor"),
        (_body(amount={"amount_minor": 10, "currency": "XYZ"}), "amount.currency"),
        (_body(amount={"amount_minor": 10.5, "currency": "USD"}), "amount.amount_minor"),
        (_body(amount={"amount_minor": "10", "currency": "USD"}), "amount.amount_minor"),
        (_body(amount={"amount_minor": True, "currency": "USD"}), "amount.amount_minor"),
        (_body(received_at=1767225600), "received_at"),
        (_body(method="bitcoin"), "method"),
        (_body(client_id=""), "client_id"),
        (_body(received_at="2026-01-01T00:00:00"), "received_at"),
        (_body(note="cash\u0000box"), "note"),  # PostgreSQL text cannot hold NUL
        (_body(reference="WIRE\u0007123"), "reference"),
    ]
    for body, field in cases:
        r = await svc.client.post("/v1/payments", json=body, headers=h.auth(h.WRITE_KEY))
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["field"] == field, r.json()
    not_json = await svc.client.post(
        "/v1/payments", content=b"{nope", headers={**h.auth(h.WRITE_KEY), "content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert await svc.count("payment") == 0 and await svc.outbox() == []


async def test_manual_payment_needs_the_write_scope(svc: Any, h: Any) -> None:
    assert (await svc.client.post("/v1/payments", json=_body())).status_code == 401
    assert (
        await svc.client.post("/v1/payments", json=_body(), headers=h.auth(h.READ_KEY))
    ).status_code == 403
    assert await svc.count("payment") == 0


async def test_list_payments_pages_with_a_cursor(svc: Any, h: Any) -> None:
    ids = []
    for i in range(5):
        r = await svc.client.post(
            "/v1/payments", json=_body(reference=f"CHK-{i}", method="check"), headers=h.auth(h.WRITE_KEY)
        )
        ids.append(r.json()["id"])
    await svc.client.post("/v1/payments", json=_body(client_id="cli_other"), headers=h.auth(h.WRITE_KEY))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"client_id": "cli_W", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await svc.client.get("/v1/payments", params=params, headers=h.auth(h.READ_KEY))).json()
        seen.extend(p["id"] for p in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    bad = await svc.client.get("/v1/payments", params={"cursor": "!!!"}, headers=h.auth(h.READ_KEY))
    assert bad.status_code == 400 and bad.json()["field"] == "cursor"
    missing = await svc.client.get("/v1/payments/pay_nope", headers=h.auth(h.READ_KEY))
    assert missing.status_code == 404
