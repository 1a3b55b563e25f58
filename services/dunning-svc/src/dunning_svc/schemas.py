"""Request and response bodies of the REST API."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ar_events.events import Installment, Person
from ar_events.jsontypes import IsoDate, JsonBool, JsonInt
from ar_events.money import Money, PositiveMoney


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromiseIn(_In):
    date: IsoDate
    amount: PositiveMoney
    grace_days: JsonInt | None = Field(default=None, ge=0, le=60)
    note: str | None = Field(default=None, max_length=2000)


class PlanIn(_In):
    installments: list[Installment] = Field(min_length=1, max_length=120)
    grace_days: JsonInt | None = Field(default=None, ge=0, le=60)
    note: str | None = Field(default=None, max_length=2000)


class DisputeDetail(_In):
    invoice_ids: list[str] = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


Outcome = Literal[
    "reached", "no_answer", "promise_to_pay", "dispute", "payment_plan", "wrong_contact", "skip"
]


class TaskCompleteIn(_In):
    outcome: Outcome
    note: str | None = Field(default=None, max_length=2000)
    completed_by: str | None = Field(default=None, max_length=320)
    promise_to_pay: PromiseIn | None = None
    dispute: DisputeDetail | None = None
    payment_plan: PlanIn | None = None


class TaskClaimIn(_In):
    collector: str | None = Field(
        default=None, max_length=320, description="Who takes it (default: the API key)"
    )
    force: JsonBool = False


class TaskAssignIn(_In):
    assignee: Person | None = None
    queue: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,64}$")


class HoldIn(_In):
    until: IsoDate | None = None
    note: str | None = Field(default=None, max_length=2000)


class ResumeIn(_In):
    note: str | None = Field(default=None, max_length=2000)


class ClockAdvanceIn(_In):
    days: JsonInt = Field(default=0, ge=0, le=3660)
    hours: JsonInt = Field(default=0, ge=0, le=100_000)
    seconds: JsonInt = Field(default=0, ge=0, le=10_000_000)


class TaskOut(BaseModel):
    task_id: str
    case_id: str
    client_id: str
    cycle: int
    kind: str
    step: int | None
    status: str
    assignee: Person | None
    queue: str | None
    priority: int
    sla_due_at: datetime | None
    client_name: str | None
    note: str | None
    created_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    completed_at: datetime | None
    completed_by: str | None
    outcome: str | None
    outcome_detail: str | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> TaskOut:
        assignee = (
            Person(name=row["assignee_name"] or row["assignee_email"], email=row["assignee_email"])
            if row["assignee_email"]
            else None
        )
        return cls(
            assignee=assignee, **{k: v for k, v in row.items() if k in cls.model_fields and k != "assignee"}
        )


class TimelineEntry(BaseModel):
    id: int
    at: datetime
    kind: str
    type: str
    cycle: int | None
    event_id: str | None
    data: dict[str, Any]

    @classmethod
    def of(cls, row: dict[str, Any]) -> TimelineEntry:
        return cls(id=row["id"], at=row["at"], kind=row["kind"], type=row["type"], cycle=row["cycle"],
                   event_id=row["event_id"], data=json.loads(row["data"]))  # fmt: skip


class CaseOut(BaseModel):
    case_id: str
    client_id: str
    state: str
    stage: str
    cycle: int
    level: int
    reached_step: int
    policy: str | None
    policy_version: int | None
    next_action_at: datetime | None
    opened_at: datetime | None
    last_message_at: datetime | None
    pause: dict[str, Any] | None
    promise: dict[str, Any] | None
    plan: dict[str, Any] | None
    blocking_task_id: str | None
    collector: Person | None
    disputed_by_collector: list[str]


class InvoiceOut(BaseModel):
    invoice_id: str
    number: str
    due_date: date
    amount_due: Money
    days_overdue: int
    disputed: bool


class BalancesOut(BaseModel):
    open: list[Money]
    overdue: list[Money] = Field(description="Overdue and undisputed, per currency")
    invoices: list[InvoiceOut]


class CaseDetailOut(CaseOut):
    balances: BalancesOut
    tasks: list[TaskOut]
    timeline: list[TimelineEntry]
    timeline_next_cursor: str | None


class CountsOut(BaseModel):
    by_state: dict[str, int]
    by_state_and_level: list[dict[str, Any]]
