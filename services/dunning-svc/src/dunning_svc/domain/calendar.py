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
        return _local_date(self.time_zone, when)

    def start_of_day(self, day: date) -> datetime:
        """Local midnight of ``day`` as aware UTC."""
        return _start_of_day(self.time_zone, day)

    def is_business_day(self, day: date) -> bool:
        return day.weekday() not in self.weekend and day not in self.holidays


# Pure functions of their arguments, asked for the same few instants by every case of a scheduler batch
# (the batch's "now", the start of the days the steps fall on): memoised, bounded.


@lru_cache(maxsize=8192)
def _local_date(time_zone: str, when: datetime) -> date:
    return when.astimezone(zone(time_zone)).date()


@lru_cache(maxsize=8192)
def _start_of_day(time_zone: str, day: date) -> datetime:
    return datetime.combine(day, time(0), zone(time_zone)).astimezone(UTC)


def next_business_moment(when: datetime, cal: BusinessCalendar, start: time, end: time) -> datetime:
    """The earliest instant at or after ``when`` inside business hours on a business day (aware UTC)."""
    return _next_business_moment(when, cal, start, end)


@lru_cache(maxsize=8192)
def _next_business_moment(when: datetime, cal: BusinessCalendar, start: time, end: time) -> datetime:
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
