"""Alembic environment: the shared one in ar_events.migrations, on this service's tables and settings."""

from __future__ import annotations

from ar_events.migrations import run_env
from payment_svc.repository import metadata


def _settings_url() -> str:
    from payment_svc.settings import Settings

    return Settings().database.url


run_env(metadata, _settings_url, env_var="PAYMENT_DATABASE__URL")
