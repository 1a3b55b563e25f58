"""Two dunning-svc processes on one PostgreSQL database share the work (Kafka partitions and timers) and
never send a reminder twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from ar_events.topics import Topic
from ar_ops.stack import terminate

from .ladder import (
    CURRENCY,
    Limits,
    cases_waiting,
    dunning_mail,
    duplicates,
    key_step,
    new_tag,
    onboard,
    quiet_due_date,
    step_clock,
    wait_for_mail_step,
)
from .support import Api, E2EStack, TopicReader, eventually, free_port

CLIENTS = 24


def _processed(metrics: str) -> float:
    """Records this process's consumer handled (``ar_events_consumer_records`` with outcome processed)."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("ar_events_consumer_records_total{") and 'outcome="processed"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_two_dunning_processes_share_the_work_without_double_sends(stack: E2EStack, api: Api) -> None:
    if not stack.postgres:
        pytest.skip("two processes on one database need PostgreSQL (FOR UPDATE SKIP LOCKED)")
    port = free_port()
    second = stack.spawn_extra("dunning-2", "dunning", {"DUNNING_HTTP__PORT": str(port)})
    second_url = f"http://127.0.0.1:{port}"
    log = stack.config.log_file("dunning-2")
    limits = Limits(step=60.0)
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def ready() -> bool:
                assert second.alive(), f"the second dunning-svc exited:\n{log.read_text()[-3000:]}"
                try:
                    return (await http.get(f"{second_url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            t0 = time.monotonic()
            await eventually(ready, timeout=90, what="the second dunning-svc to answer /readyz")
            print(f"second dunning-svc ready in {time.monotonic() - t0:.1f}s")

            # both processes are in the consumer group (rebalanced, stable) before the clients arrive
            admin = AIOKafkaAdminClient(bootstrap_servers=stack.config.bootstrap_servers)
            await admin.start()
            try:

                async def both_members() -> bool:
                    try:
                        [described] = await admin.describe_consumer_groups(["dunning-svc"])
                    except KafkaError:
                        return False
                    _, _, state, _, _, members = described.groups[0]
                    return bool(state == "Stable" and len(members) == 2)

                await eventually(both_members, timeout=60, what="two stable members in group dunning-svc")
            finally:
                await admin.close()

            due = quiet_due_date((await api.sim_now()).date() + timedelta(days=1))
            parties = await onboard(
                api, [new_tag(f"so{n:02d}-") for n in range(CLIENTS)], due, amounts=(150_000,)
            )
            print(f"onboarded {CLIENTS} clients at {time.monotonic() - t0:.1f}s")
            await cases_waiting(api, parties, limits)
            # two reminders for every client, the timers shared by the two schedulers
            for step in (0, 1):
                await step_clock(api, parties, limits)
                await wait_for_mail_step(stack, parties, step, limits)
                print(f"step {step} mailed at {time.monotonic() - t0:.1f}s")

            headers = {"Authorization": f"Bearer {stack.api_key}"}
            first_metrics = (await http.get(stack.urls()["dunning"] + "/metrics", headers=headers)).text
            second_metrics = (await http.get(f"{second_url}/metrics", headers=headers)).text
            # the second process serves the same cases (one database) and its clock is the shared one
            some = parties[0].client_id
            mine = (await http.get(f"{second_url}/v1/cases/{some}", headers=headers)).json()
            assert mine["reached_step"] == 1, mine
    finally:
        terminate(second.pid, 10, second.process)
        stack.extra.pop("dunning-2", None)

    # every reminder exactly once in the mail folder: one email per (client, step), unique Message-IDs
    assert duplicates(stack, parties) == {}
    for p in parties:
        steps = sorted(key_step(m) for m in dunning_mail(stack, p))
        assert steps == [(1, 0), (1, 1)], (p.tag, steps)
    ids = Counter(m.message_id for p in parties for m in dunning_mail(stack, p))
    assert len(ids) == 2 * CLIENTS and max(ids.values()) == 1
    # and once on the topic: no second ReminderRequested decided by the other process
    async with TopicReader(stack.kafka(), Topic.DUNNING_EVENTS) as topics:
        await topics.until(
            lambda: all(len(topics.of(p.client_id, "reminder_requested")) >= 2 for p in parties),
            what="the reminders on ar.dunning.events",
        )
        for p in parties:
            distinct = {e.id: e for e in topics.of(p.client_id, "reminder_requested")}
            keys = Counter(e.data.notification_key for e in distinct.values())
            assert len(keys) == 2 and max(keys.values()) == 1, (p.tag, keys)
    # both processes consumed part of the events (the group split the partitions between them)
    first_n, second_n = _processed(first_metrics), _processed(second_metrics)
    print(f"dunning-svc records processed: first {first_n:g}, second {second_n:g}")
    assert first_n > 0 and second_n > 0, (first_n, second_n)

    # tidy up: every client pays, so these cases stay silent for the other tests
    await asyncio.gather(*(api.pay_stripe(p.client_id, p.total, CURRENCY, p.invoice_ids) for p in parties))

    async def resolved() -> bool:
        cases = await api.cases(p.client_id for p in parties)
        return all(c is not None and c["state"] == "resolved" for c in cases)

    await eventually(resolved, timeout=60, what="every case to resolve")
