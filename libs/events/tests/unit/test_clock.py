"""Clocks: simulated time moves forward only, and a shared simulated clock survives a process restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ar_events.clock import ManualClock, SharedSimulatedClock, SimulatedClock

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(START)
    assert clock.now() == START
    assert clock.advance(timedelta(days=3)) == START + timedelta(days=3)


def test_simulated_clock_runs_fast_and_refuses_to_go_back() -> None:
    clock = SimulatedClock(start=START, speed=86_400)
    first = clock.now()
    assert first >= START
    moved = clock.advance(timedelta(days=10))
    assert moved - first >= timedelta(days=10)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(timedelta(seconds=-1))


def test_shared_clock_is_seen_by_every_reader_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    writer = SharedSimulatedClock.create(path, start=START, speed=1.0)
    reader = SharedSimulatedClock(path)
    writer.advance(timedelta(days=5))
    assert reader.now() - START >= timedelta(days=5)
    restarted = SharedSimulatedClock.create(path, start=START, speed=1.0)  # does not start over
    assert restarted.now() - START >= timedelta(days=5)
    fresh = SharedSimulatedClock.create(path, start=START, speed=1.0, replace=True)
    assert fresh.now() - START < timedelta(days=1)
    with pytest.raises(ValueError, match="forward"):
        fresh.advance(timedelta(hours=-1))


def test_shared_clock_can_pause_and_speed_up_without_jumping(tmp_path: Path) -> None:
    clock = SharedSimulatedClock.create(tmp_path / "clock.json", start=START, speed=1.0)
    paused_at = clock.set_speed(0)
    assert clock.now() == paused_at
    clock.set_speed(86_400)
    assert clock.now() >= paused_at
    assert clock.now() - paused_at < timedelta(days=2)
    with pytest.raises(ValueError, match="negative"):
        clock.set_speed(-1)
