"""Report figures against a hand-computed portfolio (README "Report formulas"), on PostgreSQL and SQLite.

EUR invoices (no tax), as of 2026-03-31:

| inv | client | issued     | due        | total  | paid                         | open on 03-31 | days past due | bucket |
|-----|--------|------------|------------|--------|------------------------------|---------------|---------------|--------|
| A1  | A      | 2026-01-01 | 2026-01-15 | 10,000 |                              | 10,000        | 75            | 61-90  |
| A2  | A      | 2026-03-01 | 2026-03-31 | 5,000  |                              | 5,000         | 0             | current|
| A3  | A      | 2026-02-01 | 2026-03-03 | 2,000  | 2,000 on 02-26 (5 days early)| 0             |               |        |
| B1  | B      | 2025-12-01 | 2025-12-15 | 20,000 |                              | 20,000        | 106           | 90+    |
| B2  | B      | 2026-02-20 | 2026-03-10 | 8,000  | 3,000 on 03-20 (10 days late)| 5,000         | 21            | 1-30   |
| C1  | C      | 2026-02-01 | 2026-02-20 | 4,000  |                              | 4,000         | 39            | 31-60  |
| C2  | C      | 2026-01-10 | 2026-01-20 | 6,000  | 6,000 on 01-30 (10 days late)| 0             |               |        |
plus B3 in USD: issued 2026-03-05, due 2026-04-04, 7,000, open (current).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from .conftest import Svc
from .test_api import pay

SPEC = [
    ("A1", "A", "2026-01-01", "2026-01-15", 10_000, "EUR"),
    ("A2", "A", "2026-03-01", "2026-03-31", 5_000, "EUR"),
    ("A3", "A", "2026-02-01", "2026-03-03", 2_000, "EUR"),
    ("B1", "B", "2025-12-01", "2025-12-15", 20_000, "EUR"),
    ("B2", "B", "2026-02-20", "2026-03-10", 8_000, "EUR"),
    ("C1", "C", "2026-02-01", "2026-02-20", 4_000, "EUR"),
    ("C2", "C", "2026-01-10", "2026-01-20", 6_000, "EUR"),
    ("B3", "B", "2026-03-05", "2026-04-04", 7_000, "USD"),
]
PAYMENTS = [("A3", 2_000, "2026-02-26"), ("B2", 3_000, "2026-03-20"), ("C2", 6_000, "2026-01-30")]
ZERO = {"current": 0, "1-30": 0, "31-60": 0, "61-90": 0, "90+": 0}


async def portfolio(svc: Svc) -> tuple[dict[str, str], dict[str, str]]:
    managers = {"A": ("Claire", "claire@example.com"), "B": ("Bob", "bob@example.com"),
                "C": ("Claire", "claire@example.com")}  # fmt: skip
    segments = {"A": "smb", "B": "enterprise", "C": "smb"}
    clients = {}
    for name in "ABC":
        c = await svc.client(name=f"Client {name}", segment=segments[name],
                             account_manager={"name": managers[name][0], "email": managers[name][1]})  # fmt: skip
        clients[name] = c["id"]
    invoices = {}
    for inv, cli, issued, due, total, cur in SPEC:
        body = {
            "number": inv, "currency": cur, "issue_date": issued, "due_date": due,
            "lines": [{"description": inv, "quantity": 1, "unit_price": {"amount_minor": total, "currency": cur}}],
        }  # fmt: skip
        invoices[inv] = (await svc.invoice(clients[cli], **body))["id"]
    for inv, amount, day in PAYMENTS:
        cli = next(s[1] for s in SPEC if s[0] == inv)
        await pay(svc, clients[cli], amount, f"pay_{inv}", invoice_ids=(invoices[inv],),
                  received_at=datetime.fromisoformat(day).replace(hour=10, tzinfo=UTC))  # fmt: skip
    return clients, invoices


def groups(report: dict[str, Any], currency: str) -> dict[str, dict[str, int]]:
    cur = next(c for c in report["currencies"] if c["currency"] == currency)
    return {g["key"]: g["buckets"] for g in cur["groups"]}


async def test_aging_by_client_manager_and_segment(svc: Svc) -> None:
    clients, _ = await portfolio(svc)
    a, b, c = clients["A"], clients["B"], clients["C"]
    rep = await svc.get("/v1/reports/aging", as_of="2026-03-31", group_by="client")
    assert rep["buckets"] == ["current", "1-30", "31-60", "61-90", "90+"]
    assert groups(rep, "EUR") == {
        a: {**ZERO, "current": 5_000, "61-90": 10_000},
        b: {**ZERO, "1-30": 5_000, "90+": 20_000},
        c: {**ZERO, "31-60": 4_000},
    }
    eur = next(x for x in rep["currencies"] if x["currency"] == "EUR")
    assert eur["totals"] == {"current": 5_000, "1-30": 5_000, "31-60": 4_000, "61-90": 10_000, "90+": 20_000}
    assert eur["total"] == 44_000
    assert [g["key"] for g in eur["groups"]] == [b, a, c]  # largest balance first
    assert groups(rep, "USD") == {b: {**ZERO, "current": 7_000}}
    seg = await svc.get("/v1/reports/aging", as_of="2026-03-31", group_by="segment")
    assert groups(seg, "EUR") == {
        "smb": {**ZERO, "current": 5_000, "31-60": 4_000, "61-90": 10_000},
        "enterprise": {**ZERO, "1-30": 5_000, "90+": 20_000},
    }
    am = await svc.get("/v1/reports/aging", as_of="2026-03-31", group_by="account_manager")
    assert groups(am, "EUR") == {
        "claire@example.com": {**ZERO, "current": 5_000, "31-60": 4_000, "61-90": 10_000},
        "bob@example.com": {**ZERO, "1-30": 5_000, "90+": 20_000},
    }


async def test_aging_as_of_an_earlier_date_uses_the_ledger(svc: Svc) -> None:
    clients, _ = await portfolio(svc)
    rep = await svc.get("/v1/reports/aging", as_of="2026-01-25", group_by="client")
    # A1 10 days late; B1 41 days; C2 5 days (paid only on 01-30); nothing else issued yet
    assert groups(rep, "EUR") == {
        clients["A"]: {**ZERO, "1-30": 10_000},
        clients["B"]: {**ZERO, "31-60": 20_000},
        clients["C"]: {**ZERO, "1-30": 6_000},
    }
    assert [c["currency"] for c in rep["currencies"]] == ["EUR"]


async def test_dso_countback_best_possible_add_and_cei(svc: Svc) -> None:
    await portfolio(svc)
    rep = await svc.get("/v1/reports/dso", as_of="2026-03-31", period_days=90, months=12)
    eur = next(c for c in rep["currencies"] if c["currency"] == "EUR")
    # receivables 44,000, current 5,000; sales 01-01..03-31 = 35,000; receivables on 12-31 = 20,000 (B1)
    assert (eur["receivables"], eur["current_receivables"], eur["sales_in_period"]) == (44_000, 5_000, 35_000)
    assert eur["beginning_receivables"] == 20_000
    assert eur["dso_standard"] == pytest.approx(113.14)  # 44,000 / 35,000 * 90
    assert eur["best_possible_dso"] == pytest.approx(12.86)  # 5,000 / 35,000 * 90
    assert eur["average_days_delinquent"] == pytest.approx(100.29)
    assert eur["cei_percent"] == pytest.approx(22.0)  # (20,000 + 35,000 - 44,000) / (20,000 + 35,000 - 5,000)
    # countback: Mar 5,000 (31 d), Feb 14,000 (28 d), Jan 16,000 (31 d), then 9,000 of Dec's 20,000 (31 d)
    assert eur["dso_countback"] == pytest.approx(103.95)
    usd = next(c for c in rep["currencies"] if c["currency"] == "USD")
    assert (usd["dso_countback"], usd["dso_standard"], usd["best_possible_dso"]) == (31.0, 90.0, 90.0)
    assert usd["average_days_delinquent"] == 0.0
    assert usd["cei_percent"] is None  # nothing was collectible


async def test_average_payment_delay_is_amount_weighted(svc: Svc) -> None:
    clients, invoices = await portfolio(svc)
    # A pays 8,000 more of A1 on 2026-02-04 (20 days late): (2,000 * -5 + 8,000 * 20) / 10,000 = 15.0
    await pay(svc, clients["A"], 8_000, "pay_A1", invoice_ids=(invoices["A1"],),
              received_at=datetime(2026, 2, 4, 9, tzinfo=UTC))  # fmt: skip
    rep = await svc.get("/v1/reports/payment-delay", as_of="2026-03-31")
    got = {
        (r["client_id"], r["currency"]): (r["cash_applied"], r["average_days_late"]) for r in rep["clients"]
    }
    assert got == {
        (clients["A"], "EUR"): (10_000, 15.0),
        (clients["B"], "EUR"): (3_000, 10.0),
        (clients["C"], "EUR"): (6_000, 10.0),
    }
    early = await svc.get("/v1/reports/payment-delay", as_of="2026-02-27")
    assert {r["client_id"]: r["average_days_late"] for r in early["clients"]} == {
        clients["A"]: 15.0, clients["C"]: 10.0,
    }  # fmt: skip


async def test_pareto_top_fifth_of_clients(svc: Svc) -> None:
    clients, _ = await portfolio(svc)
    rep = await svc.get("/v1/reports/pareto", as_of="2026-03-31")
    eur = next(c for c in rep["currencies"] if c["currency"] == "EUR")
    # overdue: A 10,000 (A2 is due that day), B 25,000, C 4,000 -> top ceil(3 * 0.2) = 1 client
    assert (eur["clients_with_overdue"], eur["top_count"], eur["top_overdue"], eur["total_overdue"]) == (
        3, 1, 25_000, 39_000,
    )  # fmt: skip
    assert eur["top_share"] == pytest.approx(0.641, abs=1e-4)
    assert [c["client_id"] for c in eur["top_clients"]] == [clients["B"]]
    assert [c["currency"] for c in rep["currencies"]] == ["EUR"]  # the USD invoice is not overdue
