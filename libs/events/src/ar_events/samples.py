"""One realistic example payload per type: used by the AsyncAPI examples and the round-trip tests."""

from __future__ import annotations

from typing import Any

from ar_events.events import ALL_TYPES, Payload

T = "2026-03-02T09:30:00Z"
EUR = "EUR"
CLIENT = "cli_01HQ3ZK8"


def _m(amount: int, currency: str = EUR) -> dict[str, Any]:
    return {"amount_minor": amount, "currency": currency}


_PROFILE: dict[str, Any] = {
    "client_id": CLIENT,
    "external_id": "ERP-10042",
    "name": "Boulangerie Martin SARL",
    "segment": "smb",
    "tags": ["bakery", "fr"],
    "account_manager": {"name": "Claire Dubois", "email": "claire.dubois@example.com"},
    "contacts": [{"name": "Paul Martin", "email": "paul@boulangerie-martin.example", "role": "billing"}],
    "language": "fr",
    "time_zone": "Europe/Paris",
    "country": "FR",
    "payment_terms_days": 30,
    "credit_limit": _m(500_000),
    "preferences": {"channels": ["email"], "payment_receipts": True},
}
# fmt: off
_STATEMENT: dict[str, Any] = {
    "as_of": "2026-03-02",
    "invoices": [
        {"invoice_id": "inv_1", "number": "F-2026-0017", "issue_date": "2026-01-15", "due_date": "2026-02-14",
         "amount_due": _m(120_000), "total": _m(120_000), "days_overdue": 16},
        {"invoice_id": "inv_2", "number": "F-2026-0031", "issue_date": "2026-02-01", "due_date": "2026-03-03",
         "amount_due": _m(45_050), "total": _m(45_050), "days_overdue": -1},
    ],
    "totals": [_m(165_050)],
    "overdue_totals": [_m(120_000)],
    "oldest_overdue_invoice_id": "inv_1",
    "pay_link": "https://pay.example.com/c/cli_01HQ3ZK8",
}
# fmt: on
_CASE: dict[str, Any] = {"client_id": CLIENT, "case_id": "case_7f3a", "cycle": 1}
_MESSAGE: dict[str, Any] = {
    **_CASE,
    "notification_key": "case_7f3a:1:2",
    "step": 2,
    "level": 2,
    "template": "overdue-2",
    "language": "fr",
    "sender": {"kind": "ar_mailbox", "name": "Comptabilité clients", "email": "ar@example.com"},
    "recipients": [{"name": "Paul Martin", "email": "paul@boulangerie-martin.example"}],
    "statement": _STATEMENT,
    "requested_at": T,
}

