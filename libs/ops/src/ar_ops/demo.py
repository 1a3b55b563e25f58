"""``make run``: the whole stack in the foreground, a demo portfolio loaded through the public interfaces only
(REST and signed webhooks), payers acting on the simulated calendar, and a live status display.

Timeline (simulated days from the start; one simulated day per real second by default):
- day 0: 200 clients and 2,000 invoices are loaded; invoices already settled in the past are paid at once;
- every day: on-time, late and partial payers pay what falls due for them (signed Stripe webhooks);
- day 2: two invoices are disputed; day 12 one dispute is rejected (the case resumes), day 15 the other is
  upheld with a credit note;
- day 3: two promises to pay are recorded; one is kept (paid on day 7), one is broken (nothing paid);
- day 4: a payment plan of three monthly installments is agreed, and each installment is paid on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import Progress
from rich.table import Table

from ar_events.clock import SharedSimulatedClock
from ar_events.kafka import make_consumer
from ar_events.settings import KafkaSettings
from ar_events.topics import Topic
from ar_ops.mail import mail_files
from ar_ops.portfolio import DemoClient, DemoInvoice, PayerKind, Portfolio, build_portfolio
from ar_ops.stack import RunningStack, StackConfig, start_stack


@dataclass
class Issued:
    invoice_id: str
    client_id: str
    number: str
    currency: str
    due_date: date
    total_minor: int


@dataclass
class Payment:
    """A payment the simulated payer will make on ``day`` (a simulated date)."""

    on: date
    client_id: str
    currency: str
    amount_minor: int
    invoice_ids: tuple[str, ...]
    why: str


@dataclass
class Scenario:
    """A scripted event on a simulated date (dispute, promise, plan)."""

    on: date
    what: str
    client_id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoState:
    stack: RunningStack
    portfolio: Portfolio
    sim_today: date
    clients: dict[str, str] = field(default_factory=dict)  # external id -> client id
    invoices: dict[str, Issued] = field(default_factory=dict)  # invoice id -> issued
    payments: list[Payment] = field(default_factory=list)  # pending, sorted by date
    scenarios: list[Scenario] = field(default_factory=list)
    collected: Counter[str] = field(default_factory=Counter)  # currency -> minor units
    events: Counter[str] = field(default_factory=Counter)  # dunning/notify event type -> count so far
    log: list[str] = field(default_factory=list)
    errors: int = 0


class DemoApi:
    """The public interfaces the demo uses: REST with the dev key, Stripe-signed webhooks."""

    def __init__(self, stack: RunningStack, client: httpx.AsyncClient) -> None:
        self.urls = stack.urls()
        self.http = client
        self.auth = {"Authorization": f"Bearer {stack.credentials.api_key}"}
        self.stripe_secret = stack.credentials.webhook_secrets["stripe"]

    async def _call(self, method: str, service: str, path: str, body: Any = None, **headers: str) -> Any:
        response = await self.http.request(
            method, self.urls[service] + path, json=body, headers={**self.auth, **headers}
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {service}{path} -> {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    async def create_client(self, c: DemoClient) -> str:
        body = {
            "external_id": c.external_id,
            "name": c.name,
            "segment": c.segment,
            "tags": [c.segment, c.country.lower()],
            "account_manager": {"name": c.account_manager[0], "email": c.account_manager[1]},
            "contacts": [{"name": f"Accounts {c.name}", "email": c.contact_email, "role": "billing"}],
            "language": c.language,
            "time_zone": c.time_zone,
            "country": c.country,
            "payment_terms_days": 30,
        }
        out = await self._call("POST", "invoice", "/v1/clients", body, **{"Idempotency-Key": c.external_id})
        return str(out["id"])

    async def issue_invoice(self, client_id: str, inv: DemoInvoice) -> dict[str, Any]:
        body = {
            "client_id": client_id,
            "number": inv.number,
            "currency": inv.currency,
            "issue_date": inv.issue_date.isoformat(),
            "due_date": inv.due_date.isoformat(),
            "lines": [
                {"description": d, "quantity": q, "unit_price": {"amount_minor": p, "currency": inv.currency},
                 "tax_rate_bp": t}
                for d, q, p, t in inv.lines
            ],
        }  # fmt: skip
        out: dict[str, Any] = await self._call(
            "POST", "invoice", "/v1/invoices", body, **{"Idempotency-Key": inv.number}
        )
        return out

    async def pay(self, p: Payment) -> None:
        """A Stripe ``payment_intent.succeeded`` webhook, signed like Stripe signs it."""
        intent = "pi_" + uuid.uuid4().hex[:24]
        event = {
            "id": "evt_" + uuid.uuid4().hex[:24],
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": intent,
                    "object": "payment_intent",
                    "amount": p.amount_minor,
                    "amount_received": p.amount_minor,
                    "currency": p.currency.lower(),
                    "payment_method_types": ["card"],
                    "metadata": {"client_id": p.client_id, "invoice_ids": ",".join(p.invoice_ids)},
                }
            },
        }
        raw = json.dumps(event).encode()
        ts = int(time.time())
        sig = hmac.new(self.stripe_secret.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
        response = await self.http.post(
            self.urls["payment"] + "/v1/webhooks/stripe",
            content=raw,
            headers={"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"},
        )
        if response.status_code >= 300:
            raise RuntimeError(f"stripe webhook -> {response.status_code}: {response.text[:300]}")

    async def open_dispute(self, invoice_id: str, reason: str, note: str) -> str:
        out = await self._call(
            "POST", "invoice", f"/v1/invoices/{invoice_id}/disputes", {"reason": reason, "note": note},
            **{"Idempotency-Key": f"dispute-{invoice_id}"},
        )  # fmt: skip
        return str(out["id"])

    async def resolve_dispute(self, dispute_id: str, outcome: str, credit_minor: int, currency: str) -> None:
        body: dict[str, Any] = {"outcome": outcome}
        if outcome == "upheld":
            body["credit_note"] = {
                "amount": {"amount_minor": credit_minor, "currency": currency},
                "reason": "agreed",
            }
        await self._call("POST", "invoice", f"/v1/disputes/{dispute_id}/resolve", body)

    # dunning-svc -----------------------------------------------------------------------------------------

    async def sim_now(self) -> datetime:
        out = await self._call("GET", "dunning", "/v1/admin/clock")
        return datetime.fromisoformat(out["now"])

    async def record_promise(self, client_id: str, on: date, amount_minor: int, currency: str) -> None:
        body = {"date": on.isoformat(), "amount": {"amount_minor": amount_minor, "currency": currency},
                "note": "demo: promised on the phone"}  # fmt: skip
        await self._call("POST", "dunning", f"/v1/cases/{client_id}/promise-to-pay", body)

    async def agree_plan(self, client_id: str, installments: list[tuple[date, int]], currency: str) -> None:
        body = {
            "installments": [
                {"due_date": d.isoformat(), "amount": {"amount_minor": a, "currency": currency}}
                for d, a in installments
            ],
            "note": "demo: three monthly installments",
        }
        await self._call("POST", "dunning", f"/v1/cases/{client_id}/payment-plan", body)

    async def case_counts(self) -> dict[str, int]:
        out = await self._call("GET", "dunning", "/v1/cases/counts")
        return {str(k): int(v) for k, v in out.get("by_state", out).items() if isinstance(v, int)}

    async def open_tasks(self) -> int:
        out = await self._call("GET", "dunning", "/v1/tasks?status=open&limit=500")
        return len(out["items"])


async def _bounded(n: int, coros: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(n)

    async def one(c: Any) -> Any:
        async with gate:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def load_portfolio(api: DemoApi, state: DemoState, console: Console | None = None) -> None:
    """Clients and invoices through REST; then every payment the payers will make, by simulated date."""
    pf = state.portfolio
    progress = Progress(console=console, transient=True)
    clients_bar = progress.add_task("clients", total=len(pf.clients))
    invoices_bar = progress.add_task("invoices", total=pf.invoice_count)

    async def create(c: DemoClient) -> str:
        cid = await api.create_client(c)
        progress.advance(clients_bar)
        return cid

    with progress:
        await _load(api, state, create, lambda: progress.advance(invoices_bar))


async def _load(api: DemoApi, state: DemoState, create: Any, tick: Any) -> None:
    pf = state.portfolio
    ids = await _bounded(8, [create(c) for c in pf.clients])
    state.clients = {c.external_id: cid for c, cid in zip(pf.clients, ids, strict=True)}

    async def issue(c: DemoClient, inv: DemoInvoice) -> None:
        out = await api.issue_invoice(state.clients[c.external_id], inv)
        state.invoices[out["id"]] = Issued(
            out["id"],
            out["client_id"],
            inv.number,
            inv.currency,
            inv.due_date,
            int(out["total"]["amount_minor"]),
        )

    await _bounded(8, [issue(c, inv) for c in pf.clients for inv in c.invoices])
    by_number = {i.number: i for i in state.invoices.values()}
    for c in pf.clients:
        cid = state.clients[c.external_id]
        for inv in c.invoices:
            issued = by_number[inv.number]
            state.payments.extend(_payments_for(c, cid, issued))
    state.payments.sort(key=lambda p: p.on)


def _payments_for(c: DemoClient, client_id: str, inv: Issued) -> list[Payment]:
    if c.payer is PayerKind.NEVER:
        return []
    on = inv.due_date + timedelta(days=c.pay_delay_days)
    if c.payer is PayerKind.PARTIAL:
        first = inv.total_minor // 2
        return [
            Payment(on, client_id, inv.currency, first, (inv.invoice_id,), "partial"),
            Payment(on + timedelta(days=15), client_id, inv.currency, inv.total_minor - first,
                    (inv.invoice_id,), "rest of partial"),
        ]  # fmt: skip
    why = "on time" if c.payer is PayerKind.ON_TIME else "late"
    return [Payment(on, client_id, inv.currency, inv.total_minor, (inv.invoice_id,), why)]


def plan_scenarios(state: DemoState) -> None:
    """Pick clients for the scripted scenarios: disputes, a kept and a broken promise, a payment plan."""
    start = state.sim_today
    never = [c for c in state.portfolio.clients if c.payer is PayerKind.NEVER]
    late = [c for c in state.portfolio.clients if c.payer is PayerKind.LATE]
    by_client: dict[str, list[Issued]] = {}
    for inv in state.invoices.values():
        by_client.setdefault(inv.client_id, []).append(inv)

    def first_invoice(c: DemoClient) -> Issued:
        return min(by_client[state.clients[c.external_id]], key=lambda i: i.due_date)

    def owed(c: DemoClient) -> tuple[int, str]:
        invs = by_client[state.clients[c.external_id]]
        return sum(i.total_minor for i in invs), invs[0].currency

    if len(never) >= 5:
        for c, outcome, resolve_day in ((never[0], "rejected", 12), (never[1], "upheld", 15)):
            inv = first_invoice(c)
            state.scenarios.append(Scenario(start + timedelta(days=2), "dispute", inv.client_id,
                                            {"invoice": inv, "outcome": outcome,
                                             "resolve_on": start + timedelta(days=resolve_day)}))  # fmt: skip
        broken = never[2]
        amount, currency = owed(broken)
        state.scenarios.append(Scenario(start + timedelta(days=3), "promise", state.clients[broken.external_id],
                                        {"in_days": 8, "amount": amount, "currency": currency, "keep": False}))  # fmt: skip
        plan = never[3]
        amount, currency = owed(plan)
        parts = [amount // 3, amount // 3, amount - 2 * (amount // 3)]
        state.scenarios.append(Scenario(start + timedelta(days=4), "plan", state.clients[plan.external_id],
                                        {"parts": parts, "in_days": (10, 40, 70), "currency": currency}))  # fmt: skip
    if late:
        kept = late[0]
        amount, currency = owed(kept)
        state.scenarios.append(Scenario(start + timedelta(days=3), "promise", state.clients[kept.external_id],
                                        {"in_days": 10, "amount": amount, "currency": currency, "keep": True}))  # fmt: skip
        # The kept promise replaces that client's own late payments.
        cid = state.clients[kept.external_id]
        state.payments = [p for p in state.payments if p.client_id != cid or p.on < start]
    state.scenarios.sort(key=lambda s: s.on)


async def run_scenario(api: DemoApi, state: DemoState, s: Scenario) -> None:
    if s.what == "dispute":
        inv: Issued = s.data["invoice"]
        dispute_id = await api.open_dispute(inv.invoice_id, "billing_error", "demo: quantity disputed")
        state.log.append(f"{s.on}: dispute opened on {inv.number}")
        state.scenarios.append(Scenario(s.data["resolve_on"], "resolve", s.client_id,
                                        {"dispute_id": dispute_id, "outcome": s.data["outcome"], "invoice": inv}))  # fmt: skip
        state.scenarios.sort(key=lambda x: x.on)
    elif s.what == "resolve":
        inv = s.data["invoice"]
        await api.resolve_dispute(s.data["dispute_id"], s.data["outcome"], inv.total_minor // 4, inv.currency)
        state.log.append(f"{s.on}: dispute on {inv.number} {s.data['outcome']}")
    elif s.what == "promise":
        # Dates are relative to the day the scenario actually runs: the clock does not wait for the demo.
        today = state.sim_today
        on = today + timedelta(days=s.data["in_days"])
        await api.record_promise(s.client_id, on, s.data["amount"], s.data["currency"])
        state.log.append(
            f"{today}: promise to pay by {on} recorded ({'kept' if s.data['keep'] else 'will break'})"
        )
        if s.data["keep"]:
            state.payments.append(Payment(on - timedelta(days=1), s.client_id, s.data["currency"],
                                          s.data["amount"], (), "promise kept"))  # fmt: skip
            state.payments.sort(key=lambda p: p.on)
    elif s.what == "plan":
        today = state.sim_today
        installments = [
            (today + timedelta(days=d), part)
            for d, part in zip(s.data["in_days"], s.data["parts"], strict=True)
        ]
        await api.agree_plan(s.client_id, installments, s.data["currency"])
        state.log.append(f"{today}: payment plan agreed ({len(installments)} installments)")
        for on, amount in installments:
            state.payments.append(Payment(on, s.client_id, s.data["currency"], amount, (), "installment"))
        state.payments.sort(key=lambda p: p.on)


async def _pay(api: DemoApi, state: DemoState, p: Payment) -> None:
    """Send one payment; on failure it goes back in the queue for the next tick."""
    try:
        await api.pay(p)
    except (httpx.HTTPError, RuntimeError) as exc:
        state.errors += 1
        state.log.append(f"payment retried later: {exc}")
        state.payments.append(p)
        return
    state.collected[p.currency] += p.amount_minor


async def drive(api: DemoApi, state: DemoState, stop: asyncio.Event) -> None:
    """Each tick: read the simulated date; make the payments and scenarios that have come due."""
    while not stop.is_set():
        try:
            state.sim_today = (await api.sim_now()).date()
            due = [p for p in state.payments if p.on <= state.sim_today]
            state.payments = [p for p in state.payments if p.on > state.sim_today]
            await _bounded(8, [_pay(api, state, p) for p in due])
            state.payments.sort(key=lambda p: p.on)
            while state.scenarios and state.scenarios[0].on <= state.sim_today:
                await run_scenario(api, state, state.scenarios.pop(0))
        except (httpx.HTTPError, RuntimeError) as exc:
            state.errors += 1
            state.log.append(f"error: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


_SHOWN_EVENTS = (
    ("ar.dunning.case_opened.v1", "cases opened"),
    ("ar.dunning.reminder_requested.v1", "reminders requested"),
    ("ar.notify.sent.v1", "messages sent"),
    ("ar.dunning.manual_task_created.v1", "manual tasks created"),
    ("ar.dunning.promise_to_pay_broken.v1", "promises broken"),
    ("ar.dunning.agency_warning_issued.v1", "agency warnings"),
    ("ar.dunning.agency_handoff_requested.v1", "handed to the agency"),
    ("ar.dunning.resolved.v1", "cases resolved"),
)


async def count_events(state: DemoState, stop: asyncio.Event) -> None:
    """Count dunning and notify events as they happen, straight from the topics."""
    kafka = KafkaSettings(bootstrap_servers=state.stack.config.bootstrap_servers, client_id="ar-demo")
    consumer = make_consumer(kafka, None, auto_offset_reset="earliest")
    consumer.subscribe([kafka.topic(Topic.DUNNING_EVENTS), kafka.topic(Topic.NOTIFY_EVENTS)])
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError, TypeError):
                        state.events[json.loads(record.value)["type"]] += 1
    finally:
        await consumer.stop()


async def status_view(api: DemoApi, state: DemoState) -> Group:
    config = state.stack.config
    try:
        counts = await api.case_counts()
        tasks = await api.open_tasks()
    except (httpx.HTTPError, RuntimeError):
        counts, tasks = {}, -1
    mails = len(mail_files(config.mail_dir))
    table = Table(title=f"Simulated date: {state.sim_today:%A %d %B %Y}", expand=True)
    table.add_column("cases by state")
    table.add_column("count", justify="right")
    for name, n in sorted(counts.items()):
        table.add_row(name, str(n))
    money = ", ".join(f"{c} {v / 100:,.2f}" for c, v in sorted(state.collected.items())) or "-"
    facts = Table.grid(padding=(0, 2))
    for event_type, label in _SHOWN_EVENTS:
        facts.add_row(label, str(state.events[event_type]))
    facts.add_row("emails in var/mail", str(mails))
    facts.add_row("manual tasks open", str(tasks) if tasks >= 0 else "?")
    facts.add_row("money collected", money)
    facts.add_row("payments still to come", str(len(state.payments)))
    where = (
        f"API docs: {state.stack.urls()['invoice']}/docs  {state.stack.urls()['payment']}/docs  "
        f"{state.stack.urls()['dunning']}/docs  {state.stack.urls()['notify']}/docs\n"
        f"Mail: {config.mail_dir}  (uv run arctl mail list)   CLI: uv run arctl --help   "
        f"Credentials: {config.credentials_file}\nCtrl-C stops everything."
    )
    recent = "\n".join(state.log[-6:]) or "(scripted scenarios start on day 2)"
    return Group(
        table, facts, Panel(recent, title="recent scenario events"), Panel(where, title="where to look")
    )


async def reset_demo_state(config: StackConfig) -> None:
    """Each demo starts from nothing: drop the previous run's databases and mail (credentials are kept)."""
    for path in [*config.var.glob("*-svc.db*"), *mail_files(config.mail_dir)]:
        path.unlink(missing_ok=True)
    if config.database_url:
        import asyncpg  # type: ignore[import-untyped]
        from sqlalchemy.engine import make_url

        url = make_url(config.database_url)
        conn = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password, database="postgres"
        )
        try:
            for spec in config.services:
                await conn.execute(f'DROP DATABASE IF EXISTS "{spec.database}" WITH (FORCE)')
        finally:
            await conn.close()


