"""Kill -9 between accepting a webhook and publishing it: after a restart the payment is emitted once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ar_events.broker import free_port
from ar_events.db import make_engine
from ar_events.events import PaymentReceived
from ar_events.topics import Topic
from payment_svc.domain.signatures import sign_stripe
from payment_svc.repository import metadata


async def _unpublished(url: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            t = metadata.tables["outbox"]
            q = select(func.count()).select_from(t).where(t.c.published_at.is_(None))
            return int((await conn.execute(q)).scalar_one())
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_kill_after_accept_before_publish_then_restart_emits_once(
    postgres_url: str, kafka_settings: Any, h: Any, proc_tools: Any
) -> None:
    port = free_port()
    env = proc_tools.env(postgres_url, kafka_settings, port, PAYMENT_RELAY__START_DELAY_SECONDS="600")
    proc_tools.cli(env, "migrate")
    proc = await proc_tools.start(env, port)
    body = h.stripe_event(
        event_id="evt_crash", obj=h.payment_intent(pi="pi_crash", metadata={"client_id": "cli_K"})
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            sig = sign_stripe(body, h.STRIPE_SECRET, int(time.time()))
            r = await client.post("/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sig})
            assert r.status_code == 200 and r.json()["status"] == "processed"
    finally:
        proc_tools.stop(proc, hard=True)  # SIGKILL: no shutdown hooks, the relay never ran
    assert proc.returncode == -9
    assert await _unpublished(postgres_url) == 1
    assert await h.read_topic(kafka_settings, Topic.PAYMENT_EVENTS, idle_s=1.0) == []

    proc = await proc_tools.start(env | {"PAYMENT_RELAY__START_DELAY_SECONDS": "0"}, port)
    try:
        for _ in range(200):
            if await _unpublished(postgres_url) == 0:
                break
            await asyncio.sleep(0.1)
        assert await _unpublished(postgres_url) == 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            sig = sign_stripe(body, h.STRIPE_SECRET, int(time.time()))
            again = await client.post("/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sig})
            assert again.json()["status"] == "duplicate"
    finally:
        proc_tools.stop(proc)
    assert proc.returncode in (0, -15)  # uvicorn re-raises SIGTERM after a graceful shutdown
    records = await h.read_topic(kafka_settings, Topic.PAYMENT_EVENTS)
    received = [e for e in records if isinstance(e.data, PaymentReceived)]
    assert len(received) == 1 and received[0].data.reference == "pi_crash" and received[0].subject == "cli_K"
