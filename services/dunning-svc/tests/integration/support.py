"""Shared helpers of the dunning-svc integration tests: settings, the service under test, payload builders."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx

from ar_events.clock import ManualClock
from ar_events.envelope import Envelope, new_event
from ar_events.events import ClientRegistered, InvoiceIssued, InvoicePaid, InvoicePaymentApplied, Payload
from ar_events.money import Money
from ar_events.settings import ConsumerSettings, DatabaseSettings, KafkaSettings
from ar_web import create_api_key
from dunning_svc.__main__ import migrate
from dunning_svc.api import create_app
from dunning_svc.bootstrap import Runtime
from dunning_svc.settings import ClockSettings, SchedulerSettings, Settings

#: Monday 2 March 2026, 10:00 in Paris
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def settings_for(url: str, kafka: KafkaSettings | None = None, **kw: Any) -> Settings:
    kw.setdefault("clock", ClockSettings(mode="simulated"))
    return Settings(
        database=DatabaseSettings(url=url),
        kafka=kafka or KafkaSettings(),
        scheduler=SchedulerSettings(poll_interval_ms=50),
        consumer=ConsumerSettings(max_attempts=2, retry_initial_ms=10, retry_max_ms=50),
        **kw,
    )


@dataclass
class Svc:
    runtime: Runtime
    http: httpx.AsyncClient
    clock: ManualClock
    keys: dict[str, str]

    async def feed(self, *payloads: Payload) -> None:
        """Apply events through the same path as the consumer (one transaction), without a broker."""
        rt = self.runtime
        assert rt.work is not None
        inputs: dict[str, list[Envelope[Any]]] = {}
        for p in payloads:
            inputs.setdefault(p.client_id, []).append(new_event(p, source="test", time=self.clock.now()))
        async with rt.sessionmaker() as session, session.begin():
            await rt.work.apply(session, inputs, self.clock.now())


async def start_service(
    url: str, kafka: KafkaSettings | None = None, parts: tuple[str, ...] = (), **kw: Any
) -> Svc:
    settings = settings_for(url, kafka, **kw)
    if url.startswith("sqlite"):
        await asyncio.to_thread(migrate, settings)
    clock = ManualClock(T0)
    app = create_app(settings, clock=clock, background=parts)
    runtime: Runtime = app.state.runtime
    await runtime.start(parts)
    keys = {}
    async with runtime.sessionmaker() as session:
        keys["all"] = await create_api_key(session, "all", "collections:write,ops")
        keys["read"] = await create_api_key(session, "reader", "reports:read")
        await session.commit()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dunning.test",
                             headers={"Authorization": f"Bearer {keys['all']}"})  # fmt: skip
    return Svc(runtime=runtime, http=http, clock=clock, keys=keys)


# ------------------------------------------------------------------------------------------ payloads


def client(cid: str, segment: str = "smb", **kw: Any) -> ClientRegistered:
    body: dict[str, Any] = {
        "client_id": cid, "external_id": f"ERP-{cid}", "name": f"Client {cid}", "segment": segment,
        "account_manager": {"name": "Claire Dubois", "email": "claire@example.com"},
        "contacts": [{"name": "Paul", "email": "paul@example.com", "role": "billing"},
                     {"name": "Tech", "email": "tech@example.com", "role": "technical"}],
        "language": "fr", "time_zone": "Europe/Paris", "country": "FR",
    }  # fmt: skip
    body.update(kw)
    return ClientRegistered.model_validate(body)


def invoice(cid: str, iid: str, due: date, amount: int, currency: str = "EUR") -> InvoiceIssued:
    m = Money(amount_minor=amount, currency=currency)
    return InvoiceIssued(client_id=cid, invoice_id=iid, number=f"F-{iid}", currency=currency,
                         issue_date=date(2026, 1, 1), due_date=due, subtotal=m, tax=Money.zero(currency), total=m,
                         amount_due=m)  # fmt: skip


def paid(
    cid: str, iid: str, amount: int, after: int, at: datetime, currency: str = "EUR"
) -> InvoicePaymentApplied:
    return InvoicePaymentApplied(client_id=cid, payment_id=f"pay-{iid}-{after}", invoice_id=iid,
                                 amount=Money(amount_minor=amount, currency=currency),
                                 amount_due_after=Money(amount_minor=after, currency=currency), applied_at=at)  # fmt: skip


def settled(cid: str, iid: str, total: int, due: date, at: datetime) -> InvoicePaid:
    return InvoicePaid(client_id=cid, invoice_id=iid, number=f"F-{iid}", total=Money(amount_minor=total, currency="EUR"),
                       due_date=due, paid_at=at, days_late=(at.date() - due).days)  # fmt: skip