# fmt: off
SAMPLES: dict[str, dict[str, Any]] = {
    "ar.client.registered.v1": _PROFILE,
    "ar.client.updated.v1": {**_PROFILE, "segment": "high_risk"},
    "ar.invoice.issued.v1": {
        "client_id": CLIENT, "invoice_id": "inv_1", "number": "F-2026-0017", "currency": EUR,
        "issue_date": "2026-01-15", "due_date": "2026-02-14",
        "lines": [{"description": "Flour, 25 kg", "quantity": 40, "unit_price_minor": 2500, "tax_rate_bp": 2000,
                   "net": _m(100_000), "tax": _m(20_000)}],
        "subtotal": _m(100_000), "tax": _m(20_000), "total": _m(120_000), "amount_due": _m(120_000),
        "early_payment_discount": {"rate_bp": 200, "days": 10, "until": "2026-01-25", "amount": _m(2_400)},
        "pay_link": "https://pay.example.com/i/inv_1",
    },
    "ar.invoice.voided.v1": {"client_id": CLIENT, "invoice_id": "inv_1", "number": "F-2026-0017",
                             "reason": "issued twice", "voided_at": T},
    "ar.credit_note.issued.v1": {"client_id": CLIENT, "credit_note_id": "cn_1", "invoice_id": "inv_1",
                                 "amount": _m(20_000), "reason": "damaged goods", "amount_due_after": _m(100_000),
                                 "issued_at": T},
    "ar.invoice.payment_applied.v1": {"client_id": CLIENT, "payment_id": "pay_1", "invoice_id": "inv_1",
                                      "amount": _m(50_000), "amount_due_after": _m(70_000), "applied_at": T},
    "ar.invoice.paid.v1": {"client_id": CLIENT, "invoice_id": "inv_1", "number": "F-2026-0017",
                           "total": _m(120_000), "due_date": "2026-02-14", "paid_at": T, "days_late": 16},
    "ar.invoice.reopened.v1": {"client_id": CLIENT, "invoice_id": "inv_1", "number": "F-2026-0017",
                               "due_date": "2026-02-14", "amount_due_after": _m(120_000), "reason": "chargeback",
                               "payment_id": "pay_1", "reopened_at": T},
    "ar.dispute.opened.v1": {"client_id": CLIENT, "dispute_id": "dsp_1", "invoice_id": "inv_1",
                             "reason": "billing_error", "note": "quantity was 30, not 40", "opened_at": T},
    "ar.dispute.resolved.v1": {"client_id": CLIENT, "dispute_id": "dsp_1", "invoice_id": "inv_1",
                               "outcome": "upheld", "credit_note_id": "cn_1", "resolved_at": T},
    "ar.late_fee.charged.v1": {"client_id": CLIENT, "fee_id": "fee_1", "invoice_id": "inv_1",
                               "amount": _m(4_000), "amount_due_after": _m(124_000), "charged_at": T},
    "ar.payment.received.v1": {"client_id": CLIENT, "payment_id": "pay_1", "amount": _m(120_000),
                               "method": "card", "processor": "stripe", "reference": "pi_3OqX",
                               "invoice_ids": ["inv_1"], "received_at": T},
    "ar.payment.failed.v1": {"client_id": CLIENT, "payment_id": "pay_2", "amount": _m(45_050),
                             "method": "direct_debit", "processor": "standard:bank", "reference": "dd_981",
                             "decline_code": "insufficient_funds", "failure_kind": "soft", "retry_possible": True,
                             "failed_at": T},
    "ar.payment.refunded.v1": {"client_id": CLIENT, "refund_id": "re_1", "payment_id": "pay_1",
                               "amount": _m(20_000), "reason": "requested_by_customer", "refunded_at": T},
    "ar.chargeback.opened.v1": {"client_id": CLIENT, "chargeback_id": "dp_1", "payment_id": "pay_1",
                                "amount": _m(120_000), "reason": "fraudulent", "opened_at": T},
    "ar.chargeback.closed.v1": {"client_id": CLIENT, "chargeback_id": "dp_1", "payment_id": "pay_1",
                                "amount": _m(120_000), "outcome": "merchant_won", "closed_at": T},
    "ar.dunning.case_opened.v1": {**_CASE, "policy": "smb", "policy_version": 3,
                                  "overdue_totals": [_m(120_000)], "opened_at": T},
    "ar.dunning.reminder_requested.v1": _MESSAGE,
    "ar.dunning.agency_warning_issued.v1": {
        **_MESSAGE, "notification_key": "case_7f3a:1:5", "step": 5, "level": 4, "template": "final-notice",
        "sender": {"kind": "account_manager", "name": "Claire Dubois", "email": "claire.dubois@example.com"},
        "deadline": "2026-03-12",
    },
    "ar.dunning.manual_task_created.v1": {
        **_CASE, "task_id": "task_1", "notification_key": "case_7f3a:1:3:task", "kind": "policy_step", "step": 3,
        "assignee": {"name": "Claire Dubois", "email": "claire.dubois@example.com"}, "priority": 742,
        "sla_due_at": "2026-03-05T17:00:00Z", "client_name": "Boulangerie Martin SARL",
        "overdue_totals": [_m(120_000)], "case_url": "http://localhost:8003/v1/cases/cli_01HQ3ZK8",
        "created_at": T,
    },
    "ar.dunning.manual_task_completed.v1": {**_CASE, "task_id": "task_1", "outcome": "promise_to_pay",
                                            "note": "will pay Friday", "completed_by": "claire",
                                            "completed_at": T},
    "ar.dunning.agency_handoff_requested.v1": {**_CASE, "step": 6, "statement": _STATEMENT, "requested_at": T},
    "ar.dunning.paused.v1": {**_CASE, "reason": "promise_to_pay", "until": "2026-03-09", "paused_at": T},
    "ar.dunning.resumed.v1": {**_CASE, "previous_reason": "promise_to_pay", "why": "promise_broken",
                              "resumed_at": T},
    "ar.dunning.promise_to_pay_recorded.v1": {**_CASE, "promise_id": "ptp_1", "promised_date": "2026-03-06",
                                              "amount": _m(120_000), "grace_days": 3, "recorded_at": T},
    "ar.dunning.promise_to_pay_broken.v1": {**_CASE, "promise_id": "ptp_1", "promised_date": "2026-03-06",
                                            "amount": _m(120_000), "paid": _m(0), "broken_at": T},
    "ar.dunning.payment_plan_agreed.v1": {
        **_CASE, "plan_id": "plan_1", "grace_days": 3,
        "installments": [{"due_date": "2026-03-15", "amount": _m(60_000)},
                         {"due_date": "2026-04-15", "amount": _m(60_000)}],
        "agreed_at": T,
    },
    "ar.dunning.installment_missed.v1": {**_CASE, "plan_id": "plan_1", "installment": 0, "due_date": "2026-03-15",
                                         "amount": _m(60_000), "paid": _m(10_000), "missed_at": T},
    "ar.dunning.resolved.v1": {**_CASE, "reason": "paid", "previous_state": "in_collections",
                               "was_in_collections": True, "resolved_at": T},
    "ar.dunning.command.pause.v1": {"client_id": CLIENT, "reason": "hold", "until": "2026-03-20",
                                    "note": "CFO asked for two weeks", "requested_by": "ops@example.com"},
    "ar.dunning.command.resume.v1": {"client_id": CLIENT, "requested_by": "ops@example.com"},
    "ar.dunning.command.escalate_now.v1": {"client_id": CLIENT, "note": "fraud suspicion",
                                           "requested_by": "ops@example.com"},
    "ar.dunning.command.record_promise_to_pay.v1": {"client_id": CLIENT, "promised_date": "2026-03-06",
                                                    "amount": _m(120_000), "grace_days": 2},
    "ar.dunning.command.agree_payment_plan.v1": {
        "client_id": CLIENT, "installments": [{"due_date": "2026-03-15", "amount": _m(60_000)},
                                              {"due_date": "2026-04-15", "amount": _m(60_000)}],
    },
    "ar.dunning.command.assign_collector.v1": {"client_id": CLIENT,
                                               "collector": {"name": "Sam Okafor", "email": "sam@example.com"}},
    "ar.notify.sent.v1": {"client_id": CLIENT, "notification_id": "ntf_1", "notification_key": "case_7f3a:1:2",
                          "channel": "email", "template": "overdue-2", "recipient": "paul@boulangerie-martin.example",
                          "case_id": "case_7f3a", "cycle": 1, "step": 2, "message_id": "<ntf_1@ar.example.com>",
                          "source_event_id": "6c1c2f0e-7f0a-4d4b-9f55-0d8c8f0e2a11", "sent_at": T},
    "ar.notify.failed.v1": {"client_id": CLIENT, "notification_id": "ntf_2", "notification_key": "case_7f3a:1:2",
                            "channel": "email", "template": "overdue-2", "recipient": "old@boulangerie-martin.example",
                            "case_id": "case_7f3a", "cycle": 1, "step": 2, "permanent": True,
                            "reason": "550 5.1.1 mailbox unavailable", "error_code": "550",
                            "source_event_id": "6c1c2f0e-7f0a-4d4b-9f55-0d8c8f0e2a11", "failed_at": T},
}
# fmt: on


def sample_payload(cls: type[Payload]) -> dict[str, Any]:
    """The example payload of a type, as JSON-ready data."""
    return SAMPLES[cls.TYPE]


assert set(SAMPLES) == {c.TYPE for c in ALL_TYPES}, "every type needs a sample"
