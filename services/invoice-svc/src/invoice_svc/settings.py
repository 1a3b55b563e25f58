"""The only Settings class of invoice-svc (env prefix ``INVOICE_``, nested delimiter ``__``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ar_events.clock import Clock, SimulatedClock, SystemClock
from ar_events.settings import ConsumerSettings, DatabaseSettings, KafkaSettings, OutboxSettings

SERVICE = "invoice-svc"


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)


class ClockSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["system", "simulated"] = "system"
    start: AwareDatetime | None = Field(default=None, description="Simulated clock start (default: now)")
    speed: float = Field(default=1.0, gt=0)

    def build(self) -> Clock:
        if self.mode == "system":
            return SystemClock()
        return SimulatedClock(start=self.start or SystemClock().now(), speed=self.speed)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVOICE_", env_nested_delimiter="__", extra="forbid")

    database: DatabaseSettings = DatabaseSettings(url="sqlite+aiosqlite:///var/invoice.db")
    kafka: KafkaSettings = KafkaSettings()
    outbox: OutboxSettings = OutboxSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    http: HttpSettings = HttpSettings()
    clock: ClockSettings = ClockSettings()
    log_level: str = "INFO"
    consumer_group: str = "invoice-svc"
    pay_link_base: str | None = Field(
        default=None, description="e.g. https://pay.example.com/i/ (+ invoice id)"
    )
