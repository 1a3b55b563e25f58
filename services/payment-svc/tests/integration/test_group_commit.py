"""Group commit: concurrent webhooks share transactions, yet each request gets its own answer and events."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from payment_svc.domain import stripe
from payment_svc.domain.signatures import sign_stripe
from payment_svc.group_commit import GroupCommit
from payment_svc.handlers import VerifiedWebhook, WebhookResult, record_webhook
from payment_svc.repository import UnitOfWork
from payment_svc.settings import AccountKind

pytestmark = pytest.mark.integration


async def test_concurrent_webhooks_share_transactions_and_keep_their_own_answers_and_ids(
    svc: Any, h: Any
) -> None:
    bodies = [h.stripe_event(obj=h.payment_intent(metadata={"client_id": f"cli_{i}"})) for i in range(40)]
    repeated = bodies[7]
    sends = [(body, f"corr-{i}") for i, body in enumerate(bodies)] + [(repeated, "corr-again")] * 10

    async def send(body: bytes, correlation: str) -> Any:
        stamp = int(svc.clock.now().timestamp())
        return await svc.client.post(
            "/v1/webhooks/stripe",
            content=body,
            headers={
                "Stripe-Signature": sign_stripe(body, h.STRIPE_SECRET, stamp),
                "Content-Type": "application/json",
                "X-Correlation-Id": correlation,
            },
        )

    responses = await asyncio.gather(*(send(b, c) for b, c in sends))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    statuses = [r.json()["status"] for r in responses]
    assert statuses.count("processed") == 40 and statuses.count("duplicate") == 10
    assert await svc.count("payment") == 40 and await svc.count("webhook_event") == 40
    events = await svc.outbox()
    # Each event carries the correlation id of the request that brought it, not its batch-mate's.
    by_client = {e.subject: e.correlationid for e in events}
    assert len(events) == 40
    assert by_client["cli_3"] == "corr-3" and by_client["cli_39"] == "corr-39"
    assert by_client["cli_7"] in {"corr-7", "corr-again"}  # whichever copy came first
    grouped = svc.container.deps.group_commit
    assert grouped is not None and max(grouped.batch_sizes) > 1, grouped.batch_sizes


async def test_a_job_that_fails_fails_only_its_own_request(svc: Any, h: Any) -> None:
    deps = svc.container.deps
    poison_event = f"evt_{uuid.uuid4().hex}"

    async def apply(uow: UnitOfWork, job: VerifiedWebhook) -> WebhookResult:
        result = await record_webhook(uow, job)
        if job.event.event_id == poison_event:
            raise RuntimeError("this one breaks after writing")
        return result

    grouped: GroupCommit[VerifiedWebhook, WebhookResult] = GroupCommit(deps.uow, apply, now=deps.clock.now)
    account = await deps.secrets.get("stripe")
    assert account is not None and account.kind is AccountKind.STRIPE

    def job(body: bytes) -> VerifiedWebhook:
        return VerifiedWebhook("stripe", stripe.parse(body), body, {}, deps.clock.now(), None)

    bodies = [h.stripe_event(obj=h.payment_intent(metadata={"client_id": f"cli_{i}"})) for i in range(20)]
    bodies[5] = h.stripe_event(event_id=poison_event)
    outcomes = await asyncio.gather(*(grouped.submit(job(b)) for b in bodies), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], RuntimeError)
    assert isinstance(outcomes[5], RuntimeError)
    assert all(
        isinstance(o, WebhookResult) and o.outcome == "processed" for i, o in enumerate(outcomes) if i != 5
    )
    # The failed job left nothing; the 19 others are stored with their events exactly once.
    assert await svc.count("webhook_event") == 19 and await svc.count("payment") == 19
    assert len(await svc.outbox()) == 19
    assert max(grouped.batch_sizes) == 1  # after the batch failed, every job ran in its own transaction
