"""The dev stack machinery with real processes: broker, SMTP catcher and stand-in services.

The stand-ins take the same commands as the real services (migrate, api-key create, account add, all),
so this checks start-up order, credentials, readiness, pid files and a clean stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from ar_events.broker import free_port, kafka_answers
from ar_ops import stack as devstack
from ar_ops.stack import ServiceSpec, StackConfig, StackError

STANDIN_DIR = Path(__file__).parent / "standin"


def _config(tmp_path: Path, fail: str | None = None) -> StackConfig:
    services = (
        ServiceSpec("invoice", "standin_svc", "INVOICE_", 0),
        ServiceSpec("payment", "standin_svc", "PAYMENT_", 0),
    )
    extra = {"PYTHONPATH": os.pathsep.join([str(STANDIN_DIR), os.environ.get("PYTHONPATH", "")])}
    if fail:
        extra["STANDIN_FAIL"] = fail
    return StackConfig(
        root=tmp_path,
        var=tmp_path / "var",
        broker_port=free_port(),
        smtp_port=free_port(),
        ports={s.name: free_port() for s in services},
        services=services,
        service_env={s.name: {**extra, "STANDIN_PREFIX": s.env_prefix} for s in services},
        ready_timeout=60,
        stop_timeout=5,
        python=sys.executable,
    )


async def test_stack_up_provisions_credentials_and_down_stops_everything(tmp_path: Path) -> None:
    config = _config(tmp_path)
    messages: list[str] = []
    running = await devstack.start_stack(config, progress=messages.append)
    try:
        creds = json.loads(config.credentials_file.read_text())
        assert creds["api_key"].startswith("ar_")
        assert set(creds["webhook_secrets"]) == {"stripe", "standard"}
        assert oct(config.credentials_file.stat().st_mode & 0o777) == "0o600"
        headers = {"Authorization": f"Bearer {creds['api_key']}"}
        async with httpx.AsyncClient() as client:
            for name in ("invoice", "payment"):
                url = config.base_url(name)
                assert (await client.get(f"{url}/readyz")).status_code == 200
                assert (await client.get(f"{url}/v1/accounts")).status_code == 401
                assert (await client.get(f"{url}/v1/accounts", headers=headers)).status_code == 200
            accounts = (await client.get(f"{config.base_url('payment')}/v1/accounts", headers=headers)).json()
        assert accounts == {
            name: hashlib.sha256(secret.encode()).hexdigest()
            for name, secret in creds["webhook_secrets"].items()
        }
        assert kafka_answers("127.0.0.1", config.broker_port)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "ar@example.com", "c@example.org", "hello"
        msg.set_content("body")
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=config.smtp_port, timeout=10)
        assert len(list(config.mail_dir.glob("*.eml"))) == 1
        statuses = {s.name: s for s in await devstack.stack_status(config)}
        assert statuses["invoice"].health == "ready" and statuses["invoice"].running
        assert statuses["broker"].health == "kafka ok"
        assert {p.stem for p in config.run_dir.glob("*.pid")} == {"broker", "smtp", "invoice", "payment"}
        with pytest.raises(StackError, match="already running"):
            await devstack.start_stack(config)
        # Fault injection helpers for the end-to-end tests: kill -9, restart, a second instance.
        first_pid = running.components["invoice"].pid
        running.kill("invoice")
        assert not running.components["invoice"].alive()
        restarted = await running.restart("invoice")
        assert restarted.pid != first_pid
        replica_port = free_port()
        await running.start_replica("invoice", replica_port)
        async with httpx.AsyncClient() as client:
            for url in (config.base_url("invoice"), f"http://127.0.0.1:{replica_port}"):
                assert (await client.get(f"{url}/v1/accounts", headers=headers)).status_code == 200
        for name in ("invoice", "payment"):
            log = config.log_file(name).read_text()
            assert creds["api_key"] not in log
            assert not any(secret in log for secret in creds["webhook_secrets"].values())
    finally:
        results = devstack.stop_stack(config)
    assert set(results) == {"broker", "smtp", "invoice", "payment", f"invoice-{replica_port}"}
    assert set(results.values()) == {"stopped"}
    assert not list(config.run_dir.glob("*.pid"))
    assert not any(c.alive() for c in running.components.values())
    assert all(devstack.port_free(p) for p in [config.broker_port, config.smtp_port, *config.ports.values()])


async def test_failed_migration_names_the_log_and_leaves_nothing_running(tmp_path: Path) -> None:
    config = _config(tmp_path, fail="migrate")
    with pytest.raises(StackError) as info:
        await devstack.start_stack(config)
    message = str(info.value)
    assert "migrate" in message
    assert str(config.log_file("invoice")) in message or str(config.log_file("payment")) in message
    assert "refusing on purpose" in message
    assert not list(config.run_dir.glob("*.pid"))
    assert devstack.port_free(config.broker_port)
    assert devstack.port_free(config.smtp_port)


async def test_busy_port_is_refused_before_starting_anything(tmp_path: Path) -> None:
    import socket

    config = _config(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", config.ports["invoice"]))
        s.listen()
        with pytest.raises(StackError, match="ports in use: invoice-svc"):
            await devstack.start_stack(config)
    assert not (config.run_dir).exists() or not list(config.run_dir.glob("*.pid"))
