"""Program analytics: a handful of aggregate queries over the ledger, never a loop per account.

Two kinds of figures. Snapshot figures describe the books as they are now: accounts, the
outstanding balance, the tier distribution, the repeat-purchase rate. Period figures count
entries whose `occurred_at` falls in [since, until): points moved by kind, purchases, active
customers, retention against the previous period of the same length.

Point movements are signed sums of entry amounts (credits positive, debits negative), so over
all time they add up to the outstanding balance. Purchases are net: a reversal carries the
negative purchase amount and a purchase count of -1, so a returned purchase counts zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from connector.campaigns.effect import campaign_effect, effect_row
from connector.codes import catalog as promo_catalog
from connector.i18n import Translator
from connector.jsonable import fields_as_json
from connector.ledger.models import ENTRY_KINDS, Account, Entry
from connector.money import from_minor
from connector.nps.report import NPSReport, Tally, nps_report
from connector.program import Program
from connector.referrals import stats as referrals
from connector.rewards import stats as rewards

RATE_QUANTUM = Decimal("0.0001")
MONEY_QUANTUM = Decimal("0.01")


@dataclass(frozen=True)
class ProgramStats:
    """Points and money are Decimal; rates are shares in [0, 1] to four places. A rate or the
    average check is None when there is nothing to divide by (no buyers, nobody active in the
    previous period, no net purchases in the period)."""

    since: datetime
    until: datetime
    accounts_total: int
    accounts_new: int
    accrued: Decimal
    bonuses: Decimal
    redeemed: Decimal
    expired: Decimal
    reversed: Decimal
    adjusted: Decimal
    outstanding: Decimal
    tiers: dict[str, int]
    purchases: int
    purchase_amount: Decimal
    average_check: Decimal | None
    active_customers: int
    repeat_rate: Decimal | None
    previously_active: int
    retention: Decimal | None
    # Bring a friend in the period: links made, newcomers' first purchases, bonuses paid to
    # both sides.
    referrals_invited: int = 0
    referrals_converted: int = 0
    referral_points: Decimal = Decimal("0.00")
    # Returns in the period (partial or whole, connector.ledger.returns): how many, the
    # points they moved (taken back, net of redeemed points given back) and the money.
    returns: int = 0
    returned_points: Decimal = Decimal("0.00")
    returned_amount: Decimal = Decimal("0.00")
    # Promo codes used in the period and the points they granted (part of `accrued`).
    promo_codes_used: int = 0
    promo_points: Decimal = Decimal("0.00")
    # Rewards claimed in the period (cancelled ones left out), the points they took, and
    # the claims still to hand over now.
    rewards_claimed: int = 0
    reward_points: Decimal = Decimal("0.00")
    rewards_open: int = 0
    # -- campaign effect (connector.campaigns.effect) ------------------------------------
    # Campaigns with a control group that ended in the period: how many, the revenue they
    # brought beyond their control groups (None: not measurable), their cost.
    campaign_effect: dict[str, Any] = field(default_factory=dict)
    # -- end of campaign effect ----------------------------------------------------------
    # NPS in the period (connector.nps; the block at the end of this module).
    nps: NPSReport | None = None

    def as_json(self) -> dict[str, Any]:
        return fields_as_json(self)


def ratio(numerator: int, denominator: int) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATE_QUANTUM, ROUND_HALF_UP)


def program_stats(session: Session, program: Program, *, since: datetime,
                  until: datetime) -> ProgramStats:
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    if until <= since:
        raise ValueError("until must be after since")
    accounts = _accounts(session, since, until)
    moved, purchase_minor, purchases = _movements(session, since, until)
    active, previous, retained = activity(session, since, until)
    friends = referrals.in_period(session, since, until)
    returns, returned_points, returned_amount = _returns(session, since, until)
    codes_used, code_points = promo_catalog.in_period(session, since, until)
    claims = rewards.in_period(session, since, until)
    average = None
    if purchases > 0:
        average = (from_minor(purchase_minor) / purchases).quantize(MONEY_QUANTUM, ROUND_HALF_UP)
    return ProgramStats(
        since=since,
        until=until,
        accounts_total=accounts["total"],
        accounts_new=accounts["new"],
        accrued=from_minor(moved.get("accrual", 0)),
        bonuses=from_minor(moved.get("bonus", 0)),
        redeemed=from_minor(moved.get("redemption", 0)),
        expired=from_minor(moved.get("expiry", 0)),
        reversed=from_minor(moved.get("reversal", 0)),
        adjusted=from_minor(moved.get("adjustment", 0)),
        outstanding=from_minor(accounts["outstanding"]),
        tiers=_tiers(session, program),
        purchases=purchases,
        purchase_amount=from_minor(purchase_minor),
        average_check=average,
        active_customers=active,
        repeat_rate=ratio(accounts["repeat"], accounts["buyers"]),
        previously_active=previous,
        retention=ratio(retained, previous),
        referrals_invited=friends.invited,
        referrals_converted=friends.converted,
        referral_points=friends.points_paid,
        returns=returns,
        returned_points=from_minor(returned_points),
        returned_amount=from_minor(returned_amount),
        promo_codes_used=codes_used,
        promo_points=code_points,
        rewards_claimed=claims.claimed,
        reward_points=claims.points,
        rewards_open=claims.open,
        campaign_effect=campaign_effect(session, program, since, until),  # campaign effect
        nps=nps_in_period(session, program, since, until),
    )


def _accounts(session: Session, since: datetime, until: datetime) -> dict[str, int]:
    """One pass over the accounts for every snapshot count."""
    created_in_period = (Account.created_at >= since) & (Account.created_at < until)
    row = session.execute(select(
        func.count(),
        func.coalesce(func.sum(case((created_in_period, 1), else_=0)), 0),
        func.coalesce(func.sum(Account.balance), 0),
        func.coalesce(func.sum(case((Account.purchase_count >= 2, 1), else_=0)), 0),
        func.coalesce(func.sum(case((Account.purchase_count >= 1, 1), else_=0)), 0),
    ).select_from(Account)).one()
    # PostgreSQL sums BIGINT as NUMERIC (Decimal); both backends give whole numbers here.
    total, new, outstanding, repeat, buyers = (int(value) for value in row)
    return {"total": total, "new": new, "outstanding": outstanding, "repeat": repeat,
            "buyers": buyers}


def _movements(session: Session, since: datetime,
               until: datetime) -> tuple[dict[str, int], int, int]:
    """Points by entry kind, net purchase amount and net purchase count in the period."""
    rows = session.execute(
        select(Entry.kind,
               func.coalesce(func.sum(Entry.amount), 0),
               func.coalesce(func.sum(Entry.purchase_amount), 0),
               func.coalesce(func.sum(Entry.purchase_count), 0))
        # Naming every kind lets PostgreSQL range-scan ix_entries_kind_occurred per kind.
        .where(Entry.kind.in_(ENTRY_KINDS), Entry.occurred_at >= since,
               Entry.occurred_at < until)
        .group_by(Entry.kind))
    moved: dict[str, int] = {}
    purchase_amount = purchase_count = 0
    for kind, amount, spend, count in rows:
        moved[kind] = int(amount)
        purchase_amount += int(spend)
        purchase_count += int(count)
    return moved, purchase_amount, purchase_count


def _returns(session: Session, since: datetime, until: datetime) -> tuple[int, int, int]:
    """(returns, points, money) of the period's reversals that name a return. The mark is
    in the JSON details, which the two databases query differently; reversals are few, so
    they are read and told apart here."""
    rows = session.execute(
        select(Entry.amount, Entry.purchase_amount, Entry.details)
        .where(Entry.kind == "reversal", Entry.occurred_at >= since,
               Entry.occurred_at < until))
    count = points = money = 0
    for amount, spend, details in rows:
        if details and "return" in details:
            count += 1
            points += int(amount)
            money -= int(spend or 0)
    return count, points, money


def activity(session: Session, since: datetime, until: datetime) -> tuple[int, int, int]:
    """(active now, active in the previous period, active in both), from one grouped scan;
    a purchase (an accrual entry) is activity. Retention here and churn in the money view
    both come from it."""
    previous_since = since - (until - since)
    per_account = (
        select(func.max(case((Entry.occurred_at < since, 1), else_=0)).label("before"),
               func.max(case((Entry.occurred_at >= since, 1), else_=0)).label("now"))
        .where(Entry.kind == "accrual", Entry.occurred_at >= previous_since,
               Entry.occurred_at < until)
        .group_by(Entry.account_id)
        .subquery())
    row = session.execute(select(
        func.coalesce(func.sum(per_account.c.now), 0),
        func.coalesce(func.sum(per_account.c.before), 0),
        func.coalesce(func.sum(per_account.c.before * per_account.c.now), 0),
    )).one()
    active, previous, retained = (int(value) for value in row)
    return active, previous, retained


def _tiers(session: Session, program: Program) -> dict[str, int]:
    """Accounts per tier in the program's order; a tier no longer configured comes last."""
    counts = dict(session.execute(
        select(Account.tier, func.count()).group_by(Account.tier)).all())
    ordered = {tier.name: int(counts.pop(tier.name, 0)) for tier in program.settings.tiers}
    ordered.update((name, int(count)) for name, count in sorted(counts.items()))
    return ordered


