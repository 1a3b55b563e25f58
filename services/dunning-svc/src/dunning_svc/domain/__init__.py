"""The pure dunning domain: no I/O, no clock reads. Imports only the standard library and ar_events types."""

from dunning_svc.domain.calendar import BusinessCalendar, next_business_moment
from dunning_svc.domain.machine import (
    TaskCompletion,
    agree_plan,
    assign_collector,
    complete_task,
    count_payment,
    escalate_now,
    next_action_at,
    notification_key,
    on_ledger_changed,
    on_notification_failed,
    on_payment_applied,
    on_tick,
    pause,
    record_promise,
    resume,
    statement,
    tick_fast,
)
from dunning_svc.domain.model import (
    BlockingTask,
    Context,
    Decision,
    DunningCase,
    Ledger,
    OpenInvoice,
    Pause,
    Plan,
    PlanInstallment,
    Promise,
    Rejected,
    case_id_for,
)
from dunning_svc.domain.policy import Policy, PolicyMatch, Step, StepAction, select_policy

__all__ = [
    "BlockingTask", "BusinessCalendar", "Context", "Decision", "DunningCase", "Ledger", "OpenInvoice", "Pause",
    "Plan", "PlanInstallment", "Policy", "PolicyMatch", "Promise", "Rejected", "Step", "StepAction",
    "TaskCompletion", "agree_plan", "assign_collector", "case_id_for", "complete_task", "count_payment", "escalate_now",
    "next_action_at", "next_business_moment", "notification_key", "on_ledger_changed", "on_notification_failed",
    "on_payment_applied", "on_tick", "pause", "record_promise", "resume", "select_policy", "statement", "tick_fast",
]  # fmt: skip
