"""The one Settings class of notify-svc (env prefix ``NOTIFY_``, nested delimiter ``__``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ar_events.settings import ConsumerSettings, DatabaseSettings, KafkaSettings, OutboxSettings


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8004
    public_url: str = Field(default="http://localhost:8004", description="Base URL used in links")


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 1025
    from_address: str = Field(
        default="ar@example.com", description="The AR mailbox: envelope sender and From"
    )
    from_name: str = "Accounts Receivable"
    starttls: bool = False
    use_tls: bool = Field(default=False, description="Implicit TLS (port 465 style)")
    validate_certs: bool = True
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    pool_size: int = Field(default=2, ge=1, le=32, description="Connections kept open per process")
    message_id_domain: str = Field(
        default="notify.ar.example.com", description="Right-hand side of Message-IDs"
    )
    quick_retries: int = Field(default=3, ge=1, description="tenacity attempts within one delivery attempt")
    quick_retry_initial_s: float = Field(default=0.2, ge=0)
    quick_retry_max_s: float = Field(default=2.0, ge=0)


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: SecretStr = Field(
        default=SecretStr("whsec_ZGV2LW5vdGlmeS13ZWJob29rLXNlY3JldC1rZXk="),
        description="Standard Webhooks signing secret (whsec_ + base64)",
    )
    timeout_s: float = Field(default=10.0, gt=0)
    allow_loopback: bool = Field(default=False, description="SSRF guard: allow 127.0.0.0/8 and ::1 targets")
    allow_private: bool = Field(default=False, description="SSRF guard: allow RFC 1918 / ULA / link-local")
    max_concurrency: int = Field(default=16, ge=1)
    connect_retries: int = Field(default=2, ge=1, description="tenacity attempts on connection errors")


class DeliverySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Standard Webhooks' suggested schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    webhook_schedule_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    email_schedule_s: tuple[float, ...] = (30, 120, 600, 1800, 3600, 7200, 14400, 28800)
    jitter: float = Field(default=0.2, ge=0, le=1, description="+- fraction of each delay, randomised")
    batch_size: int = Field(default=200, ge=1)
    poll_interval_ms: int = Field(
        default=500,
        ge=1,
        description="Idle dispatcher passes (due retries, other processes' rows); the consumer's commits wake it",
    )
    lease_s: float = Field(default=120.0, gt=0, description="A row left in 'sending' longer is resolved")
    flush_every: int = Field(default=50, ge=1, description="Record results at least every N sends")


class TemplateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    override_dir: Path | None = Field(default=None, description="Templates here win over the built-in ones")
    default_language: str = "en"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_", env_nested_delimiter="__", extra="forbid")

    service_name: str = "notify-svc"
    database: DatabaseSettings = DatabaseSettings(url="sqlite+aiosqlite:///var/notify.db")
    kafka: KafkaSettings = KafkaSettings()
    outbox: OutboxSettings = OutboxSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    http: HttpSettings = HttpSettings()
    smtp: SmtpSettings = SmtpSettings()
    webhook: WebhookSettings = WebhookSettings()
    delivery: DeliverySettings = DeliverySettings()
    templates: TemplateSettings = TemplateSettings()
    consumer_group: str = "notify-svc"
