"""The money view: what the program owes, what it cost and what its members bring, in the
program currency, from a handful of aggregate queries over the ledger (never one per account).

Points become money at `program.point_value` (what one point pays for), rounded half up to
the cent once per figure. Snapshot figures (liability, LTV) describe the books at `at`;
period figures count what happened in [since, until). The definitions are README's "Money
view"; each one is a sentence there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from connector.campaigns.report import incremental_revenue
from connector.config import SEGMENTS, ProgramSettings
from connector.i18n import Translator
from connector.jsonable import fields_as_json
from connector.ledger.models import ENTRY_KINDS, Account, Allocation, Entry, Lot
from connector.money import from_minor, to_minor
from connector.program import Program
from connector.rewards import stats as rewards
from connector.stats import activity

CENT = Decimal("0.01")
RATE_QUANTUM = Decimal("0.0001")
EXPIRY_HORIZONS = (30, 90)  # days ahead: the liability that expires soon
# Points the program gives (purchases and bonuses): the denominator of breakage. Openings
# (imported balances), hand adjustments and points given back by returns are not issued.
ISSUING_KINDS = ("accrual", "bonus")


@dataclass(frozen=True)
class LTVRow:
    """Members of one tier or RFM segment who bought at least once: how many, their
    lifetime net purchases, and the average per customer (None: nobody bought)."""

    group: str | None  # a tier name or segment code; None: segment not scored yet
    customers: int
    revenue: Decimal
    ltv: Decimal | None

    def as_json(self) -> dict[str, Any]:
        return {"group": self.group, "customers": self.customers,
                "revenue": str(self.revenue), "ltv": None if self.ltv is None else str(self.ltv)}


@dataclass(frozen=True)
class MoneyView:
    """Money is Decimal in `currency`, points Decimal; rates are shares in [0, 1] to four
    places, None when there is nothing to divide by."""

    since: datetime
    until: datetime
    at: datetime  # the moment the snapshot figures describe
    currency: str
    point_value: Decimal
    # Liability at `at`: points on positive balances (overdrafts are not netted) and their
    # value; the part of it in lots expiring within 30 and 90 days.
    outstanding_points: Decimal
    liability: Decimal
    expiring_30_points: Decimal
    expiring_30: Decimal
    expiring_90_points: Decimal
    expiring_90: Decimal
    # Breakage by cohort: of the points issued in the period (net of what reversals took
    # back from them), the share expired since.
    issued_points: Decimal
    issued_expired_points: Decimal
    breakage: Decimal | None
    # Cost in the period: redemptions (less what returns gave back of them since) and
    # rewards (cancelled claims left out) at point_value; tier discounts are given
    # by the CRM or the till and never reach the ledger, so they stay None (not known) and
    # `cost` is the known part only.
    redeemed_points: Decimal
    redeemed_cost: Decimal
    reward_points: Decimal
    reward_cost: Decimal
    tier_discounts: Decimal | None
    cost: Decimal
    revenue: Decimal  # members' purchases in the period, net of returns
    cost_share: Decimal | None  # cost / revenue; None unless revenue > 0
    # Churn: of the customers who bought in the previous period of the same length, the
    # share who did not buy in this one (1 - retention).
    previously_active: int
    churned: int
    churn: Decimal | None
    ltv_tiers: list[LTVRow] = field(default_factory=list)
    ltv_segments: list[LTVRow] = field(default_factory=list)
    # ROI = (incremental revenue - cost) / cost, the incremental revenue being what the
    # campaigns with a holdout (control) group that ended in the period brought beyond their
    # control groups; None when none did, or nothing cost: revenue of members alone would
    # credit the program with sales it did not cause.
    incremental_revenue: Decimal | None = None
    roi: Decimal | None = None

    def as_json(self) -> dict[str, Any]:
        return fields_as_json(self)


def to_money(points: Decimal, point_value: Decimal) -> Decimal:
    return (points * point_value).quantize(CENT, ROUND_HALF_UP)


def share(part: Decimal | int, whole: Decimal | int) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(RATE_QUANTUM, ROUND_HALF_UP)


def money_view(session: Session, program: ProgramSettings, *, since: datetime,
               until: datetime, at: datetime) -> MoneyView:
    if since.tzinfo is None or until.tzinfo is None or at.tzinfo is None:
        raise ValueError("since, until and at must be timezone-aware")
    if until <= since:
        raise ValueError("until must be after since")
    value = program.point_value
    owed = outstanding_points(session)
    soon = expiring_points(session, at)
    issued, expired = breakage_cohort(session, since, until)
    redeemed, revenue = redeemed_and_revenue(session, since, until)
    claims = rewards.in_period(session, since, until)
    _, previous, retained = activity(session, since, until)
    redeemed_cost = to_money(redeemed, value)
    reward_cost = to_money(claims.points, value)
    cost = redeemed_cost + reward_cost
    incremental = incremental_revenue(session, Program(program), since, until)
    return MoneyView(
        since=since, until=until, at=at, currency=program.currency, point_value=value,
        outstanding_points=owed, liability=to_money(owed, value),
        expiring_30_points=soon[30], expiring_30=to_money(soon[30], value),
        expiring_90_points=soon[90], expiring_90=to_money(soon[90], value),
        issued_points=issued, issued_expired_points=expired, breakage=share(expired, issued),
        redeemed_points=redeemed, redeemed_cost=redeemed_cost,
        reward_points=claims.points, reward_cost=reward_cost, tier_discounts=None,
        cost=cost, revenue=revenue,
        # Returns of earlier sales can leave a period's net revenue negative: no share then.
        cost_share=share(cost, revenue) if revenue > 0 else None,
        previously_active=previous, churned=previous - retained,
        churn=share(previous - retained, previous),
        ltv_tiers=ltv_by(session, Account.tier, [tier.name for tier in program.tiers],
                         every=True),
        ltv_segments=ltv_by(session, Account.segment, list(SEGMENTS)),
        incremental_revenue=incremental,
        roi=share(incremental - cost, cost) if incremental is not None and cost > 0 else None,
    )


def outstanding_points(session: Session) -> Decimal:
    total = session.scalar(select(func.coalesce(func.sum(
        case((Account.balance > 0, Account.balance), else_=0)), 0)))
    return from_minor(int(total or 0))


def expiring_points(session: Session, at: datetime) -> dict[int, Decimal]:
    """Points left in lots that expire before at + N days, for each horizon N. A lot already
    past its date but not yet expired by the job counts: it goes at the job's next run."""
    sums = session.execute(select(*(
        func.coalesce(func.sum(case((Lot.expires_at < at + timedelta(days=days),
                                     Lot.remaining), else_=0)), 0)
        for days in EXPIRY_HORIZONS))
        .where(Lot.remaining > 0, Lot.expires_at.is_not(None))).one()
    return {days: from_minor(int(total)) for days, total in zip(EXPIRY_HORIZONS, sums,
                                                                 strict=True)}


