"""Builders shared by the domain tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from ar_events.events import ClientProfile, Contact, Person, SenderKind
from dunning_svc.domain import (
    BusinessCalendar,
    Context,
    DunningCase,
    Ledger,
    OpenInvoice,
    Policy,
    Step,
    StepAction,
)

CLIENT = "cli_1"


def ladder_policy(version: int = 1, name: str = "smb-standard", gap_days: int = 3) -> Policy:
    """The ladder of design.md section 5."""
    return Policy(
        name=name,
        version=version,
        min_balance=(("EUR", 1000), ("USD", 1000)),
        contact_gap=timedelta(days=gap_days),
        business_start=time(0, 0),
        business_end=time(23, 59, 59),
        steps=(
            Step(-3, StepAction.REMINDER, template="upcoming"),
            Step(1, StepAction.REMINDER, template="overdue-1"),
            Step(8, StepAction.REMINDER, template="overdue-2"),
            Step(15, StepAction.MANUAL_TASK, sla=timedelta(days=3)),
            Step(30, StepAction.AGENCY_WARNING, template="final-notice", deadline_days=10,
                 sender=SenderKind.ACCOUNT_MANAGER),
            Step(40, StepAction.AGENCY_HANDOFF),
        ),
    )  # fmt: skip


def profile(**kw: object) -> ClientProfile:
    base: dict[str, object] = {
        "client_id": CLIENT,
        "external_id": "ERP-1",
        "name": "Boulangerie Martin",
        "segment": "smb",
        "contacts": (Contact(name="Paul", email="paul@example.com"),),
        "account_manager": Person(name="Claire", email="claire@example.com"),
        "time_zone": "UTC",
        "country": "FR",
    }
    base.update(kw)
    return ClientProfile.model_validate(base)


def inv(
    invoice_id: str, due: date, amount: int, currency: str = "EUR", disputed: bool = False
) -> OpenInvoice:
    return OpenInvoice(invoice_id, f"F-{invoice_id}", currency, due, amount, disputed=disputed)


def ledger(*invoices: OpenInvoice, prof: ClientProfile | None = None) -> Ledger:
    return Ledger(client_id=CLIENT, profile=prof or profile(), invoices=tuple(invoices))


def ctx(led: Ledger, policy: Policy | None = None, cal: BusinessCalendar | None = None) -> Context:
    p = policy or ladder_policy()
    return Context(
        ledger=led, policy=p, new_cycle_policy=p, calendar=cal or BusinessCalendar(weekend=frozenset())
    )


def at(d: date, hour: int = 10) -> datetime:
    return datetime.combine(d, time(hour), UTC)


def new_case() -> DunningCase:
    return DunningCase.new(CLIENT)
