"""Stack configuration and credentials: pure file and environment handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ar_ops.stack import StackConfig, load_or_create_credentials, write_credentials


def test_ports_and_database_follow_the_environment(tmp_path: Path) -> None:
    config = StackConfig.from_env(
        tmp_path,
        {
            "BROKER_PORT": "29092",
            "SMTP_PORT": "2525",
            "DUNNING_HTTP__PORT": "9003",
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
        },
    )
    assert config.bootstrap_servers == "127.0.0.1:29092"
    assert config.smtp_port == 2525
    assert config.ports == {"invoice": 8001, "payment": 8002, "dunning": 9003, "notify": 8004}
    spec = config.services[2]
    assert config.database_for(spec) == "postgresql+asyncpg://postgres@127.0.0.1:5432/ar_dunning"
    assert config.component_names() == ["broker", "smtp", "invoice", "payment", "dunning", "notify"]


def test_defaults_are_sqlite_files_under_var_and_the_embedded_broker(tmp_path: Path) -> None:
    config = StackConfig.from_env(tmp_path, {})
    assert (
        config.database_for(config.services[0])
        == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'invoice-svc.db'}"
    )
    assert config.base_url("notify") == "http://127.0.0.1:8004"
    external = StackConfig.from_env(tmp_path, {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert "broker" not in external.component_names()
    assert external.bootstrap_servers == "kafka:9092"


def test_credentials_are_reused_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "dev-credentials.json"
    first = load_or_create_credentials(path)
    assert first.api_key.startswith("ar_") and len(first.api_key) > 40
    assert set(first.webhook_secrets) == {"stripe", "standard"}
    assert all(s.startswith("whsec_") for s in first.webhook_secrets.values())
    write_credentials(path, first)
    assert json.loads(path.read_text()) == first.to_json()
    assert load_or_create_credentials(path) == first
    path.write_text("{not json")
    assert load_or_create_credentials(path).api_key != first.api_key


def test_stack_logs_filters_by_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ar_ops.cli import app

    monkeypatch.setenv("AR_VAR_DIR", str(tmp_path))
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "invoice.log").write_text(
        '{"correlation_id": "c-1", "message": "a"}\n{"correlation_id": "c-2"}\n'
    )
    result = CliRunner().invoke(app, ["stack", "logs", "invoice-svc", "--grep", "c-1"])
    assert result.exit_code == 0
    assert '"message": "a"' in result.output
    assert "c-2" not in result.output