def format_stats(stats: ProgramStats, zone: ZoneInfo, t: Translator) -> list[str]:
    """The figures as an aligned two-column table for a terminal, in `t`'s language."""

    def amount(value: Decimal) -> str:
        return t.number(value, 2)

    def signed(points: Decimal) -> str:
        return f"+{amount(points)}" if points > 0 else amount(points)

    period = " - ".join(t.moment(moment, zone) for moment in (stats.since, stats.until))
    rows = [
        (t._("period"), f"{period} ({zone.key})"),
        (t._("accounts"), t._("%(total)s (%(new)s new in period)",
                              total=t.number(stats.accounts_total),
                              new=t.number(stats.accounts_new))),
        (t._("outstanding"), t._("%(points)s points", points=amount(stats.outstanding))),
        (t._("accrued"), signed(stats.accrued)),
        (t._("bonuses"), signed(stats.bonuses)),
        (t._("redeemed"), signed(stats.redeemed)),
        (t._("expired"), signed(stats.expired)),
        (t._("reversed"), signed(stats.reversed)),
        (t._("returns"), t._("%(count)s, %(points)s points, %(amount)s returned",
                             count=t.number(stats.returns),
                             points=signed(stats.returned_points),
                             amount=amount(stats.returned_amount))),
        (t._("adjusted"), signed(stats.adjusted)),
        (t._("purchases"), t._("%(count)s, %(amount)s in total",
                               count=t.number(stats.purchases),
                               amount=amount(stats.purchase_amount))),
        (t._("average check"), t.number(stats.average_check, 2)),
        (t._("active"), t._("%(count)s customers with a purchase",
                            count=t.number(stats.active_customers))),
        (t._("repeat rate"), t._("%(rate)s of buyers bought twice or more",
                                 rate=t.percent(stats.repeat_rate, 2))),
        (t._("retention"), t._("%(rate)s of %(count)s active in the previous period",
                               rate=t.percent(stats.retention, 2),
                               count=t.number(stats.previously_active))),
        (t._("tiers"), ", ".join(f"{name} {t.number(count)}"
                                 for name, count in stats.tiers.items())),
        (t._("referrals"), t._("%(invited)s invited, %(converted)s converted, %(points)s "
                               "points paid", invited=t.number(stats.referrals_invited),
                               converted=t.number(stats.referrals_converted),
                               points=amount(stats.referral_points))),
        (t._("promo codes"), t._("%(used)s used, %(points)s points granted",
                                 used=t.number(stats.promo_codes_used),
                                 points=amount(stats.promo_points))),
        (t._("rewards"), t._("%(claimed)s claimed, %(points)s points spent, %(open)s to hand "
                             "over", claimed=t.number(stats.rewards_claimed),
                             points=amount(stats.reward_points),
                             open=t.number(stats.rewards_open))),
    ]
    # -- campaign effect (connector.campaigns.effect) --
    rows.append(effect_row(stats.campaign_effect, t))
    rows += nps_rows(stats.nps, t)
    width = max(14, *(len(label) + 1 for label, _ in rows))
    return [f"{label:<{width}} {value}" for label, value in rows]


