"""The main scenario, for one or many clients at once: issue, overdue, reminders, manual task with a promise
to pay, broken promise, agency warning, payment, resolution, then silence.

It uses the ``high_risk`` policy of dunning-svc's policies.yaml, the shortest ladder to the agency warning:
reminder at 1 day, reminder at 4 days, manual task at 7 days (SLA 2 days), agency warning at 12 days
(deadline 7 days), handoff at 20 days; contact gap 2 days; promise grace 2 days.

Every step is checked through the public interfaces: the mail folder, the REST APIs and the topics. The
clock is moved to just past the earliest pending timer of the clients' cases (``next_action_at`` in the case
view), so no step is folded into another and no fixed sleep is needed.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import holidays

from .support import (
    Api,
    E2EStack,
    Mail,
    TopicReader,
    advance_to_next_action,
    as_dt,
    eventually,
    is_dunning_key,
    mail_for,
    quiet,
)

COUNTRY = "GB"  # the clients' country: its public holidays are not business days in dunning-svc
AMOUNTS = (120_000, 80_000)  # two invoices per client, EUR minor units
CURRENCY = "EUR"
POLICY = "high_risk"
REMINDER_STEPS = (0, 1)
TASK_STEP = 2
WARNING_STEP = 3


@dataclass
class Party:
    """One client of the scenario and what the test knows about it."""

    tag: str
    client_id: str
    recipient: str
    invoices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(int(i["total"]["amount_minor"]) for i in self.invoices)

    @property
    def invoice_ids(self) -> list[str]:
        return [str(i["id"]) for i in self.invoices]

    @property
    def numbers(self) -> list[str]:
        return [str(i["number"]) for i in self.invoices]


@dataclass
class Limits:
    """How long each wait may take (seconds); the chaos run gives the services time to restart."""

    step: float = 30.0
    quiet: float = 3.0


def is_business_day(day: date, country: str = COUNTRY) -> bool:
    return day.weekday() < 5 and day not in holidays.country_holidays(country, years=day.year)


def quiet_due_date(earliest: date, country: str = COUNTRY) -> date:
    """The first due date on or after ``earliest`` with no public holiday in the three weeks after it.

    Weekends then delay a message by two days at most, which never folds one step into the next in the
    high_risk ladder (1, 4, 7 days), so every run of the scenario has the same steps whatever the date.
    """
    due = earliest
    while any(not is_business_day(due + timedelta(days=n), country) and (due + timedelta(days=n)).weekday() < 5
              for n in range(22)):  # fmt: skip
        due += timedelta(days=1)
    return due


def new_tag(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


async def onboard(
    api: Api, tags: list[str], due: date, *, amounts: tuple[int, ...] = AMOUNTS, segment: str = POLICY
) -> list[Party]:
    """Clients registered and invoiced through invoice-svc's REST API (all due on ``due``), a few at a time."""
    gate = asyncio.Semaphore(6)

    async def one(tag: str) -> Party:
        async with gate:
            client = await api.create_client(tag, segment=segment, country=COUNTRY)
            party = Party(tag, str(client["id"]), f"billing-{tag}@client.example.com")
            for n, amount in enumerate(amounts):
                party.invoices.append(await api.issue_invoice(party.client_id, f"{tag}-{n + 1}", due, amount))
            return party

    return list(await asyncio.gather(*(one(tag) for tag in tags)))


def dunning_mail(stack: E2EStack, party: Party) -> list[Mail]:
    return [m for m in mail_for(stack.mail_dir, [party.recipient]) if is_dunning_key(m.key)]


def key_step(mail: Mail) -> tuple[int, int]:
    """(cycle, step) of a reminder or warning from its notification key ``<case>:<cycle>:<step>``."""
    _, cycle, step = mail.key.rsplit(":", 2)
    return int(cycle), int(step)


async def wait_for_mail_step(stack: E2EStack, parties: list[Party], step: int, limits: Limits) -> None:
    async def arrived() -> bool:
        return all(any(key_step(m) == (1, step) for m in dunning_mail(stack, p)) for p in parties)

    await eventually(arrived, timeout=limits.step, what=f"the step {step} email of {len(parties)} clients")


