"""Time is an input: every service reads it from an injected Clock, never from datetime.now()."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
