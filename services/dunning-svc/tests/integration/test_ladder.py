"""The whole service on a real broker and PostgreSQL: events in on the real topics, the clock moved through
a full escalation ladder to the agency handoff, then a payment resolves the case."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest_asyncio

from ar_events.envelope import decode, encode, new_event
from ar_events.events import NotificationFailed, Payload
from ar_events.kafka import make_consumer, make_producer
from ar_events.settings import KafkaSettings
from ar_events.topics import Topic, dlq_of
from dunning_svc.bootstrap import CONSUMER, RELAY, SCHEDULER

from .support import T0, Svc, client, invoice, paid, settled, start_service


@pytest_asyncio.fixture
async def live(postgres_url: str, kafka_settings: KafkaSettings) -> AsyncIterator[tuple[Svc, KafkaSettings]]:
    s = await start_service(postgres_url, kafka_settings, parts=(RELAY, CONSUMER, SCHEDULER))
    assert s.runtime.runner is not None
    await asyncio.wait_for(s.runtime.runner.ready.wait(), 30)
    try:
        yield s, kafka_settings
    finally:
        await s.http.aclose()
        await s.runtime.close()


async def produce(kafka: KafkaSettings, topic: Topic, *items: Payload | bytes, key: str = "c1") -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        for item in items:
            if isinstance(item, bytes):
                await producer.send_and_wait(kafka.topic(topic), item, key=key.encode())
            else:
                env = new_event(item, source="test", time=T0)
                await producer.send_and_wait(kafka.topic(topic), encode(env), key=env.key)
    finally:
        await producer.stop()


class Reader:
    """Reads a topic from the beginning and keeps everything seen."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.consumer = make_consumer(kafka, None)
        self.topic = topic
        self.records: list[Any] = []

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe([self.topic])

    async def until(self, predicate: Any, timeout: float = 20.0) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.records):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; saw {[self._type(r) for r in self.records]}")
            batch = await self.consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                self.records.extend(recs)
        return self.records

    @staticmethod
    def _type(record: Any) -> str:
        try:
            return decode(record.value).type
        except Exception:
            return "?"

    def types(self) -> list[str]:
        return [self._type(r).removeprefix("ar.dunning.").removesuffix(".v1") for r in self.records]

    def events(self) -> list[Any]:
        return [decode(r.value).data for r in self.records]

    async def stop(self) -> None:
        await self.consumer.stop()


async def settle(svc: Svc) -> None:
    """Wait until the scheduler has nothing due at the current (simulated) time."""
    rt = svc.runtime
    assert rt.scheduler is not None
    for _ in range(200):
        async with rt.sessionmaker() as session:
            from dunning_svc import repository as repo

            due = await repo.claim_due_cases(session, svc.clock.now(), 1)
        if not due:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("scheduler did not drain the due cases")


async def test_full_ladder_to_agency_then_payment_resolves(live: tuple[Svc, KafkaSettings]) -> None:
    svc, kafka = live
    out = Reader(kafka, kafka.topic(Topic.DUNNING_EVENTS))
    await out.start()
    due = date(2026, 3, 5)  # a Thursday; T0 is Monday 2 March 10:00 in Paris
    await produce(kafka, Topic.INVOICE_EVENTS, client("c1"), invoice("c1", "inv-1", due, 250_000))
    for _ in range(100):
        if (await svc.http.get("/v1/cases/c1")).status_code == 200:
            break
        await asyncio.sleep(0.1)
    # walk the clock one day at a time through the ladder, as ops would with the admin endpoint
    for _ in range(50):
        r = await svc.http.post("/v1/admin/clock/advance", json={"days": 1})
        assert r.status_code == 200
        await settle(svc)
    await out.until(lambda recs: any(b"agency_handoff_requested" in r.value for r in recs))
    types = out.types()
    assert types[:2] == ["case_opened", "reminder_requested"]
    assert types.count("reminder_requested") == 3
    for expected in (
        "manual_task_created",
        "manual_task_completed",
        "agency_warning_issued",
        "agency_handoff_requested",
    ):
        assert expected in types
    order = [t for t in types if t != "manual_task_completed"]
    assert order == ["case_opened", "reminder_requested", "reminder_requested", "reminder_requested",
                     "manual_task_created", "agency_warning_issued", "agency_handoff_requested"]  # fmt: skip
    events = out.events()
    reminders = [e for e in events if e.TYPE.endswith("reminder_requested.v1")]
    assert [r.template for r in reminders] == ["upcoming", "overdue-1", "overdue-2"]
    assert all(r.recipients[0].email == "paul@example.com" and len(r.recipients) == 1 for r in reminders)
    assert reminders[0].statement.totals[0].amount_minor == 250_000
    assert len({r.notification_key for r in reminders}) == 3
    for r in reminders:  # business hours in Paris, never on a weekend
        local = r.requested_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
        assert local.weekday() < 5 and 9 <= local.hour < 17
    warning = next(e for e in events if e.TYPE.endswith("agency_warning_issued.v1"))
    assert warning.sender.kind.value == "account_manager"
    case = (await svc.http.get("/v1/cases/c1")).json()
    assert case["state"] == "in_collections"
    # the client pays: invoice-svc applies the payment; the case resolves and tells the agency
    now = svc.clock.now()
    await produce(
        kafka,
        Topic.INVOICE_EVENTS,
        paid("c1", "inv-1", 250_000, 0, now),
        settled("c1", "inv-1", 250_000, due, now),
    )
    await out.until(lambda recs: any(b"dunning.resolved" in r.value for r in recs))
    resolved = next(e for e in out.events() if e.TYPE.endswith("resolved.v1"))
    assert resolved.was_in_collections and resolved.previous_state.value == "in_collections"
    case = (await svc.http.get("/v1/cases/c1")).json()
    assert case["state"] == "resolved"
    assert {"event_in", "decision_out", "task"} <= {e["kind"] for e in case["timeline"]}
    await out.stop()


