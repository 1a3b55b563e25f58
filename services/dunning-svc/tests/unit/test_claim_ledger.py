"""The scheduler's claim builds each client's ledger straight from its invoice rows: the same ledger as
projection.ledger_of over the projection records of those rows."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from dunning_svc import repository as repo
from dunning_svc.projection import ClientRecord, ledger_of

from .helpers import CLIENT, profile

DAY = date(2026, 3, 2)

rows = st.lists(
    st.tuples(
        st.sampled_from(["open", "paid", "voided"]),
        st.integers(-5, 300_000),
        st.none() | st.integers(-30, 30).map(lambda d: DAY + timedelta(days=d)),
        st.sampled_from(["[]", '["d1"]', '["d1", "d2"]']),
        st.sampled_from([None, "", "https://pay.example.com/a", "https://pay.example.com/b"]),
        st.sampled_from(["EUR", "USD"]),
        st.none() | st.integers(0, 300_000),
    ),
    max_size=6,
).map(
    lambda items: [
        (
            f"inv_{n:02d}_{7 - n}",
            f"F-{n}",
            cur,
            DAY - timedelta(days=40),
            due,
            total,
            amount,
            status,
            disputes,
            link,
        )
        for n, (status, amount, due, disputes, link, cur, total) in enumerate(items)
    ][::-1]  # rows arrive in no particular order
)


@settings(max_examples=300, deadline=None)
@given(rows=rows, late=st.integers(0, 100), paid=st.integers(0, 5), known=st.booleans())
def test_the_claims_ledger_is_ledger_of(
    rows: list[tuple[object, ...]], late: int, paid: int, known: bool
) -> None:
    prof = profile() if known else None
    client = ClientRecord(CLIENT, prof, late, paid) if known else ClientRecord(CLIENT)
    invoices = {r[0]: repo._invoice_of(CLIENT, r) for r in rows}
    delay = client.avg_payment_delay
    assert repo._claimed_ledger(CLIENT, prof, delay, rows) == ledger_of(client, invoices)