async def cases_waiting(api: Api, parties: list[Party], limits: Limits) -> None:
    """Wait until dunning-svc knows every party's invoices: each case exists and has a timer."""

    async def waiting() -> bool:
        cases = await api.cases(p.client_id for p in parties)
        return all(c is not None and c["next_action_at"] is not None for c in cases)

    await eventually(waiting, timeout=limits.step, what="a dunning case with a timer per client")


async def settle(api: Api, parties: list[Party], after: datetime, limits: Limits) -> list[dict[str, Any]]:
    """Wait until dunning-svc has handled every timer of these cases due at ``after`` (each case's
    ``next_action_at`` is then later, or gone); return the cases."""

    async def done() -> list[dict[str, Any]] | None:
        cases = await api.cases(p.client_id for p in parties)
        for c in cases:
            if c is None:
                return None
            nxt = as_dt(c["next_action_at"])
            if nxt is not None and nxt <= after:
                return None
        return [c for c in cases if c is not None]

    return await eventually(done, timeout=limits.step, what="dunning-svc to handle the due timers")


async def step_clock(api: Api, parties: list[Party], limits: Limits) -> list[dict[str, Any]]:
    """Move the clock past the earliest timer of these cases and wait until it is handled."""
    now = await advance_to_next_action(api, [p.client_id for p in parties])
    assert now is not None, "no case has a pending timer"
    return await settle(api, parties, now, limits)


def _assert_statement_mail(mail: Mail, party: Party) -> None:
    text = mail.text()
    for number in party.numbers:
        assert number in text, f"{number} missing from the consolidated reminder:\n{text}"
    euros = f"{party.total / 100:,.2f}"
    assert euros in text, f"the total {euros} is not in the reminder:\n{text}"


def _deadline_texts(d: date) -> tuple[str, ...]:
    return (d.isoformat(), f"{d.day} {d:%B %Y}", f"{d:%B} {d.day}, {d.year}")


PHASES = ("notices", "reminder-1", "reminder-2", "task", "promise", "warning", "payment", "resolution")
PhaseHook = Callable[[str], Awaitable[None]]


async def _no_hook(phase: str) -> None:
    return None


