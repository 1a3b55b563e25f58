"""Crash injection: kill -9 the relay process and the consumer process at random points while 10,000 events flow.

Afterwards every event was applied exactly once: set equality over event ids, plus counts.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ar_events_itest_support import (
    applied_count,
    applied_rows,
    assert_exactly_once,
    payment,
    setup_database,
    unpublished,
    wait_until,
    write,
)

from ar_events.settings import KafkaSettings

PROC = Path(__file__).with_name("plumbing_proc.py")
EVENTS = 10_000
ROUNDS = 5


class Child:
    """One relay or consumer process; restartable; logs to a file."""

    def __init__(self, role: str, db: str, kafka: KafkaSettings, log_dir: Path) -> None:
        self.role = role
        self.args = [
            sys.executable,
            str(PROC),
            role,
            "--db",
            db,
            "--bootstrap",
            kafka.bootstrap_servers,
            "--prefix",
            kafka.topic_prefix,
        ]
        self.log_dir = log_dir
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"{self.role}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=PROC.parent)
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


@pytest.mark.slow
async def test_kill_9_of_relay_and_consumer_loses_nothing_and_applies_nothing_twice(
    postgres_url: str, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    engine, sessions = await setup_database(postgres_url)
    rng = random.Random(int.from_bytes(os.urandom(4)))
    relay = Child("relay", postgres_url, kafka_settings, tmp_path)
    consumer = Child("consumer", postgres_url, kafka_settings, tmp_path)
    relay.start()
    consumer.start()
    keys = [f"cli_{k:03d}" for k in range(100)]
    events = [payment(keys[i % len(keys)], i) for i in range(EVENTS)]
    kills = {"relay": 0, "consumer": 0}

    async def killer() -> None:
        for _ in range(ROUNDS):
            for child in (relay, consumer):
                await asyncio.sleep(rng.uniform(0.5, 2.5))
                child.kill9()
                kills[child.role] += 1
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                child.start()

    try:
        writer = asyncio.create_task(write(sessions, events, per_tx=20, pause=0.03))
        await killer()
        await writer

        async def all_applied() -> bool:
            return await applied_count(sessions) >= EVENTS and await unpublished(sessions) == 0

        await wait_until(all_applied, timeout=120, interval=0.5)
        await asyncio.sleep(2)  # a late double application would show up now
        assert kills == {"relay": ROUNDS, "consumer": ROUNDS}
        assert_exactly_once(await applied_rows(sessions), {e.id for e in events})
        # SIGTERM: both stop cleanly (finish the batch, commit, close)
        assert relay.terminate() == 0
        assert consumer.terminate() == 0
    finally:
        relay.terminate()
        consumer.terminate()
        await engine.dispose()
