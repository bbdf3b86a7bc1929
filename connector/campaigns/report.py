"""After the window: treated against control, read from the ledger.

Who is compared. A campaign or an A/B test: every account the program knew by the window's
end, each in its group (the one recorded when it first became eligible, else the same hash
would have put it in), so the groups are drawn before the campaign could change who buys.
A trigger: the customers it reached or withheld, as recorded at the trigger's moment, each
followed for the holdout's `days` after it (only those whose days are over).

What is compared, per group: purchase rate (share of customers who bought), average check
(net amount of a purchase, returns taken off), revenue per customer (all customers, those
who bought nothing count as zero); each difference with scipy's 95% interval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from connector.campaigns import figures
from connector.campaigns.catalog import Test, find, tests
from connector.campaigns.groups import CONTROL, GROUPS, TREATED, group
from connector.campaigns.models import CampaignGroup
from connector.crm.models import TriggerEvent
from connector.ledger.models import Account, Entry
from connector.money import from_minor
from connector.program import Program

CENT = Decimal("0.01")


@dataclass
class GroupFigures:
    customers: int = 0
    buyers: int = 0
    purchases: int = 0
    revenue: Decimal = Decimal("0.00")
    # For the intervals: each customer's revenue, each purchase's net amount.
    per_customer: list[float] = field(default_factory=list, repr=False)
    checks: list[float] = field(default_factory=list, repr=False)

    @property
    def purchase_rate(self) -> Decimal | None:
        return (Decimal(self.buyers) / self.customers).quantize(figures.RATE) \
            if self.customers else None

    @property
    def average_check(self) -> Decimal | None:
        return (self.revenue / self.purchases).quantize(CENT) if self.purchases else None

    @property
    def revenue_per_customer(self) -> Decimal | None:
        return (self.revenue / self.customers).quantize(CENT) if self.customers else None

    def as_json(self) -> dict[str, Any]:
        def text(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        return {"customers": self.customers, "buyers": self.buyers,
                "purchases": self.purchases, "revenue": str(self.revenue),
                "purchase_rate": text(self.purchase_rate),
                "average_check": text(self.average_check),
                "revenue_per_customer": text(self.revenue_per_customer)}


@dataclass(frozen=True)
class Report:
    test: Test
    finished: bool
    groups: dict[str, GroupFigures]
    recorded: dict[str, int]
    purchase_rate: figures.Interval | None
    average_check: figures.Interval | None
    revenue_per_customer: figures.Interval | None
    cost_points: Decimal | None  # None for a trigger: it gives no points
    cost: Decimal
    incremental_revenue: Decimal | None
    roi: Decimal | None

    def as_json(self) -> dict[str, Any]:
        def text(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        def interval(value: figures.Interval | None) -> dict[str, Any] | None:
            return None if value is None else value.as_json()

        test = self.test
        return {
            "name": test.name, "kind": test.kind,
            "control_share": str(test.control_share),
            "starts": test.starts.isoformat() if test.starts else None,
            "ends": test.ends.isoformat() if test.ends else None,
            "days": test.days, "finished": self.finished,
            "groups": {name: figures_.as_json() for name, figures_ in self.groups.items()},
            "recorded": self.recorded,
            "difference": {"purchase_rate": interval(self.purchase_rate),
                           "average_check": interval(self.average_check),
                           "revenue_per_customer": interval(self.revenue_per_customer),
                           "confidence_level": str(figures.LEVEL)},
            "cost_points": text(self.cost_points), "cost": str(self.cost),
            "incremental_revenue": text(self.incremental_revenue), "roi": text(self.roi),
        }


@dataclass(frozen=True)
class Placed:
    group: str
    starts: datetime
    ends: datetime


def _recorded(session: Session, name: str) -> list[tuple[int, str, datetime]]:
    rows = session.execute(
        select(CampaignGroup.account_id, CampaignGroup.grp, CampaignGroup.first_seen_at)
        .where(CampaignGroup.campaign == name))
    return [(account_id, grp, seen) for account_id, grp, seen in rows]


def population(session: Session, test: Test, now: datetime) -> dict[int, Placed]:
    """Each compared customer, its group and the span its purchases count in."""
    recorded = _recorded(session, test.name)
    if test.kind == "trigger":
        follow = test.follow
        assert follow is not None
        return {account_id: Placed(grp, seen, seen + follow)
                for account_id, grp, seen in recorded if seen + follow <= now}
    assert test.starts is not None and test.ends is not None
    known = {account_id: grp for account_id, grp, _ in recorded}
    # Known by the window's end: opened before it, or (an import, a history sync) with a
    # purchase dated before it.
    accounts = session.scalars(select(Account.id).where(
        or_(Account.created_at < test.ends, Account.first_purchase_at < test.ends)))
    return {account_id: Placed(known.get(account_id)
                               or group(test.name, account_id, test.control_share),
                               test.starts, test.ends)
            for account_id in accounts}


def _purchases(session: Session, test: Test, placed: dict[int, Placed]
               ) -> dict[tuple[int, str], tuple[int, int]]:
    """(account, source) -> net amount (minor units) and net count of the purchases in each
    customer's span; a return or a cancellation carries its purchase's date, so it nets."""
    query = select(Entry.account_id, Entry.source, Entry.purchase_at, Entry.purchase_amount,
                   Entry.purchase_count).where(Entry.purchase_at.is_not(None))
    if test.kind == "trigger":
        query = query.join(CampaignGroup, (CampaignGroup.account_id == Entry.account_id)
                           & (CampaignGroup.campaign == test.name)).where(
            Entry.purchase_at > CampaignGroup.first_seen_at)
    else:
        query = query.where(Entry.purchase_at >= test.starts, Entry.purchase_at < test.ends)
    nets: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for account_id, source, at, amount, count in session.execute(query):
        span = placed.get(account_id)
        # A trigger's customers count from after its moment: the purchase that caused it
        # (points accrued, a tier reached) is not its effect.
        if span is None or not (span.starts < at if test.kind == "trigger"
                                else span.starts <= at) or at >= span.ends:
            continue
        net = nets[(account_id, source or "")]
        net[0] += amount or 0
        net[1] += count
    return {key: (amount, count) for key, (amount, count) in nets.items()}


def _tally(placed: dict[int, Placed], nets: dict[tuple[int, str], tuple[int, int]]
           ) -> dict[str, GroupFigures]:
    out = {name: GroupFigures() for name in GROUPS}
    revenue: dict[int, int] = defaultdict(int)
    bought: set[int] = set()
    for (account_id, _), (amount, count) in nets.items():
        revenue[account_id] += amount
        if count > 0:
            bought.add(account_id)
            figures_ = out[placed[account_id].group]
            figures_.purchases += count
            figures_.checks.append(amount / 100)
    minor = dict.fromkeys(GROUPS, 0)
    for account_id, span in placed.items():
        figures_ = out[span.group]
        figures_.customers += 1
        figures_.buyers += account_id in bought
        figures_.per_customer.append(revenue[account_id] / 100)
        minor[span.group] += revenue[account_id]
    for name, figures_ in out.items():
        figures_.revenue = from_minor(minor[name])
    return out


def _cost_points(session: Session, test: Test, placed: dict[int, Placed]) -> Decimal:
    """The points the test gave beyond the usual rules, as each accrual, re-pricing, return
    and cancellation recorded them: a purchase cancelled in full took back what the test
    gave it, so it costs nothing, and one accrued again costs once."""
    total = Decimal(0)
    rows = session.execute(select(Entry.account_id, Entry.details).where(
        Entry.kind.in_(("accrual", "reversal")), Entry.purchase_at >= test.starts,
        Entry.purchase_at < test.ends))
    for account_id, details in rows:
        placed_test = ((details or {}).get("tests") or {}).get(test.name)
        if placed_test is None or account_id not in placed:
            continue
        total += Decimal(placed_test["points"])
    return total


def _sends(session: Session, test: Test, placed: dict[int, Placed]) -> int:
    """The treated customers' mailings within the days each is followed: those sent later
    are not part of what is compared, so not of its cost."""
    treated = [a for a, span in placed.items() if span.group == TREATED]
    sent = 0
    for start in range(0, len(treated), 1000):  # stays under every driver's bind limit
        rows = session.execute(select(TriggerEvent.account_id, TriggerEvent.created_at).where(
            TriggerEvent.code == test.name, TriggerEvent.status == "sent",
            TriggerEvent.account_id.in_(treated[start:start + 1000])))
        sent += sum(1 for account_id, at in rows
                    if placed[account_id].starts <= at < placed[account_id].ends)
    return sent


def report(session: Session, program: Program, name: str, now: datetime) -> Report:
    """The comparison for the test `name` (UnknownCampaignError when there is none)."""
    test = find(program.settings, name)
    return compare(session, program, test, now)


def compare(session: Session, program: Program, test: Test, now: datetime) -> Report:
    placed = population(session, test, now)
    nets = _purchases(session, test, placed)
    groups = _tally(placed, nets)
    treated, control = groups[TREATED], groups[CONTROL]
    counts = _counts(session, test.name)
    if test.kind == "trigger":
        cost_points = None
        cost = (test.cost_per_send * _sends(session, test, placed)).quantize(CENT)
    else:
        cost_points = _cost_points(session, test, placed)
        cost = (cost_points * program.settings.point_value).quantize(CENT)
    incremental = None
    if treated.customers and control.customers:
        assert treated.revenue_per_customer is not None
        assert control.revenue_per_customer is not None
        # Unrounded per-customer revenues: rounding each to cents first would multiply the
        # rounding by the treated count.
        lift = treated.revenue / treated.customers - control.revenue / control.customers
        incremental = (lift * treated.customers).quantize(CENT)
    roi = ((incremental - cost) / cost).quantize(figures.RATE) \
        if incremental is not None and cost > 0 else None
    return Report(
        test=test, finished=test.kind == "trigger" or test.finished(now), groups=groups,
        recorded={name: counts.get(name, 0) for name in GROUPS},
        purchase_rate=figures.rates(treated.buyers, treated.customers, control.buyers,
                                    control.customers),
        average_check=figures.welch(treated.checks, control.checks),
        revenue_per_customer=figures.welch(treated.per_customer, control.per_customer),
        cost_points=cost_points, cost=cost, incremental_revenue=incremental, roi=roi)


def _counts(session: Session, name: str) -> dict[str, int]:
    """How many customers the table has recorded in each group of `name`."""
    rows = session.execute(select(CampaignGroup.grp, func.count(CampaignGroup.id))
                           .where(CampaignGroup.campaign == name).group_by(CampaignGroup.grp))
    return {grp: count for grp, count in rows}


def summaries(session: Session, program: Program, now: datetime) -> list[dict[str, Any]]:
    """Every configured test with its recorded group sizes (`campaigns list`)."""
    out = []
    for test in tests(program.settings):
        counts = _counts(session, test.name)
        out.append({"name": test.name, "kind": test.kind,
                    "control_share": str(test.control_share),
                    "starts": test.starts.isoformat() if test.starts else None,
                    "ends": test.ends.isoformat() if test.ends else None,
                    "days": test.days,
                    "finished": test.kind == "trigger" or test.finished(now),
                    "treated": counts.get(TREATED, 0), "control": counts.get(CONTROL, 0)})
    return out


def incremental_revenue(session: Session, program: Program, since: datetime,
                        until: datetime) -> Decimal | None:
    """Revenue the campaigns with a control group brought beyond what their control groups
    bought, summed over those that ended in [since, until); None when none did (or none had
    customers in both groups): the program's ROI is then not stated rather than invented."""
    found: list[Decimal] = []
    for test in ended(program, since, until):
        value = compare(session, program, test, until).incremental_revenue
        if value is not None:
            found.append(value)
    return sum(found, Decimal("0.00")) if found else None


def ended(program: Program, since: datetime, until: datetime) -> Iterable[Test]:
    return [t for t in tests(program.settings) if t.kind == "campaign"
            and t.ends is not None and since <= t.ends < until]
