"""Run invoice-svc as a real process (``python -m invoice_svc ...``) on a free port, for fuzzing and e2e checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ar_events.settings import KafkaSettings


def service_env(db_url: str, port: int, kafka: KafkaSettings | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_")}
    env.update(
        INVOICE_DATABASE__URL=db_url,
        INVOICE_HTTP__PORT=str(port),
        INVOICE_LOG_LEVEL="WARNING",
        **extra,
    )
    if kafka is not None:
        env["INVOICE_KAFKA__BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
        env["INVOICE_KAFKA__TOPIC_PREFIX"] = kafka.topic_prefix
    return env


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "invoice_svc", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"invoice_svc {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout.strip()


def start(
    env: dict[str, str], port: int, command: str = "api", log: Path | None = None
) -> subprocess.Popen[bytes]:
    sink = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "invoice_svc", command], env=env, stdout=sink, stderr=sink)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"invoice_svc {command} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError("invoice_svc did not answer /healthz within 60 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
