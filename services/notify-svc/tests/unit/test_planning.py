"""From events to notification requests: recipients, channels, keys (pure)."""

from __future__ import annotations

from ar_events.events import (
    AgencyWarningIssued,
    Channel,
    ClientRegistered,
    InvoiceIssued,
    ManualTaskCreated,
    PaymentReceived,
    ReminderRequested,
)
from ar_events.samples import sample_payload
from notify_svc.domain.notifications import (
    Contact,
    Kind,
    message_id,
    notification_id,
    plan_invoice_notice,
    plan_message_request,
    plan_receipt,
    plan_task,
)


def _contact(**prefs: object) -> Contact:
    data = sample_payload(ClientRegistered)
    data = {**data, "preferences": {**data["preferences"], **prefs}}
    return Contact.from_profile(ClientRegistered.model_validate(data))


def test_reminder_goes_to_every_recipient_on_the_event_channels() -> None:
    data = {
        **sample_payload(ReminderRequested),
        "recipients": [{"name": "A", "email": "A@x.example"}, {"name": "B", "email": "b@x.example"}],
        "channels": ["email", "webhook"],
        "webhook_url": "https://hooks.example/ar",
    }
    plan = plan_message_request(ReminderRequested.model_validate(data), None)
    assert [(r.channel, r.recipient) for r in plan.requests] == [
        (Channel.EMAIL, "a@x.example"),
        (Channel.EMAIL, "b@x.example"),
        (Channel.WEBHOOK, "https://hooks.example/ar"),
    ]
    assert {r.key for r in plan.requests} == {data["notification_key"]}
    assert plan.requests[0].kind == Kind.REMINDER


def test_webhook_channel_without_url_is_rejected_not_dropped() -> None:
    data = {**sample_payload(ReminderRequested), "channels": ["webhook"]}
    plan = plan_message_request(ReminderRequested.model_validate(data), None)
    assert plan.requests == ()
    assert plan.rejections[0].error_code == "no_webhook_url"


def test_agency_warning_keeps_the_account_manager_as_sender() -> None:
    event = AgencyWarningIssued.model_validate(sample_payload(AgencyWarningIssued))
    plan = plan_message_request(event, _contact())
    req = plan.requests[0]
    assert req.kind == Kind.AGENCY_WARNING
    assert (req.sender_kind, req.sender_email) == ("account_manager", "claire.dubois@example.com")
    assert req.client_name == "Boulangerie Martin SARL"


def test_invoice_notice_follows_client_preferences() -> None:
    event = InvoiceIssued.model_validate(sample_payload(InvoiceIssued))
    plan = plan_invoice_notice(event, _contact(channels=["webhook"], webhook_url="https://h.example/x"))
    assert [r.channel for r in plan.requests] == [Channel.WEBHOOK]
    assert plan.requests[0].key == "invoice:inv_1:issued"
    assert plan_invoice_notice(event, None).rejections[0].error_code == "no_contact"


def test_receipt_only_when_wanted() -> None:
    event = PaymentReceived.model_validate(sample_payload(PaymentReceived))
    assert plan_receipt(event, _contact(payment_receipts=False)).requests == ()
    assert len(plan_receipt(event, _contact(payment_receipts=True)).requests) == 1


def test_task_goes_to_the_assignee_and_not_to_a_queue() -> None:
    event = ManualTaskCreated.model_validate(sample_payload(ManualTaskCreated))
    assert plan_task(event, None).requests[0].recipient == "claire.dubois@example.com"
    queued = ManualTaskCreated.model_validate(
        {**sample_payload(ManualTaskCreated), "assignee": None, "queue": "ar"}
    )
    assert plan_task(queued, None).requests == ()


def test_ids_are_deterministic() -> None:
    assert notification_id("k", "email", "a@x") == notification_id("k", "email", "a@x")
    assert notification_id("k", "email", "a@x") != notification_id("k", "email", "b@x")
    assert message_id("ntf_1", 0, "d.example") == "<ntf_1.0@d.example>"
