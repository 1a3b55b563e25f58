"""Settings sections shared by every service; each service nests them in its own Settings class."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ar_events.topics import with_prefix


class KafkaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = Field(
        default="127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated"
    )
    topic_prefix: str = Field(default="", description="Prepended to every topic name (test isolation)")
    partitions: int = Field(default=6, ge=1, description="Partitions of topics created at start-up")
    replication_factor: int = Field(default=1, ge=1, description="Replication of topics created at start-up")
    enable_idempotence: bool = Field(default=False, description="Off against the embedded broker (infra.md)")
    client_id: str | None = Field(default=None, description="Kafka client id (defaults to the service name)")

    def topic(self, name: str) -> str:
        return with_prefix(self.topic_prefix, name)


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="SQLAlchemy async URL: postgresql+asyncpg://... or sqlite+aiosqlite:///file.db"
    )
    pool_size: int = Field(default=10, ge=1, description="Connection pool size (PostgreSQL)")
    max_overflow: int = Field(
        default=0,
        ge=0,
        description="Extra short-lived connections beyond pool_size under bursts (PostgreSQL; each is a new "
        "server backend, closed when returned)",
    )
    echo: bool = Field(default=False, description="Log every SQL statement")


class OutboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_days: int = Field(default=7, ge=0, description="Keep published rows this long for re-publish")
    batch_size: int = Field(default=500, ge=1, description="Rows the relay publishes per batch")
    poll_interval_ms: int = Field(default=50, ge=1, description="Upper bound on relay latency after a commit")
    coalesce_ms: int = Field(
        default=15,
        ge=0,
        le=1_000,
        description="After a pass that published something, commits arriving within this long share the next pass",
    )
    listen_poll_interval_ms: int = Field(
        default=1_000,
        ge=1,
        description="The polling backstop while LISTEN/NOTIFY works (PostgreSQL): commits wake the relay at once",
    )


class ConsumerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=5, ge=1, description="Handler attempts before a record goes to the DLQ")
    batch_max_records: int = Field(
        default=500, ge=1, description="Records per poll, applied in one transaction"
    )
    retry_initial_ms: int = Field(default=100, description="First retry delay of a failing handler")
    retry_max_ms: int = Field(default=5_000, description="Largest retry delay of a failing handler")
    log_events: bool = Field(
        default=True,
        description="One JSON log line per handled event, with its correlation id (follow a payment with one grep)",
    )
    fetch_max_wait_ms: int = Field(
        default=50,
        ge=0,
        le=5_000,
        description="Longest a fetch waits for records; the embedded broker answers only when it runs out, "
        "so this bounds each hop's latency there (a real Kafka answers as soon as a record arrives)",
    )
