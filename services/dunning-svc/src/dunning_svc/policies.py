"""Policy files: YAML validated at start-up (pydantic), turned into domain policies, versioned in the database.

A bad file stops the service with a message naming the file, the policy and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import time, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ar_events.events import SenderKind
from ar_events.money import CurrencyCode
from dunning_svc.domain import Policy, PolicyMatch, Step, StepAction

_DAYS = re.compile(r"^(-?\d+)d$")
_DURATION = re.compile(r"^(\d+)([dh])$")

Days = Annotated[str, Field(pattern=r"^-?\d+d$", examples=["-3d", "15d"])]
Duration = Annotated[str, Field(pattern=r"^\d+[dh]$", examples=["3d", "36h"])]


def _days(text: str) -> int:
    m = _DAYS.match(text)
    assert m is not None
    return int(m.group(1))


def _duration(text: str) -> timedelta:
    m = _DURATION.match(text)
    assert m is not None
    n = int(m.group(1))
    return timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n)


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: Days
    action: StepAction
    template: str | None = Field(default=None, min_length=1, max_length=64)
    sender: SenderKind = SenderKind.AR_MAILBOX
    assignee: str = Field(default="account_manager", pattern=r"^(account_manager|queue:[a-z0-9_-]+)$")
    sla: Duration | None = None
    deadline: Days | None = None

    @model_validator(mode="after")
    def _fits_action(self) -> StepSpec:
        messages = (StepAction.REMINDER, StepAction.AGENCY_WARNING)
        if self.action in messages and not self.template:
            raise ValueError(f"a {self.action.value} step needs a template")
        if self.action is not StepAction.MANUAL_TASK and self.sla is not None:
            raise ValueError("sla applies to manual_task steps only")
        if self.action is not StepAction.AGENCY_WARNING and self.deadline is not None:
            raise ValueError("deadline applies to agency_warning steps only")
        return self


class MatchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: str | list[str] | None = None
    tags_any: list[str] = []
    open_balance_at_least: dict[CurrencyCode, Annotated[int, Field(ge=0)]] = {}
    open_balance_below: dict[CurrencyCode, Annotated[int, Field(gt=0)]] = {}
    avg_payment_delay_days_at_least: float | None = None
    avg_payment_delay_days_below: float | None = None

    def to_domain(self) -> PolicyMatch:
        segments = [self.segment] if isinstance(self.segment, str) else (self.segment or [])
        return PolicyMatch(
            segments=frozenset(segments),
            tags_any=frozenset(self.tags_any),
            open_balance_at_least=tuple(sorted(self.open_balance_at_least.items())),
            open_balance_below=tuple(sorted(self.open_balance_below.items())),
            avg_payment_delay_at_least=self.avg_payment_delay_days_at_least,
            avg_payment_delay_below=self.avg_payment_delay_days_below,
        )


class BusinessHoursSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: time = time(9, 0)
    end: time = time(17, 0)

    @model_validator(mode="after")
    def _ordered(self) -> BusinessHoursSpec:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    match: MatchSpec = MatchSpec()
    #: further match rules; the policy applies when ``match`` or any of these fits
    match_any: list[MatchSpec] = []
    min_balance: dict[CurrencyCode, Annotated[int, Field(ge=0)]] = {}
    contact_gap: Duration = "3d"
    business_hours: BusinessHoursSpec = BusinessHoursSpec()
    promise_grace: Days = "2d"
    plan_grace: Days = "3d"
    queue: str = Field(default="collections", pattern=r"^[a-z0-9_-]+$")
    steps: list[StepSpec] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _ascending(cls, steps: list[StepSpec]) -> list[StepSpec]:
        ats = [_days(s.at) for s in steps]
        if ats != sorted(ats) or len(set(ats)) != len(ats):
            raise ValueError("steps must be in strictly ascending 'at' order")
        return steps

    def to_domain(self, version: int) -> Policy:
        return Policy(
            name=self.name,
            version=version,
            steps=tuple(
                Step(
                    at_days=_days(s.at),
                    action=s.action,
                    template=s.template,
                    sender=s.sender,
                    assignee=s.assignee,
                    sla=_duration(s.sla) if s.sla else None,
                    deadline_days=_days(s.deadline) if s.deadline else None,
                )
                for s in self.steps
            ),
            match=self.match.to_domain(),
            alternatives=tuple(m.to_domain() for m in self.match_any),
            min_balance=tuple(sorted(self.min_balance.items())),
            contact_gap=_duration(self.contact_gap),
            business_start=self.business_hours.start,
            business_end=self.business_hours.end,
            promise_grace_days=_days(self.promise_grace),
            plan_grace_days=_days(self.plan_grace),
            queue=self.queue,
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: list[PolicySpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_and_default(self) -> PolicyFile:
        names = [p.name for p in self.policies]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate policy names: {dupes}")
        if not any(p.match == MatchSpec() and not p.match_any for p in self.policies):
            raise ValueError("no default policy: the last policy should have no 'match' (a catch-all)")
        return self


class PolicyFileError(ValueError):
    """A policy file that cannot be used; the message names the file, the policy and the field."""


def default_policy_path() -> Path:
    return Path(str(resources.files("dunning_svc") / "policies.yaml"))


def load_policy_file(path: Path | None = None) -> list[PolicySpec]:
    """Read and validate a policy file, in file order (the first match wins)."""
    path = path or default_policy_path()
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read policy file: {exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path}: not valid YAML: {exc}") from None
    try:
        return PolicyFile.model_validate(raw).policies
    except ValidationError as exc:
        raise PolicyFileError(_describe(path, raw, exc)) from None


def _describe(path: Path, raw: Any, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:10]:
        loc = list(err["loc"])
        policy = "-"
        if len(loc) >= 2 and loc[0] == "policies" and isinstance(loc[1], int):
            try:
                policy = str(raw["policies"][loc[1]].get("name", f"#{loc[1]}"))
            except (KeyError, IndexError, TypeError, AttributeError):
                policy = f"#{loc[1]}"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc) or "(policy)"
        lines.append(f"{path}: policy {policy!r}, field {field!r}: {err['msg']}")
    return "invalid policy file:\n" + "\n".join(lines)
