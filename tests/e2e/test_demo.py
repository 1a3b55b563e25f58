"""`make run`'s demo (``arctl demo``) as a newcomer runs it, on its embedded defaults (SQLite, the embedded broker,
the SMTP catcher), on free ports and in a var directory of its own, with a smaller portfolio.

Within the time the issue allows (two minutes) the dunning topic must show reminders, manual tasks, an agency
warning and cases resolved by payments, the mail folder must hold the emails, and Ctrl-C must stop everything
with exit status 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from ar_events.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 120.0  # "within two minutes a person sees ..." (after the portfolio has loaded)
LOAD_DEADLINE_S = 180.0
WANTED = {
    "ar.dunning.reminder_requested.v1": "a reminder",
    "ar.dunning.manual_task_created.v1": "a manual task",
    "ar.dunning.agency_warning_issued.v1": "an agency warning",
    "ar.dunning.resolved.v1": "a case resolved by payments",
}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _watch_dunning_events(bootstrap: str, seen: Counter[str], until: float) -> None:
    consumer = AIOKafkaConsumer("ar.dunning.events", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)  # fmt: skip
    await consumer.start()
    try:
        while time.monotonic() < until and not all(seen[t] for t in WANTED):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    seen[json.loads(record.value)["type"]] += 1
    finally:
        await consumer.stop()


def test_make_run_demo_shows_the_ladder_within_two_minutes_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {
        "BROKER_PORT": free_port(), "SMTP_PORT": free_port(), "INVOICE_HTTP__PORT": free_port(),
        "PAYMENT_HTTP__PORT": free_port(), "DUNNING_HTTP__PORT": free_port(), "NOTIFY_HTTP__PORT": free_port(),
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update({k: str(v) for k, v in ports.items()}, AR_VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [str(Path(sys.executable).with_name("arctl")), "demo", "--clients", "60", "--invoices", "400", "--days-per-second", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    seen: Counter[str] = Counter()
    try:
        started = time.monotonic()
        while b"loaded; the clock runs" not in (tmp_path / "demo.log").read_bytes():
            assert demo.poll() is None, (tmp_path / "demo.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() - started < LOAD_DEADLINE_S, "the demo portfolio did not load"
            time.sleep(0.5)
        until = time.monotonic() + DEADLINE_S
        asyncio.run(_watch_dunning_events(f"127.0.0.1:{ports['BROKER_PORT']}", seen, until))
        missing = [what for t, what in WANTED.items() if not seen[t]]
        assert not missing, f"not seen within {DEADLINE_S:.0f} s: {missing}; seen {dict(seen)}"
        mail = list((tmp_path / "var" / "mail").glob("*.eml"))
        assert mail, "no email in the mail folder"
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = demo.wait(timeout=60)
        finally:
            if demo.poll() is None:
                demo.kill()
            log.close()
    assert code == 0, (tmp_path / "demo.log").read_text(errors="replace")[-3000:]
    still = [name for name, port in ports.items() if _listening(port)]
    assert not still, f"still listening after Ctrl-C: {still}"