async def run_ladder(
    stack: E2EStack,
    api: Api,
    topics: TopicReader,
    parties: list[Party],
    limits: Limits | None = None,
    on_phase: PhaseHook = _no_hook,
) -> None:
    """Steps 1 to 6 of the main scenario for every party, asserting along the way. ``on_phase(name)`` is
    awaited as each phase of :data:`PHASES` begins (the chaos test schedules its kills there)."""
    limits = limits or Limits()
    await on_phase("notices")
    # 0. the invoice notices go out, the cases exist and wait for the first overdue day
    for p in parties:
        want = {f"invoice:{i}:issued" for i in p.invoice_ids}

        async def notices(p: Party = p, want: set[str] = want) -> bool:
            return want <= {m.key for m in mail_for(stack.mail_dir, [p.recipient])}

        await eventually(notices, timeout=limits.step, what=f"invoice notices of {p.tag}")

    await cases_waiting(api, parties, limits)
    for p in parties:
        assert dunning_mail(stack, p) == [], f"{p.tag}: a reminder before anything is overdue"

    # 1-2. overdue: the first reminder, one email per client listing all its open invoices; then the second
    for step in REMINDER_STEPS:
        await on_phase(f"reminder-{step + 1}")
        cases = await step_clock(api, parties, limits)
        assert all(c["state"] == "reminding" and c["policy"] == POLICY for c in cases), cases
        await wait_for_mail_step(stack, parties, step, limits)
        for p in parties:
            mails = [m for m in dunning_mail(stack, p) if key_step(m) == (1, step)]
            assert len(mails) == 1, f"{p.tag}: {len(mails)} emails for step {step}"
            _assert_statement_mail(mails[0], p)
        await topics.until(
            lambda n=step + 1: all(len(topics.of(p.client_id, "reminder_requested")) >= n for p in parties),
            what="ReminderRequested on ar.dunning.events",
        )
        for p in parties:
            event = topics.of(p.client_id, "reminder_requested")[step].data
            assert {line.number for line in event.statement.invoices} == set(p.numbers)
            assert [(m.amount_minor, m.currency) for m in event.statement.overdue_totals] == [
                (p.total, CURRENCY)
            ]
            mail = next(m for m in dunning_mail(stack, p) if key_step(m) == (1, step))
            assert mail.key == event.notification_key

    # 3. a manual task, completed with a promise to pay
    await on_phase("task")
    cases = await step_clock(api, parties, limits)
    promised = (await api.sim_now()).date() + timedelta(days=1)
    await on_phase("promise")
    for p, case in zip(parties, cases, strict=True):
        assert case["state"] == "manual_followup", case
        task_id = case["blocking_task_id"]
        assert task_id, case
        [task] = [t for t in case["tasks"] if t["task_id"] == task_id]
        assert task["status"] == "open" and task["kind"] == "policy_step" and task["step"] == TASK_STEP
        done = await api.complete_task_with_promise(task_id, promised, p.total, CURRENCY)
        assert done["status"] == "done" and done["outcome"] == "promise_to_pay", done
    for p in parties:
        case = await api.case(p.client_id)
        assert case is not None and case["state"] == "paused", case
        assert case["pause"]["reason"] == "promise_to_pay", case

    # 4. the promise is broken (nothing paid by the date plus grace): the agency warning goes out
    await on_phase("warning")
    for _ in range(6):
        cases = await step_clock(api, parties, limits)
        if all(c["state"] == "agency_warning" for c in cases):
            break
    else:
        raise AssertionError(f"no agency warning: {[c['state'] for c in cases]}")
    await wait_for_mail_step(stack, parties, WARNING_STEP, limits)
    await topics.until(
        lambda: all(topics.of(p.client_id, "agency_warning_issued") for p in parties),
        what="AgencyWarningIssued on ar.dunning.events",
    )
    for p in parties:
        assert topics.of(p.client_id, "promise_to_pay_broken"), topics.short_types(p.client_id)
        warning = topics.of(p.client_id, "agency_warning_issued")[0].data
        [mail] = [m for m in dunning_mail(stack, p) if key_step(m) == (1, WARNING_STEP)]
        assert mail.key == warning.notification_key
        text = mail.subject + "\n" + mail.text()
        assert any(d in text for d in _deadline_texts(warning.deadline)), (warning.deadline, text)
        # the final notice comes from the account manager (policy: sender account_manager); reminders do not
        assert f"am-{p.tag}@seller.example.com" in mail.header("From"), mail.header("From")
        first = next(m for m in dunning_mail(stack, p) if key_step(m) == (1, 0))
        assert "am-" not in first.header("From"), first.header("From")
        _assert_statement_mail(mail, p)

    # 5. a signed payment webhook clears the balance
    await on_phase("payment")
    for p in parties:
        ack = await api.pay_stripe(p.client_id, p.total, CURRENCY, p.invoice_ids, event_id=f"evt_{p.tag}")
        assert ack["status"] in ("processed", "duplicate"), ack

    async def cleared() -> bool:
        for p in parties:
            st = await api.statement(p.client_id)
            if any(m["amount_minor"] for m in st["balances"]) or st["open_items"]:
                return False
        return True

    await eventually(cleared, timeout=limits.step, what="invoice-svc to apply the payments")
    for p in parties:
        for inv in p.invoice_ids:
            assert (await api.invoice(inv))["status"] == "paid"

    # 6. the case is resolved, and nothing more is sent however far the clock moves
    await on_phase("resolution")

    async def resolved() -> bool:
        cases = await api.cases(p.client_id for p in parties)
        return all(c is not None and c["state"] == "resolved" for c in cases)

    await eventually(resolved, timeout=limits.step, what="the cases to resolve")
    await topics.until(
        lambda: all(topics.of(p.client_id, "dunning.resolved") for p in parties), what="DunningResolved"
    )
    before = {p.tag: len(mail_for(stack.mail_dir, [p.recipient])) for p in parties}
    for p in parties:
        case = await api.case(p.client_id)
        assert case is not None and case["next_action_at"] is None, case
    await api.advance(timedelta(days=15))
    await api.advance(timedelta(days=15))
    await quiet(limits.quiet)
    await topics.poll()
    for p in parties:
        assert len(mail_for(stack.mail_dir, [p.recipient])) == before[p.tag], (
            f"{p.tag}: email after resolution"
        )
        types = topics.short_types(p.client_id)
        assert types[-1] == "resolved", f"{p.tag}: dunning events after resolution: {types}"
        assert "agency_handoff_requested" not in types


