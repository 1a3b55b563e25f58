"""The one Settings class of payment-svc (env prefix ``PAYMENT_``, nested delimiter ``__``)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ar_events.settings import DatabaseSettings, KafkaSettings, OutboxSettings


class AccountKind(StrEnum):
    STRIPE = "stripe"
    STANDARD = "standard"


class AccountSettings(BaseModel):
    """A processor account configured by settings, e.g. ``PAYMENT_ACCOUNTS='{"stripe": {...}}'``."""

    model_config = ConfigDict(extra="forbid")

    kind: AccountKind
    secrets: list[SecretStr] = Field(default_factory=list, description="Active signing secrets (whsec_...)")


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8002, ge=0, le=65535)


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tolerance_seconds: int = Field(
        default=300, ge=1, le=3600, description="Signed timestamp window, both ways"
    )
    secret_cache_seconds: float = Field(
        default=1.0, ge=0, description="How long a process reuses an account's secrets before re-reading them"
    )
    group_commit_max: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="Webhooks arriving together share one transaction, up to this many (1: one each)",
    )


class RelaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Run the outbox relay in `worker` and `all`")
    start_delay_seconds: float = Field(default=0.0, ge=0, description="Wait before publishing (fault tests)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_", env_nested_delimiter="__", extra="forbid")

    service_name: str = "payment-svc"
    database: DatabaseSettings = DatabaseSettings(url="sqlite+aiosqlite:///var/payment-svc.db")
    kafka: KafkaSettings = KafkaSettings()
    outbox: OutboxSettings = OutboxSettings()
    http: HttpSettings = HttpSettings()
    webhooks: WebhookSettings = WebhookSettings()
    relay: RelaySettings = RelaySettings()
    accounts: dict[str, AccountSettings] = Field(
        default_factory=dict,
        description="Processor accounts from configuration, added to those in the database",
    )
    log_level: str = "INFO"

    @field_validator("accounts")
    @classmethod
    def _account_names(cls, value: dict[str, AccountSettings]) -> dict[str, AccountSettings]:
        for name in value:
            if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"account name {name!r}: letters, digits, - and _ only, at most 64")
        return value
