"""Time is an input: every service reads it from an injected Clock, never from datetime.now()."""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clock (production)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class ManualClock:
    """A clock that only moves when told to (unit tests)."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> datetime:
        self.current += delta
        return self.current

    def set(self, when: datetime) -> None:
        self.current = when


@dataclass
class SimulatedClock:
    """A clock that runs ``speed`` times faster than real time from ``start`` and can be moved forward.

    Used by the dev stack and the demo (``CLOCK_MODE=simulated``). It never moves backwards.
    """

    start: datetime
    speed: float = 1.0
    _origin: float = field(default_factory=time.monotonic)
    _offset: timedelta = field(default=timedelta(0))

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._origin) * self.speed
        return self.start + timedelta(seconds=elapsed) + self._offset

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("the simulated clock only moves forward")
        self._offset += delta
        return self.now()


@dataclass
class SharedSimulatedClock:
    """Simulated time kept in a small JSON file, so every process of a stack agrees on it and a restarted
    process (kill -9 in the chaos tests) comes back at the same simulated time instead of the start.

    The file holds ``start`` (simulated time at ``origin``), ``origin`` (wall-clock epoch seconds), ``speed``
    and ``offset_s`` (added by :meth:`advance`). Reads are cached by the file's mtime.
    """

    path: Path
    _cache: tuple[int, _SharedState] | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls, path: Path, *, start: datetime, speed: float, replace: bool = False
    ) -> SharedSimulatedClock:
        """Create the state file unless it exists (``replace=True`` starts over)."""
        if replace or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_state(path, _SharedState(start.astimezone(UTC), time.time(), speed, 0.0))
        return cls(path)

    def _state(self) -> _SharedState:
        mtime = self.path.stat().st_mtime_ns
        if self._cache is None or self._cache[0] != mtime:
            self._cache = (mtime, _read_state(self.path))
        return self._cache[1]

    def now(self) -> datetime:
        s = self._state()
        return s.start + timedelta(seconds=(time.time() - s.origin) * s.speed + s.offset_s)

    def set_speed(self, speed: float) -> datetime:
        """Run at ``speed`` from now on (0 pauses); the simulated time does not jump."""
        if speed < 0:
            raise ValueError("speed must not be negative")
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._cache = None
            now = self.now()
            _write_state(self.path, _SharedState(now, time.time(), speed, 0.0))
        self._cache = None
        return now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("the simulated clock only moves forward")
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            s = _read_state(self.path)
            _write_state(
                self.path, _SharedState(s.start, s.origin, s.speed, s.offset_s + delta.total_seconds())
            )
        self._cache = None
        return self.now()


@dataclass(frozen=True)
class _SharedState:
    start: datetime
    origin: float
    speed: float
    offset_s: float


def _read_state(path: Path) -> _SharedState:
    raw = json.loads(path.read_text())
    return _SharedState(
        datetime.fromisoformat(raw["start"]),
        float(raw["origin"]),
        float(raw["speed"]),
        float(raw["offset_s"]),
    )


def _write_state(path: Path, s: _SharedState) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(
        json.dumps(
            {"start": s.start.isoformat(), "origin": s.origin, "speed": s.speed, "offset_s": s.offset_s}
        )
    )
    os.replace(tmp, path)
