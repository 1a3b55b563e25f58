"""The four services as processes: the dunning ladder from an issued invoice to a resolved case, a payment
before the first reminder, and a dispute that pauses a case until it is rejected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest_asyncio

from ar_events.topics import Topic

from .ladder import (
    CURRENCY,
    Limits,
    cases_waiting,
    collect_outcome,
    dunning_mail,
    duplicates,
    is_business_day,
    key_step,
    new_tag,
    onboard,
    quiet_due_date,
    run_ladder,
    settle,
    step_clock,
    wait_for_mail_step,
)
from .support import Api, E2EStack, TopicReader, advance_to_next_action, eventually, mail_for, quiet

ALL_TOPICS = (Topic.INVOICE_EVENTS, Topic.PAYMENT_EVENTS, Topic.DUNNING_EVENTS, Topic.NOTIFY_EVENTS)


@pytest_asyncio.fixture
async def topics(stack: E2EStack) -> AsyncIterator[TopicReader]:
    async with TopicReader(stack.kafka(), *ALL_TOPICS) as reader:
        yield reader


async def test_main_ladder_from_issue_to_resolution(stack: E2EStack, api: Api, topics: TopicReader) -> None:
    due = quiet_due_date((await api.sim_now()).date() + timedelta(days=1))
    [party] = await onboard(api, [new_tag("main")], due)
    await run_ladder(stack, api, topics, [party])

    result = await collect_outcome(stack, api, topics, party)
    assert result["emails"] == [
        ("dunning:1:0", "Payment reminder: €2,000.00 overdue"),
        ("dunning:1:1", "Second reminder: €2,000.00 still overdue"),
        ("dunning:1:3", "Final notice: pay €2,000.00 by <date> to avoid collection"),
        ("invoice:inv0", "Invoice <tag>-1: €1,200.00 due <date>"),
        ("invoice:inv1", "Invoice <tag>-2: €800.00 due <date>"),
    ]
    assert result["tasks"] == [("policy_step", 2, "done", "promise_to_pay")]
    assert result["case"] == ("resolved", 1, "high_risk")
    assert result["invoices"] == [("inv0", "paid", 0), ("inv1", "paid", 0)]
    assert result["dunning_events"] == [
        "case_opened", "reminder_requested", "reminder_requested", "manual_task_created",
        "manual_task_completed", "promise_to_pay_recorded", "paused", "promise_to_pay_broken", "resumed",
        "agency_warning_issued", "resolved",
    ]  # fmt: skip
    # the payment went through the payment and invoice topics, and notify-svc logged what it sent
    assert [e.data.amount.amount_minor for e in topics.of(party.client_id, "received")] == [party.total]
    assert len(topics.of(party.client_id, "invoice.paid")) == 2
    sent = topics.of(party.client_id, "notify.sent")
    assert {e.data.notification_key for e in sent} >= {m.key for m in dunning_mail(stack, party)}
    log = await api.notifications(party.client_id)
    assert sorted(n["status"] for n in log) == ["sent"] * 5
    assert duplicates(stack, [party]) == {}


async def test_payment_before_the_reminder_means_no_reminder(
    stack: E2EStack, api: Api, topics: TopicReader
) -> None:
    due = quiet_due_date((await api.sim_now()).date() + timedelta(days=2))
    [party] = await onboard(api, [new_tag("early")], due)

    async def noticed() -> bool:
        return len(mail_for(stack.mail_dir, [party.recipient])) == 2

    await eventually(noticed, what="the two invoice notices")
    await api.pay_stripe(party.client_id, party.total, CURRENCY, party.invoice_ids)

    async def cleared() -> bool:
        st = await api.statement(party.client_id)
        return not st["open_items"]

    await eventually(cleared, what="invoice-svc to apply the payment")
    await topics.until(lambda: len(topics.of(party.client_id, "invoice.paid")) == 2, what="InvoicePaid x2")

    async def no_timer() -> bool:
        case = await api.case(party.client_id)
        return case is None or case["next_action_at"] is None

    await eventually(no_timer, what="dunning-svc to drop the case's timer")
    # well past the first reminder (due + 1 day) and the whole ladder
    for _ in range(4):
        await api.advance(timedelta(days=6))
    await quiet(Limits().quiet)
    await topics.poll()
    assert [m.key.split(":")[0] for m in mail_for(stack.mail_dir, [party.recipient])] == [
        "invoice",
        "invoice",
    ]
    types = topics.short_types(party.client_id)
    assert "reminder_requested" not in types and "case_opened" not in types, types
    case = await api.case(party.client_id)
    assert case is None or case["state"] in ("current", "resolved"), case


async def test_dispute_pauses_the_case_and_its_rejection_resumes_it(
    stack: E2EStack, api: Api, topics: TopicReader
) -> None:
    due = quiet_due_date((await api.sim_now()).date() + timedelta(days=1))
    [party] = await onboard(api, [new_tag("disp")], due, amounts=(150_000,))
    limits = Limits()
    await cases_waiting(api, [party], limits)
    # the first reminder
    await step_clock(api, [party], limits)
    await wait_for_mail_step(stack, [party], 0, limits)
    # the client disputes its only invoice: the case pauses
    dispute = await api.open_dispute(party.invoice_ids[0])

    async def paused() -> dict[str, Any] | None:
        case = await api.case(party.client_id)
        return case if case and case["state"] == "paused" else None

    case = await eventually(paused, what="the case to pause on the dispute")
    assert case["pause"]["reason"] == "dispute", case
    await topics.until(lambda: bool(topics.of(party.client_id, "paused")), what="DunningPaused")
    # the clock goes past the second reminder (4 days) but not to the manual task (7 days): nothing is sent.
    # The rejection must come on a business day, else the reminder waits for one and by then the manual
    # task (7 days) is due too, which takes precedence (stale reminders are folded, by design).
    sent = len(dunning_mail(stack, party))
    first_at = await api.sim_now()
    days = next(
        (k for k in range(2, 7) if 4 <= ((first_at + timedelta(days=k)).date() - due).days <= 6
         and is_business_day((first_at + timedelta(days=k)).date())),
        None,
    )  # fmt: skip
    assert days is not None, f"no business day 4 to 6 days after {due}"
    now = await api.advance(timedelta(days=days))
    await settle(api, [party], now, limits)
    await quiet(limits.quiet)
    assert len(dunning_mail(stack, party)) == sent == 1
    case = await api.case(party.client_id)
    assert case is not None and case["state"] == "paused" and case["reached_step"] == 0, case
    # the dispute is rejected: the case resumes and the second reminder goes out
    await api.reject_dispute(dispute["id"])
    await topics.until(lambda: bool(topics.of(party.client_id, "resumed")), what="DunningResumed")
    for _ in range(4):  # at once, or at the next business moment
        case = await settle(api, [party], await api.sim_now(), limits)
        if case[0]["reached_step"] >= 1:
            break
        await advance_to_next_action(api, [party.client_id])
    assert case[0]["state"] == "reminding" and case[0]["reached_step"] == 1, case
    await wait_for_mail_step(stack, [party], 1, limits)
    second = [m for m in dunning_mail(stack, party) if key_step(m) == (1, 1)]
    assert len(second) == 1 and "Second reminder" in second[0].subject
    assert "disputed" not in second[0].text().lower()
    # tidy up: pay, so this client stays silent for the other tests
    await api.pay_stripe(party.client_id, party.total, CURRENCY, party.invoice_ids)

    async def resolved() -> bool:
        c = await api.case(party.client_id)
        return c is not None and c["state"] == "resolved"

    await eventually(resolved, what="resolution after payment")
    assert duplicates(stack, [party]) == {}
