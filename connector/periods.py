"""The one definition of a reporting period, shared by `stats`, `nps report`, the dashboard,
its money page and `GET /api/v1/economics`, so that the same request gives the same figures
everywhere.

- The last N days: today in the program's time zone and the N-1 days before it, from local
  midnight N-1 days ago until now (so a period is made of whole local days, the last one
  still running, and the dashboard's bars each cover a whole day, week or month).
- Two dates: from local midnight of the first until local midnight of the second (not
  included).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_DAYS = 30


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The start of `day` in `zone` (aware, in that zone)."""
    return datetime.combine(day, time(0), tzinfo=zone)


def first_day(now: datetime, days: int, zone: ZoneInfo) -> date:
    """The local date the last `days` days start on."""
    if days < 1:
        raise ValueError("days must be at least 1")
    return now.astimezone(zone).date() - timedelta(days=days - 1)


def last_days(now: datetime, days: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[since, until) in UTC: local midnight `days`-1 days ago, and `now`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return local_midnight(first_day(now, days, zone), zone).astimezone(UTC), now


def between(since: date, until: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[since, until) in UTC: the local midnights of two dates."""
    return (local_midnight(since, zone).astimezone(UTC),
            local_midnight(until, zone).astimezone(UTC))
