"""The outbox's direct envelope encoding is byte for byte the codec's (ar_events.envelope.encode)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ar_events.envelope import decode, encode, new_event
from ar_events.events import (
    DunningResolved,
    DunningState,
    ManualTaskCreated,
    Person,
    ReminderRequested,
    ResolutionReason,
    Sender,
    SenderKind,
    StatementLine,
    StatementSnapshot,
    TaskKind,
)
from ar_events.money import Money
from dunning_svc.repository import encode_envelope

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)


def _reminder(client_id: str, name: str) -> ReminderRequested:
    eur = Money(amount_minor=250_000, currency="EUR")
    return ReminderRequested(
        client_id=client_id, case_id="case_1", cycle=1, notification_key="case_1:1:2", step=2, level=2,
        template="reminder-2", language="fr",
        sender=Sender(kind=SenderKind.AR_MAILBOX, name="Accounts Receivable", email="ar@example.com"),
        recipients=(Person(name=name, email="paul@example.com"),),
        statement=StatementSnapshot(
            as_of=date(2026, 3, 16),
            invoices=(StatementLine(invoice_id="inv_1", number="F-1", issue_date=None, due_date=date(2026, 3, 7),
                                    amount_due=eur, total=None, days_overdue=9, disputed=False),),
            totals=(eur,), overdue_totals=(eur,), oldest_overdue_invoice_id="inv_1", pay_link=None,
        ),
        requested_at=NOW,
    )  # fmt: skip


@pytest.mark.parametrize(
    "payload",
    [
        _reminder("cli_1", "Paul"),
        _reminder('cli "quoted" \\ back/slash', "Zoë Ünïcødé \u2028 \t tab"),
        DunningResolved(
            client_id="cli_2",
            case_id="case_2",
            cycle=3,
            reason=ResolutionReason.PAID,
            previous_state=DunningState.IN_COLLECTIONS,
            was_in_collections=True,
            resolved_at=datetime(2026, 3, 16, 10, 0, 0, 123456, tzinfo=UTC),
        ),
        ManualTaskCreated(
            client_id="cli_3",
            case_id="case_3",
            cycle=1,
            task_id="task_3_1",
            notification_key="case_3:1:task:task_3_1",
            kind=TaskKind.POLICY_STEP,
            step=3,
            assignee=None,
            queue="collections",
            priority=65,
            sla_due_at=None,
            client_name=None,
            overdue_totals=(),
            note=None,
            language="en",
            created_at=NOW,
        ),
    ],
)
@pytest.mark.parametrize("caused", [False, True])
def test_direct_encoding_is_the_codecs(payload: object, caused: bool) -> None:
    cause = new_event(_reminder("cli_0", "X"), source="ops", time=NOW) if caused else None
    env = new_event(payload, source="dunning-svc", time=NOW, caused_by=cause)  # type: ignore[type-var]
    assert encode_envelope(env) == encode(env)
    assert decode(encode_envelope(env)) == env


def test_times_in_other_offsets_keep_their_offset() -> None:
    from datetime import timedelta, timezone

    payload = _reminder("cli_1", "Paul")
    for t in (NOW, NOW.astimezone(timezone(timedelta(hours=1))), NOW):  # equal instants, different text
        env = new_event(payload, source="dunning-svc", time=t)
        assert encode_envelope(env) == encode(env)


def test_event_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    from dunning_svc.casework import _uuid4

    ids = [_uuid4() for _ in range(3000)]  # crosses a refill of the random pool
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, text)
