"""The only Settings class of dunning-svc (env prefix ``DUNNING_``, nested delimiter ``__``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ar_events.clock import Clock, SharedSimulatedClock, SimulatedClock, SystemClock
from ar_events.settings import ConsumerSettings, DatabaseSettings, KafkaSettings, OutboxSettings

SERVICE = "dunning-svc"


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8003, ge=0, le=65535)


class ClockSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["system", "simulated"] = "system"
    start: AwareDatetime | None = Field(default=None, description="Simulated clock start (default: now)")
    speed: float = Field(default=1.0, gt=0, description="Simulated seconds per real second")
    state_file: Path | None = Field(
        default=None,
        description="Simulated mode: keep the simulated time in this file, shared by every process of the "
        "stack and kept across restarts (the dev stack sets var/clock.json)",
    )

    def build(self) -> Clock:
        if self.mode == "system":
            return SystemClock()
        start = self.start or SystemClock().now()
        if self.state_file is not None:
            return SharedSimulatedClock.create(self.state_file, start=start, speed=self.speed)
        return SimulatedClock(start=start, speed=self.speed)


class SchedulerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    batch_size: int = Field(default=500, ge=1, le=10_000)
    poll_interval_ms: int = Field(default=1000, ge=10, description="Idle poll period (real time)")
    lanes: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Batches claimed and run at once, each in its own transaction (PostgreSQL; SQLite runs one):"
        " one batch's SQL runs while the next is decided",
    )


class MailboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "Accounts Receivable"
    email: EmailStr = "ar@example.com"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUNNING_", env_nested_delimiter="__", extra="forbid")

    database: DatabaseSettings = DatabaseSettings(url="sqlite+aiosqlite:///var/dunning.db")
    kafka: KafkaSettings = KafkaSettings()
    outbox: OutboxSettings = OutboxSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    http: HttpSettings = HttpSettings()
    clock: ClockSettings = ClockSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    ar_mailbox: MailboxSettings = MailboxSettings()
    policies_file: Path | None = Field(default=None, description="Policy YAML; the packaged set when absent")
    log_level: str = "INFO"
    consumer_group: str = "dunning-svc"
