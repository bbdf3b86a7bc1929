"""What GET /dashboard shows, gathered by a handful of aggregate queries (never one per account
or per entry): the program's figures for a period, points moved per day, week or month, tiers,
RFM segments, and the health of the inbox, the CRM connections and the scheduled jobs.

The period is the last N days of the program's time zone, today included: from local midnight
N-1 days ago until now, so every bar of the chart is a whole local day, week or month (the first
and the current one may be partial).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import Session

from connector import periods
from connector.config import SEGMENTS
from connector.health import CRMStatus, crm_statuses
from connector.job_runs import RunRecord, all_runs
from connector.ledger.models import Account, Entry
from connector.money import from_minor
from connector.services import Services
from connector.stats import ProgramStats, program_stats

DEFAULT_DAYS = periods.DEFAULT_DAYS
MAX_DAYS = 3650
# Credits above the axis, debits below: what the chart stacks, in this order.
SERIES_KINDS = ("accrual", "bonus", "redemption", "expiry")
# Up to about 60 bars whatever the period: days, then weeks, then months.
DAILY_UP_TO_DAYS = 62
WEEKLY_UP_TO_DAYS = 420


@dataclass(frozen=True)
class Bucket:
    start: date  # the local date the bar starts on
    points: dict[str, Decimal]  # signed points by entry kind, every SERIES_KINDS key present


@dataclass(frozen=True)
class InboxHealth:
    pending: int
    processing: int
    dead: int
    oldest_pending_age: timedelta | None


@dataclass(frozen=True)
class Dashboard:
    """`segments` maps an RFM segment code to its accounts, None to accounts not scored (no
    purchase yet, or the rfm_segments job has not run since). The average check is members'
    only: the connector never sees purchases of customers outside the program."""

    now: datetime
    days: int
    zone: ZoneInfo
    stats: ProgramStats
    step: str  # "day", "week" or "month": what one bucket covers
    series: list[Bucket]
    segments: dict[str | None, int]
    inbox: InboxHealth
    crms: list[CRMStatus]
    jobs: list[RunRecord]


def build(services: Services, *, now: datetime, days: int = DEFAULT_DAYS) -> Dashboard:
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1..{MAX_DAYS}")
    zone = services.settings.program.zone
    step = step_for(days)
    starts = bucket_starts(now.astimezone(zone).date(), days, step)
    # The period `stats --days N` reads too: the buckets start on its first day.
    since, _ = periods.last_days(now, days, zone)
    with services.db.transaction(write=False) as session:
        stats = program_stats(session, services.program, since=since, until=now)
        series = points_series(session, starts, zone, until=now)
        segments = segment_sizes(session)
    return Dashboard(now=now, days=days, zone=zone, stats=stats, step=step, series=series,
                     segments=segments, inbox=inbox_health(services, now),
                     crms=crm_statuses(services),
                     jobs=sorted(all_runs(services.db).values(), key=lambda run: run.job_id))


def step_for(days: int) -> str:
    if days <= DAILY_UP_TO_DAYS:
        return "day"
    return "week" if days <= WEEKLY_UP_TO_DAYS else "month"


def bucket_starts(today: date, days: int, step: str) -> list[date]:
    """The local date each bucket starts on: the period's first day, then every day, every
    Monday or every first of the month after it, up to today."""
    first = today - timedelta(days=days - 1)
    following = (first + timedelta(days=offset) for offset in range(1, days))
    if step == "week":
        return [first, *(day for day in following if day.weekday() == 0)]
    if step == "month":
        return [first, *(day for day in following if day.day == 1)]
    return [first, *following]


def points_series(session: Session, starts: list[date], zone: ZoneInfo, *,
                  until: datetime) -> list[Bucket]:
    """Points by kind per bucket in one grouped query. The buckets are ranges of UTC instants
    computed here (local midnights move with daylight saving time), matched by a CASE that
    both SQLite and PostgreSQL run, instead of each backend's own date functions."""
    bounds = [periods.local_midnight(start, zone) for start in starts]
    bucket: ColumnElement[int] = literal(0)
    if len(bounds) > 1:
        bucket = case(*((Entry.occurred_at < bound, index)
                        for index, bound in enumerate(bounds[1:])), else_=len(bounds) - 1)
    # Grouped outside a subquery: PostgreSQL cannot match a GROUP BY expression to the
    # SELECT one when each carries its own bound parameters.
    moved = (select(Entry.kind, bucket.label("bucket"), Entry.amount)
             .where(Entry.kind.in_(SERIES_KINDS), Entry.occurred_at >= bounds[0],
                    Entry.occurred_at < until)
             .subquery())
    rows = session.execute(select(moved.c.kind, moved.c.bucket, func.sum(moved.c.amount))
                           .group_by(moved.c.kind, moved.c.bucket))
    sums: dict[tuple[int, str], int] = {(int(index), kind): int(total)
                                        for kind, index, total in rows}
    return [Bucket(start, {kind: from_minor(sums.get((index, kind), 0))
                           for kind in SERIES_KINDS})
            for index, start in enumerate(starts)]


def segment_sizes(session: Session) -> dict[str | None, int]:
    """Accounts per RFM segment in the order of connector.config.SEGMENTS; a code no longer
    known next, the unscored (None) last."""
    counts: dict[str | None, int] = {segment: int(count) for segment, count in session.execute(
        select(Account.segment, func.count()).group_by(Account.segment))}
    ordered = {code: counts.pop(code) for code in SEGMENTS if code in counts}
    unscored = counts.pop(None, 0)
    ordered.update(sorted(counts.items(), key=lambda item: str(item[0])))
    if unscored:
        ordered[None] = unscored
    return ordered


def inbox_health(services: Services, now: datetime) -> InboxHealth:
    depth = services.inbox.depth()
    received, _due = services.inbox.oldest_pending()
    return InboxHealth(pending=depth["pending"], processing=depth["processing"],
                       dead=depth["dead"],
                       oldest_pending_age=None if received is None else now - received)