# -- NPS (connector.nps) -----------------------------------------------------------------------
# Kept in one block: each account's latest 0-10 answer in the period, overall, by tier, by RFM
# segment and by month (connector.nps.report says how it is counted).
def nps_in_period(session: Session, program: Program, since: datetime,
                  until: datetime) -> NPSReport:
    settings = program.settings
    return nps_report(session, [tier.name for tier in settings.tiers], settings.zone,
                      since=since, until=until)


def nps_rows(report: NPSReport | None, t: Translator) -> list[tuple[str, str]]:
    if report is None:
        return []

    def score(tally: Tally) -> str:
        return "—" if tally.nps is None else t.number(tally.nps, 1)

    def split(items: list[tuple[str, Tally]]) -> str:
        shown = [f"{label} {score(tally)} ({t.number(tally.answers)})"
                 for label, tally in items if tally.answers]
        return ", ".join(shown) or "—"

    overall = report.overall
    rows = [(t._("NPS"), t._("%(nps)s: %(answers)s answered, %(promoters)s promoters, "
                             "%(passives)s passives, %(detractors)s detractors",
                             nps=score(overall), answers=t.number(overall.answers),
                             promoters=t.number(overall.promoters),
                             passives=t.number(overall.passives),
                             detractors=t.number(overall.detractors)))]
    if overall.answers:
        rows += [
            (t._("NPS by tier"), split(list(report.by_tier.items()))),
            (t._("NPS by segment"), split([(code or t._("not scored"), tally)
                                           for code, tally in report.by_segment.items()])),
            (t._("NPS by month"), split([(t.month(month.start), month.tally)
                                         for month in report.by_month])),
        ]
    return rows
