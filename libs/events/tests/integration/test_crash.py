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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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
from sqlalchemy import func, select

from ar_events.settings import KafkaSettings
from ar_events.tables import TABLES

PROC = Path(__file__).with_name("plumbing_proc.py")
EVENTS = 10_000
ROUNDS = 5


class Child:
    """One relay or consumer process; restartable; logs to a file."""

    def __init__(self, role: str, db: str, kafka: KafkaSettings, log_dir: Path, ready_marker: str) -> None:
        self.role = role
        self.ready_marker = ready_marker
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

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.role}-{self.starts}.log"

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until the child logged its ready marker (lease taken / partitions assigned)."""

        async def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"{self.role} exited"
            return self.ready_marker in self.log_file.read_text(errors="replace")

        await wait_until(ready, timeout=timeout, interval=0.05)

    def start(self) -> None:
        self.starts += 1
        log = self.log_file.open("wb")
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
    relay = Child("relay", postgres_url, kafka_settings, tmp_path, ready_marker="took the lease")
    consumer = Child("consumer", postgres_url, kafka_settings, tmp_path, ready_marker="partitions assigned")
    keys = [f"cli_{k:03d}" for k in range(100)]
    events: list[Any] = []
    killers_done = asyncio.Event()
    kills: list[tuple[str, bool]] = []  # (who, were events still being written at the kill)

    async def writer() -> None:
        """At least EVENTS events, and events keep flowing until every kill has happened."""
        while len(events) < EVENTS or not killers_done.is_set():
            batch = [payment(keys[(len(events) + i) % len(keys)], len(events) + i) for i in range(20)]
            await write(sessions, batch)
            events.extend(batch)
            # 400 events/s up to EVENTS, then a trickle (40/s) until the last kill: flowing, not piling up.
            await asyncio.sleep(0.05 if len(events) < EVENTS else 0.5)

    async def killer(child: Child, progress: Callable[[], Awaitable[int]]) -> None:
        for _ in range(ROUNDS):
            await child.wait_ready()
            before = await progress()

            async def moved(before: int = before) -> bool:
                return await progress() > before

            await wait_until(moved, timeout=60)  # it is doing work: kill it at a random point of that work
            await asyncio.sleep(rng.uniform(0.0, 0.8))
            child.kill9()
            kills.append((child.role, not killers_done.is_set()))
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            child.start()

    relay.start()
    consumer.start()
    writing = asyncio.create_task(writer())
    try:
        await asyncio.gather(
            killer(relay, lambda: _published(sessions)), killer(consumer, lambda: applied_count(sessions))
        )
        killers_done.set()
        await writing

        async def all_applied() -> bool:
            return await applied_count(sessions) >= len(events) and await unpublished(sessions) == 0

        await wait_until(all_applied, timeout=180, interval=0.5)
        await asyncio.sleep(2)  # a late double application would show up now
        assert sorted(k[0] for k in kills) == ["consumer"] * ROUNDS + ["relay"] * ROUNDS
        assert all(flowing for _, flowing in kills), "every kill happened while events were flowing"
        assert len(events) >= EVENTS
        assert_exactly_once(await applied_rows(sessions), {e.id for e in events})
        # SIGTERM: both stop cleanly (finish the batch, commit, close). Each was restarted after its last kill:
        # wait until it runs (a SIGTERM while Python is still importing ends it by the default action, -15).
        await relay.wait_ready()
        await consumer.wait_ready()
        assert relay.terminate() == 0
        assert consumer.terminate() == 0
    finally:
        killers_done.set()
        writing.cancel()
        relay.terminate()
        consumer.terminate()
        await engine.dispose()


async def _published(sessions: Any) -> int:
    async with sessions() as session:
        q = select(func.count()).select_from(TABLES.outbox).where(TABLES.outbox.c.published_at.is_not(None))
        return int((await session.execute(q)).scalar_one())