async def run_demo(
    config: StackConfig,
    *,
    days_per_second: float = 1.0,
    clients: int = 200,
    invoices: int = 2000,
    seed: int = 7,
) -> None:
    """Start the stack, load the portfolio, run the payers and show the live status until cancelled (Ctrl-C)."""
    console = Console()
    await reset_demo_state(config)
    config.clock_speed = 1.0  # real time while loading; the demo speeds the shared clock up afterwards
    stack = await start_stack(config, progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    stop = asyncio.Event()
    clock = SharedSimulatedClock(config.var / "clock.json")
    try:
        clock.set_speed(0)  # paused while the portfolio loads, so payers and dunning agree on "day 0"
        async with httpx.AsyncClient(timeout=60) as http:
            api = DemoApi(stack, http)
            today = (await api.sim_now()).date()
            portfolio = build_portfolio(clients=clients, invoices=invoices, start=today, seed=seed)
            state = DemoState(stack, portfolio, today)
            console.print(
                f"loading {clients} clients and {portfolio.invoice_count} invoices through the REST API "
                "(the simulated clock is paused meanwhile) ..."
            )
            await load_portfolio(api, state, console)
            plan_scenarios(state)
            clock.set_speed(days_per_second * 86_400)
            console.print(f"loaded; the clock runs at {days_per_second:g} simulated day(s) per second.")
            driver = asyncio.create_task(drive(api, state, stop))
            counter = asyncio.create_task(count_events(state, stop))
            try:
                with Live(await status_view(api, state), console=console, refresh_per_second=2) as live:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 1)
                        live.update(await status_view(api, state))
            finally:
                stop.set()
                await driver
                await counter
    finally:
        console.print("stopping the stack ...")
        await asyncio.to_thread(stack.stop)