# ------------------------------------------------------------------------------------------ outcome

_DATE = re.compile(r"\b\d{1,2} [A-Z][a-z]+ \d{4}\b|\b\d{4}-\d{2}-\d{2}\b")


def outcome(stack: E2EStack, party: Party, case: dict[str, Any], statement: dict[str, Any],
            invoices: list[dict[str, Any]], topics: TopicReader) -> dict[str, Any]:  # fmt: skip
    """What a run left for one client, without ids, dates or the client's tag: comparable across runs.

    Emails count once per Message-ID (see :func:`duplicates` for repeats); dunning events once per id (the
    relay may publish a row again after a crash, consumers dedupe by id)."""
    mails = list({m.message_id: m for m in mail_for(stack.mail_dir, [party.recipient])}.values())
    number_of = {i["id"]: f"inv{n}" for n, i in enumerate(party.invoices)}

    def kind(m: Mail) -> str:
        if is_dunning_key(m.key):
            cycle, step = key_step(m)
            return f"dunning:{cycle}:{step}"
        if m.key.startswith("invoice:"):
            return "invoice:" + str(number_of.get(m.key.split(":")[1], "?"))
        return m.key.split(":")[0]

    def norm(text: str) -> str:
        return _DATE.sub("<date>", text.replace(party.tag, "<tag>"))

    distinct: dict[str, Any] = {}
    for e in topics.events:
        if e.subject == party.client_id and e.type.startswith("ar.dunning."):
            distinct.setdefault(e.id, e)
    return {
        "emails": sorted((kind(m), norm(m.subject)) for m in mails),
        "tasks": sorted((t["kind"], t["step"], t["status"], t["outcome"]) for t in case["tasks"]),
        "case": (case["state"], case["cycle"], case["policy"]),
        "balances": statement["balances"],
        "open_items": len(statement["open_items"]),
        "invoices": sorted(
            (number_of[i["id"]], i["status"], i["amount_due"]["amount_minor"]) for i in invoices
        ),
        "dunning_events": [e.type.split(".")[-2] for e in distinct.values()],
    }


async def collect_outcome(stack: E2EStack, api: Api, topics: TopicReader, party: Party) -> dict[str, Any]:
    case = await api.case(party.client_id)
    assert case is not None
    statement = await api.statement(party.client_id)
    invoices = [await api.invoice(i) for i in party.invoice_ids]
    await topics.poll()
    return outcome(stack, party, case, statement, invoices, topics)


def duplicates(stack: E2EStack, parties: list[Party]) -> dict[str, list[str]]:
    """Notification keys and Message-IDs found more than once in the mail folder (per client)."""
    out: dict[str, list[str]] = {}
    for p in parties:
        mails = mail_for(stack.mail_dir, [p.recipient])
        keys = Counter(m.key for m in mails)
        ids = Counter(m.message_id for m in mails)
        dup = [f"key {k} x{n}" for k, n in keys.items() if n > 1]
        dup += [f"Message-ID {k} x{n}" for k, n in ids.items() if n > 1]
        if dup:
            out[p.tag] = dup
    return out
