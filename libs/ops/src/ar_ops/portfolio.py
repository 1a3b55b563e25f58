"""A deterministic demo portfolio: clients in three segments, invoices in two currencies, and how each pays.

Pure data (no I/O): the demo loader turns it into REST calls and signed webhooks, and the whole-system
benchmark reuses it. The same seed gives the same portfolio.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum

SEGMENTS = (("smb", 0.6), ("enterprise", 0.25), ("high_risk", 0.15))
CURRENCIES = (("EUR", 0.7), ("USD", 0.3))
COUNTRIES = {
    "EUR": (("FR", "fr", "Europe/Paris"), ("DE", "de", "Europe/Berlin")),
    "USD": (("US", "en", "America/New_York"),),
}
_FIRST = (
    "Martin",
    "Schmidt",
    "Dubois",
    "Weber",
    "Smith",
    "Garcia",
    "Bernard",
    "Fischer",
    "Johnson",
    "Moreau",
)
_KIND = (
    "Bakery",
    "Logistics",
    "Studio",
    "Consulting",
    "Hardware",
    "Clinic",
    "Foods",
    "Print",
    "Labs",
    "Garage",
)
_MANAGERS = (
    ("Claire Dubois", "claire.dubois@ar-demo.example"),
    ("Jonas Becker", "jonas.becker@ar-demo.example"),
    ("Maya Patel", "maya.patel@ar-demo.example"),
)
_ITEMS = (
    "Consulting hours",
    "Monthly subscription",
    "Hardware lease",
    "Support plan",
    "Delivery",
    "Licences",
)


class PayerKind(StrEnum):
    ON_TIME = "on_time"  # pays a few days before the due date
    LATE = "late"  # pays 5-45 days after the due date
    PARTIAL = "partial"  # pays part late, the rest later still
    NEVER = "never"  # does not pay: the ladder runs to the agency warning


@dataclass(frozen=True)
class DemoInvoice:
    number: str
    currency: str
    issue_date: date
    due_date: date
    lines: tuple[tuple[str, int, int, int], ...]  # description, quantity, unit price minor, tax rate bp


@dataclass(frozen=True)
class DemoClient:
    external_id: str
    name: str
    segment: str
    currency: str
    country: str
    language: str
    time_zone: str
    contact_email: str
    account_manager: tuple[str, str]
    payer: PayerKind
    pay_delay_days: int  # relative to due date; negative = early
    invoices: tuple[DemoInvoice, ...] = field(default=())


@dataclass(frozen=True)
class Portfolio:
    start: date  # the simulated "today" when the demo starts
    clients: tuple[DemoClient, ...]

    @property
    def invoice_count(self) -> int:
        return sum(len(c.invoices) for c in self.clients)


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _payer(rng: random.Random, segment: str) -> tuple[PayerKind, int]:
    """Most pay on time, some late, a few never; high-risk clients lean late."""
    late_bias = {"smb": 0.0, "enterprise": -0.05, "high_risk": 0.2}[segment]
    roll = rng.random()
    if roll < 0.62 - late_bias:
        return PayerKind.ON_TIME, -rng.randint(0, 5)
    if roll < 0.86 - late_bias / 2:
        return PayerKind.LATE, rng.randint(5, 45)
    if roll < 0.94:
        return PayerKind.PARTIAL, rng.randint(3, 20)
    return PayerKind.NEVER, 10_000


def build_portfolio(*, clients: int = 200, invoices: int = 2000, start: date, seed: int = 7) -> Portfolio:
    """``clients`` clients sharing ``invoices`` invoices issued over the 75 days before ``start``."""
    rng = random.Random(seed)
    out: list[DemoClient] = []
    per_client = [1] * clients
    for _ in range(max(0, invoices - clients)):
        per_client[rng.randrange(clients)] += 1
    for i in range(clients):
        segment = _pick(rng, SEGMENTS)
        currency = _pick(rng, CURRENCIES)
        country, language, tz = rng.choice(COUNTRIES[currency])
        payer, delay = _payer(rng, segment)
        terms = {"smb": 30, "enterprise": 45, "high_risk": 14}[segment]
        name = f"{rng.choice(_FIRST)} {rng.choice(_KIND)} {i:03d}"
        slug = name.lower().replace(" ", "-")
        scale = {"smb": 1, "enterprise": 8, "high_risk": 1}[segment]
        bills = []
        for n in range(per_client[i]):
            issue = start - timedelta(days=rng.randint(0, 75))
            lines = tuple(
                (
                    rng.choice(_ITEMS),
                    rng.randint(1, 20),
                    rng.randint(20, 400) * 100 * scale,
                    rng.choice((0, 550, 2000)),
                )
                for _ in range(rng.randint(1, 3))
            )
            bills.append(
                DemoInvoice(f"DEMO-{i:03d}-{n:03d}", currency, issue, issue + timedelta(days=terms), lines)
            )
        out.append(
            DemoClient(
                external_id=f"DEMO-{i:04d}",
                name=name,
                segment=segment,
                currency=currency,
                country=country,
                language=language,
                time_zone=tz,
                contact_email=f"billing@{slug}.example",
                account_manager=_MANAGERS[i % len(_MANAGERS)],
                payer=payer,
                pay_delay_days=delay,
                invoices=tuple(sorted(bills, key=lambda b: b.issue_date)),
            )
        )
    return Portfolio(start=start, clients=tuple(out))