async def test_bounce_opens_wrong_contact_task(live: tuple[Svc, KafkaSettings]) -> None:
    svc, kafka = live
    await produce(
        kafka, Topic.INVOICE_EVENTS, client("c1"), invoice("c1", "inv-1", date(2026, 2, 20), 50_000)
    )
    failure = NotificationFailed(client_id="c1", notification_id="n1", notification_key="k1", channel="email",  # type: ignore[arg-type]
                                 template="overdue-1", recipient="paul@example.com", permanent=True,
                                 reason="550 no such user", source_event_id="e1", failed_at=T0)  # fmt: skip
    await produce(kafka, Topic.NOTIFY_EVENTS, failure)
    for _ in range(100):
        tasks = (await svc.http.get("/v1/tasks", params={"status": "open"})).json()["items"]
        if tasks:
            break
        await asyncio.sleep(0.1)
    assert [t["kind"] for t in tasks] == ["wrong_contact"]
    assert "550" in tasks[0]["note"]


async def test_malformed_and_invalid_commands_go_to_the_dlq(live: tuple[Svc, KafkaSettings]) -> None:
    svc, kafka = live
    dlq = Reader(kafka, dlq_of(kafka.topic(Topic.DUNNING_COMMANDS)))
    await dlq.start()
    bad_json = b"{not json"
    wrong_shape = json.dumps({"specversion": "1.0", "id": "x1", "source": "ops", "type": "ar.dunning.command.pause.v1",
                              "time": "2026-03-02T09:00:00Z", "subject": "c9", "correlationid": "x1",
                              "data": {"client_id": "c9", "until": "not-a-date"}}).encode()  # fmt: skip
    from ar_events.events import PauseDunning

    no_case = PauseDunning(client_id="c9", note="hold please")
    await produce(kafka, Topic.DUNNING_COMMANDS, bad_json, wrong_shape, no_case, key="c9")
    records = await dlq.until(lambda recs: len(recs) >= 3, timeout=30)
    errors = [dict(r.headers)["dlq.error"].decode() for r in records]
    assert "not JSON" in errors[0]
    assert "until" in errors[1]
    assert "no open dunning case" in errors[2]
    await dlq.stop()
    # a valid command still works afterwards
    await produce(
        kafka, Topic.INVOICE_EVENTS, client("c9"), invoice("c9", "i9", date(2026, 2, 1), 90_000), key="c9"
    )
    for _ in range(100):
        r = await svc.http.get("/v1/cases/c9")
        if r.status_code == 200 and r.json()["state"] not in ("current",):
            break
        await asyncio.sleep(0.1)
    await produce(
        kafka, Topic.DUNNING_COMMANDS, PauseDunning(client_id="c9", until=date(2026, 4, 1)), key="c9"
    )
    for _ in range(100):
        case = (await svc.http.get("/v1/cases/c9")).json()
        if case["state"] == "paused":
            break
        await asyncio.sleep(0.1)
    assert case["pause"]["reason"] == "hold"
