"""The webhook path on PostgreSQL and SQLite: verify, record, dedupe, park, emit through the outbox."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import stripe
from prometheus_client import REGISTRY

from ar_events.events import (
    ChargebackClosed,
    ChargebackOpened,
    ChargebackOutcome,
    FailureKind,
    PaymentFailed,
    PaymentMethod,
    PaymentReceived,
    PaymentRefunded,
)


def _rejected(scheme: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("payment_webhooks_rejected_total", {"scheme": scheme, "reason": reason})
        or 0.0
    )


async def test_signed_stripe_payment_is_recorded_and_queued_once(svc: Any, h: Any) -> None:
    body = h.stripe_event(obj=h.payment_intent(pi="pi_A1", amount=12_500))
    header = f"t={int(svc.clock.now().timestamp())},v1=" + stripe.WebhookSignature._compute_signature(
        f"{int(svc.clock.now().timestamp())}.{body.decode()}", h.STRIPE_SECRET
    )
    # The stripe package agrees this request is authentic before we send it.
    stripe.WebhookSignature.verify_header(body.decode(), header, h.STRIPE_SECRET, tolerance=300)
    r = await svc.stripe(body, header=header)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processed"
    events = await svc.outbox()
    assert len(events) == 1
    data = events[0].data
    assert isinstance(data, PaymentReceived)
    assert data.client_id == "cli_1" and data.amount.amount_minor == 12_500 and data.amount.currency == "EUR"
    assert data.method is PaymentMethod.CARD and data.processor == "stripe" and data.reference == "pi_A1"
    assert data.invoice_ids == ("inv_1", "inv_2")
    assert events[0].subject == "cli_1"
    assert await svc.count("webhook_event") == 1
    listed = await svc.client.get("/v1/payments", params={"client_id": "cli_1"}, headers=h.auth(h.READ_KEY))
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["items"]] == [data.payment_id]
    one = await svc.client.get(f"/v1/payments/{data.payment_id}", headers=h.auth(h.READ_KEY))
    assert one.json()["reference"] == "pi_A1"


async def test_duplicate_event_id_answers_200_and_changes_nothing(svc: Any, h: Any) -> None:
    body = h.stripe_event(event_id="evt_dup_1")
    assert (await svc.stripe(body)).json()["status"] == "processed"
    again = await svc.stripe(body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert await svc.count("payment") == 1
    assert await svc.count("webhook_event") == 1
    assert len(await svc.outbox()) == 1


async def test_same_payment_under_a_new_event_id_is_not_counted_twice(svc: Any, h: Any) -> None:
    obj = h.payment_intent(pi="pi_same")
    assert (await svc.stripe(h.stripe_event(obj=obj))).json()["status"] == "processed"
    second = await svc.stripe(h.stripe_event(obj=obj))
    assert second.json()["status"] == "duplicate"
    assert sorted(await svc.outcomes()) == ["duplicate", "processed"]
    assert await svc.count("payment") == 1 and len(await svc.outbox()) == 1


async def test_fifty_concurrent_identical_webhooks_make_one_payment(svc: Any, h: Any) -> None:
    body = h.stripe_event(event_id="evt_storm")
    responses = await asyncio.gather(*(svc.stripe(body) for _ in range(50)))
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses.count("processed") == 1 and statuses.count("duplicate") == 49
    assert await svc.count("payment") == 1
    assert await svc.count("webhook_event") == 1
    assert [type(e.data) for e in await svc.outbox()] == [PaymentReceived]


async def test_forged_signature_is_401_and_stores_nothing(svc: Any, h: Any) -> None:
    before = _rejected("stripe", "bad_signature")
    r = await svc.stripe(h.stripe_event(), secret="whsec_not_the_right_secret_0000")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "bad_signature"
    assert await svc.count("webhook_event") == 0 and await svc.count("payment") == 0
    assert _rejected("stripe", "bad_signature") == before + 1


async def test_tampered_body_is_refused(svc: Any, h: Any) -> None:
    body = h.stripe_event(obj=h.payment_intent(amount=100))
    ts = int(svc.clock.now().timestamp())
    from payment_svc.domain.signatures import sign_stripe

    header = sign_stripe(body, h.STRIPE_SECRET, ts)
    r = await svc.stripe(body.replace(b'"amount":100', b'"amount":999'), header=header)
    assert r.status_code == 401 and await svc.count("payment") == 0


async def test_stale_and_future_timestamps_are_refused(svc: Any, h: Any) -> None:
    now = int(svc.clock.now().timestamp())
    stale = await svc.stripe(h.stripe_event(), ts=now - 301)
    future = await svc.stripe(h.stripe_event(), ts=now + 301)
    assert (stale.status_code, stale.json()["reason"]) == (401, "stale_timestamp")
    assert (future.status_code, future.json()["reason"]) == (401, "future_timestamp")
    assert await svc.count("webhook_event") == 0


async def test_replay_after_the_window_is_refused_and_inside_it_deduplicated(svc: Any, h: Any) -> None:
    body = h.stripe_event()
    ts = int(svc.clock.now().timestamp())
    assert (await svc.stripe(body, ts=ts)).json()["status"] == "processed"
    from datetime import timedelta

    svc.clock.advance(timedelta(seconds=200))
    assert (await svc.stripe(body, ts=ts)).json()["status"] == "duplicate"
    svc.clock.advance(timedelta(seconds=200))
    assert (await svc.stripe(body, ts=ts)).status_code == 401
    assert await svc.count("payment") == 1


async def test_malformed_headers_and_bodies_are_400_problems(svc: Any, h: Any) -> None:
    missing = await svc.client.post("/v1/webhooks/stripe", content=h.stripe_event())
    assert missing.status_code == 400 and missing.json()["reason"] == "missing_header"
    garbage = await svc.stripe(h.stripe_event(), header="nonsense")
    assert garbage.status_code == 400
    not_json = await svc.stripe(b"this is not json")
    assert not_json.status_code == 400 and not_json.json()["field"] == "body"
    zero = await svc.stripe(h.stripe_event(obj=h.payment_intent(amount=0)))
    assert zero.status_code == 400 and zero.json()["field"] == "data.object.amount"
    negative = await svc.stripe(h.stripe_event(obj=h.payment_intent(amount=-5)))
    assert negative.status_code == 400
    currency = await svc.stripe(h.stripe_event(obj=h.payment_intent(currency="xyz")))
    assert currency.status_code == 400 and currency.json()["field"] == "data.object.currency"
    for r in (missing, garbage, not_json, zero, negative, currency):
        assert r.headers["content-type"] == "application/problem+json"
    assert await svc.count("webhook_event") == 0 and await svc.count("payment") == 0


async def test_body_over_one_mib_is_413(svc: Any, h: Any) -> None:
    body = b'{"pad":"' + b"x" * (1024 * 1024) + b'"}'
    r = await svc.stripe(body)
    assert r.status_code == 413
    assert await svc.count("webhook_event") == 0


async def test_unknown_event_type_is_acknowledged_recorded_and_ignored(svc: Any, h: Any) -> None:
    r = await svc.stripe(h.stripe_event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert await svc.count("webhook_event") == 1
    assert await svc.count("payment") == 0 and await svc.outbox() == []
    assert await svc.outcomes() == ["ignored"]


async def test_unknown_account_is_404(svc: Any, h: Any) -> None:
    r = await svc.standard(h.standard_body(), account="nobody")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    stripe_other = await svc.stripe(h.stripe_event(), path="/v1/webhooks/stripe/nobody")
    assert stripe_other.status_code == 404


async def test_standard_webhook_signed_by_the_standardwebhooks_package(svc: Any, h: Any) -> None:
    body = h.standard_body(payment_reference="TRX-1", amount_minor=50_000, invoice_ids=["inv_7"])
    r = await svc.standard(body, msg_id="msg_std_1")
    assert r.status_code == 200 and r.json() == {
        "status": "processed",
        "event_id": "msg_std_1",
        "event_type": "payment.received",
    }
    [event] = await svc.outbox()
    assert isinstance(event.data, PaymentReceived)
    assert event.data.method is PaymentMethod.TRANSFER and event.data.processor == "standard"
    assert event.data.invoice_ids == ("inv_7",) and event.data.client_id == "cli_9"
    assert (await svc.standard(body, msg_id="msg_std_1")).json()["status"] == "duplicate"
    wrong = await svc.standard(h.standard_body(), secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVg==")
    assert wrong.status_code == 401


async def test_standard_failed_and_returned(svc: Any, h: Any) -> None:
    ref = "DD-77"
    await svc.standard(h.standard_body(payment_reference=ref, method="direct_debit"))
    failed = await svc.standard(
        h.standard_body("payment.failed", payment_reference="DD-78", failure_code="AC04", failure_kind="hard")
    )
    assert failed.json()["status"] == "processed"
    returned = await svc.standard(
        h.standard_body("payment.returned", payment_reference=ref, refund_reference="RET-1", reason="MD06")
    )
    assert returned.json()["status"] == "processed"
    received, fail, refund = (e.data for e in await svc.outbox())
    assert (
        isinstance(fail, PaymentFailed) and fail.failure_kind is FailureKind.HARD and not fail.retry_possible
    )
    assert isinstance(refund, PaymentRefunded) and refund.payment_id == received.payment_id
    assert refund.reason == "MD06" and refund.amount.amount_minor == 50_000


async def test_stripe_failure_refund_and_dispute_lifecycle(svc: Any, h: Any) -> None:
    pi = h.payment_intent(pi="pi_L1", amount=20_000)
    failed_pi = {
        **pi,
        "status": "requires_payment_method",
        "last_payment_error": {"decline_code": "insufficient_funds"},
    }
    assert (await svc.stripe(h.stripe_event("payment_intent.payment_failed", failed_pi))).status_code == 200
    assert (await svc.stripe(h.stripe_event(obj=pi))).status_code == 200
    charge = {
        "id": "ch_L1",
        "object": "charge",
        "amount": 20_000,
        "amount_refunded": 5_000,
        "currency": "eur",
        "payment_intent": "pi_L1",
        "metadata": {},
        "refunds": {"data": [{"id": "re_1", "amount": 5_000, "currency": "eur", "status": "succeeded"}]},
    }
    assert (await svc.stripe(h.stripe_event("charge.refunded", charge))).json()["status"] == "processed"
    # The same refund again, in a later charge.refunded listing it beside a new one: only the new one counts.
    charge2 = {**charge, "amount_refunded": 8_000}
    charge2["refunds"] = {
        "data": [charge["refunds"]["data"][0], {"id": "re_2", "amount": 3_000, "currency": "eur"}]
    }
    assert (await svc.stripe(h.stripe_event("charge.refunded", charge2))).json()["status"] == "processed"
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "amount": 12_000,
        "currency": "eur",
        "charge": "ch_L1",
        "payment_intent": "pi_L1",
        "reason": "fraudulent",
        "status": "needs_response",
    }
    assert (await svc.stripe(h.stripe_event("charge.dispute.created", dispute))).status_code == 200
    closed = {**dispute, "status": "lost"}
    assert (await svc.stripe(h.stripe_event("charge.dispute.closed", closed))).status_code == 200
    assert (await svc.stripe(h.stripe_event("charge.dispute.closed", closed))).json()["status"] == "duplicate"
    types = [type(e.data) for e in await svc.outbox()]
    assert types == [
        PaymentFailed,
        PaymentReceived,
        PaymentRefunded,
        PaymentRefunded,
        ChargebackOpened,
        ChargebackClosed,
    ]
    events = [e.data for e in await svc.outbox()]
    fail, received, r1, r2, opened, closed_ev = events
    assert (
        fail.failure_kind is FailureKind.SOFT
        and fail.retry_possible
        and fail.decline_code == "insufficient_funds"
    )
    assert fail.payment_id == received.payment_id
    assert [r1.amount.amount_minor, r2.amount.amount_minor] == [5_000, 3_000]
    assert {r1.payment_id, r2.payment_id, opened.payment_id, closed_ev.payment_id} == {received.payment_id}
    assert closed_ev.outcome is ChargebackOutcome.CLIENT_WON and opened.reason == "fraudulent"
    assert all(e.client_id == "cli_1" for e in events)


async def test_unresolvable_client_is_parked_then_assigned_and_emitted(svc: Any, h: Any) -> None:
    obj = h.payment_intent(pi="pi_P1", metadata={}, customer="cus_P")
    r = await svc.stripe(h.stripe_event(obj=obj))
    assert r.status_code == 200 and r.json()["status"] == "parked"
    assert await svc.outbox() == [] and await svc.outcomes() == ["parked"]
    parked = (await svc.client.get("/v1/parked", headers=h.auth(h.READ_KEY))).json()["items"]
    assert len(parked) == 1 and parked[0]["customer_id"] == "cus_P"
    assert parked[0]["event_type"] == PaymentReceived.TYPE and "client_id" not in parked[0]["payload"]
    pid = parked[0]["id"]
    denied = await svc.client.post(
        f"/v1/parked/{pid}/assign", json={"client_id": "cli_P"}, headers=h.auth(h.WRITE_KEY)
    )
    assert denied.status_code == 403
    ok = await svc.client.post(f"/v1/parked/{pid}/assign", json={"client_id": "cli_P"}, headers=h.auth())
    assert ok.status_code == 200, ok.text
    again = await svc.client.post(f"/v1/parked/{pid}/assign", json={"client_id": "cli_P"}, headers=h.auth())
    assert again.status_code == 409
    [event] = await svc.outbox()
    assert isinstance(event.data, PaymentReceived) and event.data.client_id == "cli_P"
    assert event.data.reference == "pi_P1"
    assert (await svc.client.get("/v1/parked", headers=h.auth())).json()["items"] == []
    # The customer is remembered: the next payment from cus_P resolves by itself.
    nxt = await svc.stripe(h.stripe_event(obj=h.payment_intent(metadata={}, customer="cus_P")))
    assert nxt.json()["status"] == "processed"
    assert (await svc.outbox())[-1].data.client_id == "cli_P"


async def test_customer_mapping_set_by_admin_api_resolves_the_client(svc: Any, h: Any) -> None:
    put = await svc.client.put("/v1/customers/stripe/cus_M", json={"client_id": "cli_M"}, headers=h.auth())
    assert put.status_code == 200
    r = await svc.stripe(
        h.stripe_event(obj=h.payment_intent(metadata={"invoice_id": "inv_9"}, customer="cus_M"))
    )
    assert r.json()["status"] == "processed"
    [event] = await svc.outbox()
    assert event.data.client_id == "cli_M" and event.data.invoice_ids == ("inv_9",)


async def test_secret_rotation_old_secret_refused_after_removal(svc: Any, h: Any) -> None:
    new_secret = "whsec_rotated_secret_abcdefghijklmnop"
    added = await svc.client.post(
        "/v1/accounts/stripe/secrets", json={"secret": new_secret}, headers=h.auth()
    )
    assert added.status_code == 201 and new_secret not in added.text
    assert (await svc.stripe(h.stripe_event(), secret=new_secret)).status_code == 200
    assert (await svc.stripe(h.stripe_event(), secret=h.STRIPE_SECRET)).status_code == 200
    # The settings-provided secret cannot be removed through the API...
    accounts = (await svc.client.get("/v1/accounts", headers=h.auth())).json()
    assert h.STRIPE_SECRET not in json.dumps(accounts) and new_secret not in json.dumps(accounts)
    # ...so rotate the standard account, whose secrets live in the database.
    std_new = "whsec_" + "bmV3LXN0YW5kYXJkLXNlY3JldC0wMTIzNDU2Nzg5"
    await svc.client.post("/v1/accounts/standard/secrets", json={"secret": std_new}, headers=h.auth())
    std = next(a for a in accounts if a["name"] == "standard")
    old_id = std["secrets"][0]["id"]
    removed = await svc.client.delete(f"/v1/accounts/standard/secrets/{old_id}", headers=h.auth())
    assert removed.status_code == 204
    refused = await svc.standard(h.standard_body(), secret=h.STANDARD_SECRET)
    assert refused.status_code == 401 and refused.json()["reason"] == "bad_signature"
    assert (await svc.standard(h.standard_body(), secret=std_new)).status_code == 200
    stripe_sec = next(a for a in accounts if a["name"] == "stripe")
    new_id = next(s["id"] for s in stripe_sec["secrets"] if s["source"] == "api")
    assert (
        await svc.client.delete(f"/v1/accounts/stripe/secrets/{new_id}", headers=h.auth())
    ).status_code == 204
    assert (await svc.stripe(h.stripe_event(), secret=new_secret)).status_code == 401


async def test_admin_api_needs_the_admin_scope_and_validates_secrets(svc: Any, h: Any) -> None:
    no = await svc.client.get("/v1/accounts", headers=h.auth(h.WRITE_KEY))
    assert no.status_code == 403
    anon = await svc.client.post("/v1/accounts", json={"name": "bank", "kind": "standard"})
    assert anon.status_code == 401
    bad = await svc.client.post(
        "/v1/accounts",
        json={"name": "bank", "kind": "standard", "secret": "whsec_!!notbase64"},
        headers=h.auth(),
    )
    assert bad.status_code == 422 and bad.json()["field"].endswith("secret") and "notbase64" not in bad.text
    ok = await svc.client.post(
        "/v1/accounts",
        json={"name": "bank", "kind": "standard", "secret": h.STANDARD_SECRET},
        headers=h.auth(),
    )
    assert ok.status_code == 201 and ok.json()["webhook_path"] == "/v1/webhooks/standard/bank"
    assert h.STANDARD_SECRET not in ok.text
    assert (await svc.standard(h.standard_body(), account="bank")).status_code == 200
