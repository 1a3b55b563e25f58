"""Business days and hours in the client's time zone, from pure inputs (holidays are given, not looked up)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """The client's time zone, public holidays (from the ``holidays`` package, built by an adapter), weekend."""

    time_zone: str = "UTC"
    holidays: frozenset[date] = frozenset()
    weekend: frozenset[int] = frozenset({5, 6})

    def local_date(self, when: datetime) -> date:
        return when.astimezone(zone(self.time_zone)).date()

    def start_of_day(self, day: date) -> datetime:
        """Local midnight of ``day`` as aware UTC."""
        return datetime.combine(day, time(0), zone(self.time_zone)).astimezone(UTC)

    def is_business_day(self, day: date) -> bool:
        return day.weekday() not in self.weekend and day not in self.holidays


def next_business_moment(when: datetime, cal: BusinessCalendar, start: time, end: time) -> datetime:
    """The earliest instant at or after ``when`` inside business hours on a business day (aware UTC)."""
    tz = zone(cal.time_zone)
    local = when.astimezone(tz)
    for _ in range(400):
        day = local.date()
        if cal.is_business_day(day):
            opens = datetime.combine(day, start, tz)
            closes = datetime.combine(day, end, tz)
            if local < opens:
                return opens.astimezone(UTC)
            if local < closes:
                return local.astimezone(UTC)
        local = datetime.combine(day + timedelta(days=1), time(0), tz)
    return when  # a calendar with no business day at all: do not block forever


def in_business_hours(when: datetime, cal: BusinessCalendar, start: time, end: time) -> bool:
    return next_business_moment(when, cal, start, end) == when
