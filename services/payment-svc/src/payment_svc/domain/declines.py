"""Decline codes: hard (do not retry the same instrument) or soft (a retry may succeed)."""

from __future__ import annotations

from ar_events.events import FailureKind

#: Stripe decline codes (and Stripe error codes) after which retrying the same card or account is pointless.
HARD_DECLINES = frozenset(
    {
        "account_closed",
        "bank_account_restricted",
        "card_not_supported",
        "currency_not_supported",
        "debit_not_authorized",
        "expired_card",
        "fraudulent",
        "incorrect_number",
        "incorrect_cvc",
        "invalid_account",
        "invalid_number",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "no_account",
        "pickup_card",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "stolen_card",
        "stop_payment_order",
        "transaction_not_allowed",
    }
)


def classify(decline_code: str | None) -> tuple[FailureKind, bool]:
    """``(failure kind, retry possible)`` for a decline code; unknown or missing codes count as soft."""
    if decline_code and decline_code.lower() in HARD_DECLINES:
        return FailureKind.HARD, False
    return FailureKind.SOFT, True