def breakage_cohort(session: Session, since: datetime, until: datetime
                    ) -> tuple[Decimal, Decimal]:
    """(points issued in the period, the part of them expired since): lots of accrual and
    bonus entries earned in [since, until), less what reversals took back from them (a
    returned purchase's points were never really given), and what expiry entries took from
    them or from the redeemed points of theirs a return gave back."""
    issuer = aliased(Entry)
    debit = aliased(Entry)
    cohort = (Lot.earned_at >= since) & (Lot.earned_at < until) \
        & issuer.kind.in_(ISSUING_KINDS)
    credited = session.scalar(
        select(func.coalesce(func.sum(Lot.amount), 0))
        .join(issuer, issuer.id == Lot.entry_id).where(cohort))
    # Redeemed points a return (or a cancelled claim) gave back sit in a new lot of the
    # reversal, with the dates of the lot they came from: still points of that cohort, issued
    # once (in the first lot), so what expires of them or is taken back from them counts. An
    # issuing lot of the account earned at the same instant says which cohort they are of.
    origin = aliased(Lot)
    first_issuer = aliased(Entry)
    given_back = (issuer.kind == "reversal") & (Lot.earned_at >= since) \
        & (Lot.earned_at < until) & (
            select(origin.id).join(first_issuer, first_issuer.id == origin.entry_id)
            .where(origin.account_id == Lot.account_id, origin.earned_at == Lot.earned_at,
                   first_issuer.kind.in_(ISSUING_KINDS))
            .exists())
    taken = session.execute(
        select(func.coalesce(func.sum(case((debit.kind == "reversal", Allocation.amount),
                                           else_=0)), 0),
               func.coalesce(func.sum(case((debit.kind == "expiry", Allocation.amount),
                                           else_=0)), 0))
        .select_from(Allocation)
        .join(Lot, Lot.id == Allocation.lot_id)
        .join(issuer, issuer.id == Lot.entry_id)
        .join(debit, debit.id == Allocation.entry_id)
        .where(cohort | given_back, debit.kind.in_(("reversal", "expiry")))).one()
    reversed_, expired = (int(value) for value in taken)
    return from_minor(int(credited or 0) - reversed_), from_minor(expired)


