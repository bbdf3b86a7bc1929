"""NPS = % promoters (9-10) - % detractors (0-6), from each account's latest answer.

"Latest" is per period: over the report's period for the overall figure and the splits by
tier and RFM segment, and per local calendar month for the series over time (an account that
answered in March and May counts in both months, once in each). Tier and segment are the
account's as they are now (accounts.tier, accounts.segment). A few grouped queries; the
window function ROW_NUMBER() runs on SQLite (3.25+) and PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import Session

from connector.config import SEGMENTS
from connector.ledger.models import Account
from connector.nps.models import NPSAnswer

NPS_QUANTUM = Decimal("0.1")
UNSCORED = "unscored"  # the JSON name of accounts without an RFM segment


@dataclass(frozen=True)
class Tally:
    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    @property
    def answers(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> Decimal | None:
        """-100.0 to 100.0, one decimal; None without answers."""
        if not self.answers:
            return None
        return (Decimal(100 * (self.promoters - self.detractors)) / self.answers).quantize(
            NPS_QUANTUM, ROUND_HALF_UP)

    def plus(self, kind: str, count: int) -> Tally:
        return Tally(self.promoters + (count if kind == "promoter" else 0),
                     self.passives + (count if kind == "passive" else 0),
                     self.detractors + (count if kind == "detractor" else 0))

    def as_json(self) -> dict[str, Any]:
        return {"nps": None if self.nps is None else str(self.nps), "answers": self.answers,
                "promoters": self.promoters, "passives": self.passives,
                "detractors": self.detractors}


@dataclass(frozen=True)
class Month:
    start: date  # the first local day counted (the period's first day for the first month)
    tally: Tally


@dataclass(frozen=True)
class NPSReport:
    since: datetime
    until: datetime
    overall: Tally
    by_tier: dict[str, Tally]
    by_segment: dict[str | None, Tally]  # None: not scored (no purchase, or not run yet)
    by_month: list[Month]
    answers: int  # every answer in the period, not only each account's latest
    bonuses: int = 0  # answers in the period that earned the bonus

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(),
                **self.overall.as_json(), "answers_all": self.answers,
                "bonuses": self.bonuses,
                "by_tier": {name: tally.as_json() for name, tally in self.by_tier.items()},
                "by_segment": {code or UNSCORED: tally.as_json()
                               for code, tally in self.by_segment.items()},
                "by_month": [{"month": month.start.strftime("%Y-%m"), **month.tally.as_json()}
                             for month in self.by_month]}


def _kind(score: ColumnElement[int]) -> ColumnElement[str]:
    return case((score >= 9, "promoter"), (score >= 7, "passive"), else_="detractor")


def month_starts(since: datetime, until: datetime, zone: ZoneInfo) -> list[date]:
    """The period's first local day, then the first of every month up to `until`."""
    first = since.astimezone(zone).date()
    last = until.astimezone(zone).date()
    starts = [first]
    year, month = first.year, first.month
    while True:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        start = date(year, month, 1)
        if datetime.combine(start, time(0), tzinfo=zone) >= until or start > last:
            return starts
        starts.append(start)


def nps_report(session: Session, tiers: list[str], zone: ZoneInfo, *, since: datetime,
               until: datetime) -> NPSReport:
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    in_period = (NPSAnswer.occurred_at >= since) & (NPSAnswer.occurred_at < until)
    # The kind is worked out inside the subquery and grouped on outside: PostgreSQL cannot
    # match a GROUP BY expression to the SELECT one when each carries its own parameters.
    latest = (select(NPSAnswer.account_id, _kind(NPSAnswer.score).label("kind"),
                     func.row_number().over(partition_by=NPSAnswer.account_id,
                                            order_by=(NPSAnswer.occurred_at.desc(),
                                                      NPSAnswer.id.desc())).label("n"))
              .where(in_period).subquery())
    rows = session.execute(
        select(Account.tier, Account.segment, latest.c.kind, func.count())
        .join(Account, Account.id == latest.c.account_id)
        .where(latest.c.n == 1)
        .group_by(Account.tier, Account.segment, latest.c.kind))
    overall = Tally()
    by_tier: dict[str, Tally] = {name: Tally() for name in tiers}
    by_segment: dict[str | None, Tally] = {}
    for tier, segment, answer_kind, count in rows:
        overall = overall.plus(answer_kind, int(count))
        by_tier[tier] = by_tier.get(tier, Tally()).plus(answer_kind, int(count))
        by_segment[segment] = by_segment.get(segment, Tally()).plus(answer_kind, int(count))
    totals = session.execute(select(func.count(), func.count(NPSAnswer.bonus_entry_id))
                             .where(in_period)).one()
    return NPSReport(since, until, overall, by_tier, _segment_order(by_segment),
                     _by_month(session, zone, since, until), int(totals[0]), int(totals[1]))


def _segment_order(found: dict[str | None, Tally]) -> dict[str | None, Tally]:
    ordered: dict[str | None, Tally] = {code: found.pop(code) for code in SEGMENTS
                                        if code in found}
    unscored = found.pop(None, None)
    ordered.update(sorted(found.items(), key=lambda item: str(item[0])))
    if unscored is not None:
        ordered[None] = unscored
    return ordered


def _by_month(session: Session, zone: ZoneInfo, since: datetime,
              until: datetime) -> list[Month]:
    """Each account's latest answer per local month. The months are ranges of UTC instants
    computed here and matched by a CASE, as the dashboard's points series does, instead of
    each backend's own date functions."""
    starts = month_starts(since, until, zone)
    bounds = [datetime.combine(start, time(0), tzinfo=zone) for start in starts[1:]]
    bucket: ColumnElement[int] = literal(0)
    if bounds:
        bucket = case(*((NPSAnswer.occurred_at < bound, index)
                        for index, bound in enumerate(bounds)), else_=len(bounds))
    ranked = (select(bucket.label("bucket"), NPSAnswer.account_id, NPSAnswer.score,
                     NPSAnswer.occurred_at, NPSAnswer.id)
              .where(NPSAnswer.occurred_at >= since, NPSAnswer.occurred_at < until)
              .subquery())
    latest = (select(ranked.c.bucket, _kind(ranked.c.score).label("kind"),
                     func.row_number().over(
                         partition_by=(ranked.c.account_id, ranked.c.bucket),
                         order_by=(ranked.c.occurred_at.desc(), ranked.c.id.desc())).label("n"))
              .subquery())
    tallies = [Tally() for _ in starts]
    for index, answer_kind, count in session.execute(
            select(latest.c.bucket, latest.c.kind, func.count()).where(latest.c.n == 1)
            .group_by(latest.c.bucket, latest.c.kind)):
        tallies[int(index)] = tallies[int(index)].plus(answer_kind, int(count))
    return [Month(start, tally) for start, tally in zip(starts, tallies, strict=True)]
