"""PolicyBook.select remembers its choice per (segment, tags, open balances, payment delay): always the same
policy as select_policy would pick."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from dunning_svc.domain import Ledger, OpenInvoice, select_policy
from dunning_svc.policies import default_policy_path, load_policy_file
from dunning_svc.policybook import PolicyBook

from .helpers import CLIENT, profile

START_DAY = date(2026, 3, 2)

BOOK = PolicyBook.from_specs(load_policy_file(default_policy_path()))

ledgers = st.builds(
    lambda segment, tags, amounts, delay, has_profile: Ledger(
        CLIENT,
        profile(segment=segment, tags=tuple(tags)) if has_profile else None,
        tuple(
            OpenInvoice(f"i{n}", f"F{n}", cur, START_DAY, amount) for n, (cur, amount) in enumerate(amounts)
        ),
        delay,
    ),
    st.sampled_from(["smb", "enterprise", "high_risk", "public"]),
    st.lists(st.sampled_from(["high_risk", "vip", "key_account"]), max_size=2, unique=True),
    st.lists(st.tuples(st.sampled_from(["EUR", "USD"]), st.integers(1, 20_000_000)), max_size=3),
    st.none() | st.floats(0, 90),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ledgers, min_size=1, max_size=6))
def test_the_remembered_choice_is_select_policys(batch: list[Ledger]) -> None:
    for ledger in batch + batch:  # the second pass answers from memory
        expected = select_policy(
            BOOK.current, ledger.profile, ledger.open_balances(), ledger.avg_payment_delay
        )
        assert BOOK.select(ledger) is expected