def redeemed_and_revenue(session: Session, since: datetime, until: datetime
                         ) -> tuple[Decimal, Decimal]:
    """(points redeemed at purchases in the period less what returns and reversals gave
    back of them since, members' net purchases in the period)."""
    row = session.execute(
        select(func.coalesce(func.sum(case((Entry.kind == "redemption", -Entry.amount),
                                           else_=0)), 0),
               func.coalesce(func.sum(Entry.purchase_amount), 0))
        # Naming every kind lets PostgreSQL range-scan ix_entries_kind_occurred per kind.
        .where(Entry.kind.in_(ENTRY_KINDS), Entry.occurred_at >= since,
               Entry.occurred_at < until)).one()
    redeemed = int(row[0]) - redemptions_given_back(session, since, until)
    return from_minor(redeemed), from_minor(int(row[1]))


def redemptions_given_back(session: Session, since: datetime, until: datetime) -> int:
    """Hundredths of the period's redemptions that came back since: a return gives back its
    share of the points that paid for the purchase (details["return"]
    ["redemption_given_back"]), a full reversal (details["reversed"]: `reverse`, or the
    return that ends a purchase) all that was not given back yet. One query over the
    entries of the sources that redeemed in the period; a source's give-backs are spread
    over its redemptions in proportion (nearly always it has one)."""
    redeemed = aliased(Entry)
    related = aliased(Entry)
    sources = (select(redeemed.account_id, redeemed.source)
               .where(redeemed.kind == "redemption", redeemed.occurred_at >= since,
                      redeemed.occurred_at < until, redeemed.source.is_not(None))
               .distinct().subquery())
    rows = session.execute(
        select(related.account_id, related.source, related.kind, related.amount,
               related.details, related.occurred_at)
        .join(sources, (sources.c.account_id == related.account_id)
              & (sources.c.source == related.source))
        .where(related.kind.in_(("redemption", "reversal")))
        .order_by(related.id))
    books: dict[tuple[int, str], list[int]] = {}  # [in the period, all, given back]
    open_: dict[tuple[int, str], list[int]] = {}  # since the last full reversal: [paid, back]
    for account_id, source, kind, amount, details, occurred_at in rows:
        key = (account_id, source)
        book = books.setdefault(key, [0, 0, 0])
        standing = open_.setdefault(key, [0, 0])
        if kind == "redemption":
            book[1] -= amount
            standing[0] -= amount
            if since <= occurred_at < until:
                book[0] -= amount
            continue
        details = details or {}
        back = details.get("return", {}).get("redemption_given_back")
        if back is not None:
            given = to_minor(Decimal(back))
            standing[1] += given
        elif "reversed" in details:
            given = max(standing[0] - standing[1], 0)
            open_[key] = [0, 0]
        else:
            continue  # a reward cancelled, a re-pricing: no redemption comes back
        book[2] += given
    return sum(min(in_period, (given * in_period) // paid) for in_period, paid, given
               in books.values() if paid > 0)


def ltv_by(session: Session, column: Any, order: list[str], *,
           every: bool = False) -> list[LTVRow]:
    """LTV per value of `column` (tier or segment) over accounts with a purchase, in `order`
    (`every`: each name of it, bought or not); values not in it follow by name, the
    unscored (None) last."""
    rows = session.execute(
        select(column, func.count(), func.coalesce(func.sum(Account.purchase_total), 0))
        .where(Account.purchase_count > 0).group_by(column))
    found = {group: (int(count), from_minor(int(total))) for group, count, total in rows}
    names: list[str | None] = [name for name in order if every or name in found]
    names += sorted(name for name in found if name is not None and name not in order)
    if None in found:
        names.append(None)
    result = []
    for name in names:
        customers, revenue = found.get(name, (0, from_minor(0)))
        ltv = (revenue / customers).quantize(CENT, ROUND_HALF_UP) if customers else None
        result.append(LTVRow(name, customers, revenue, ltv))
    return result


def format_money(view: MoneyView, t: Translator) -> list[str]:
    """The money view as a heading and an aligned two-column table for a terminal, in `t`'s
    language (printed by `stats` below its own table)."""

    def money(value: Decimal | None) -> str:
        return t.money(value, view.currency) if value is not None else t._("not known")

    def part(value: Decimal, points: Decimal) -> str:
        return t._("%(money)s (%(points)s)", money=money(value), points=t.points(points))

    def ltv(rows: list[LTVRow]) -> str:
        return ", ".join(t._("%(group)s %(ltv)s (%(count)s)",
                             group=row.group or t._("not scored"),
                             ltv=t.money(row.ltv, view.currency),
                             count=t.number(row.customers)) for row in rows) or "—"

    rows = [
        (t._("liability"), part(view.liability, view.outstanding_points)),
        (t._("expiring 30 d"), part(view.expiring_30, view.expiring_30_points)),
        (t._("expiring 90 d"), part(view.expiring_90, view.expiring_90_points)),
        (t._("breakage"), t._("%(rate)s of %(points)s issued in the period expired since",
                              rate=t.percent(view.breakage, 2),
                              points=t.points(view.issued_points))),
        (t._("program cost"), t._("%(total)s: redeemed %(redeemed)s, rewards %(rewards)s, "
                                  "tier discounts %(discounts)s",
                                  total=money(view.cost), redeemed=money(view.redeemed_cost),
                                  rewards=money(view.reward_cost),
                                  discounts=money(view.tier_discounts))),
        (t._("revenue"), t._("%(amount)s of members, net of returns",
                             amount=money(view.revenue))),
        (t._("cost / revenue"), t.percent(view.cost_share, 2)),
        (t._("churn"), t._("%(rate)s of %(count)s active in the previous period",
                           rate=t.percent(view.churn, 2),
                           count=t.number(view.previously_active))),
        (t._("ROI"), t.percent(view.roi, 2) if view.roi is not None
         else t._("— (needs a campaign with a holdout group)")),
        (t._("LTV by tier"), ltv(view.ltv_tiers)),
        (t._("LTV by segment"), ltv(view.ltv_segments)),
    ]
    width = max(14, *(len(label) + 1 for label, _ in rows))
    heading = t._("Money view, %(currency)s (1 point = %(value)s)", currency=view.currency,
                  value=t.money(view.point_value, view.currency))
    return [heading, *(f"{label:<{width}} {value}" for label, value in rows)]
