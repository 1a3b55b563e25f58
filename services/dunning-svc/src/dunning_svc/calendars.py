"""Adapter: business calendars from the ``holidays`` package (the domain receives plain dates)."""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import holidays

from dunning_svc.domain import BusinessCalendar


@lru_cache(maxsize=1024)
def _holidays(country: str, first_year: int, last_year: int) -> frozenset[date]:
    try:
        days = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    except NotImplementedError:
        return frozenset()
    return frozenset(days.keys())


def calendar_for(time_zone: str, country: str, year: int) -> BusinessCalendar:
    """The client's calendar: its time zone and its country's public holidays around ``year``."""
    return _calendar(time_zone, country, year)


@lru_cache(maxsize=4096)
def _calendar(time_zone: str, country: str, year: int) -> BusinessCalendar:
    return BusinessCalendar(time_zone=time_zone, holidays=_holidays(country, year - 1, year + 2))
