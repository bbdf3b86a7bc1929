"""Referral figures: per referrer (account view, API, CLI) and per period (`stats`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from connector.ledger.models import Account, Entry
from connector.money import from_minor
from connector.privacy import anonymous
from connector.referrals.models import ReferralEvent

REFERRER_REWARD = "referral:%"               # the referrer's bonus (key and source)
NEWCOMER_BONUS = "referral_newcomer:%"        # the newcomer's


@dataclass(frozen=True)
class Referrals:
    """Customers a referrer brought: linked (invited), of them with a first purchase
    (converted), and the referral bonus points the referrer earned by them."""

    invited: int = 0
    converted: int = 0
    points_paid: Decimal = Decimal("0.00")

    def as_json(self) -> dict[str, Any]:
        return {"invited": self.invited, "converted": self.converted,
                "points_paid": str(self.points_paid)}


_REFERRED = Account.referred_by_id == bindparam("account_id")
# The account view's referral figures as scalar subqueries, to be read in one statement with
# the view's other figures (connector.ledger.queries), parameters `account_id` and
# `referrer_id`: the referrer's code (NULL when not referred), the customers this one
# linked, of them those who bought, and the referral bonus points paid for them.
FOR_VIEW: list[ColumnElement[Any]] = [
    # An erased referrer's code went with its data: the anonymous id it is kept under
    # (`erased-<hex>`) stands in, so the customer still shows as referred, and by whom.
    select(func.coalesce(Account.referral_code, case(
        (~anonymous.not_erased(Account.contact_id), Account.contact_id))))
    .where(Account.id == bindparam("referrer_id")).scalar_subquery(),
    select(func.count()).select_from(Account).where(_REFERRED).scalar_subquery(),
    select(func.count(Account.first_purchase_at)).where(_REFERRED).scalar_subquery(),
    select(func.coalesce(func.sum(Entry.amount), 0)).where(
        Entry.account_id == bindparam("account_id"), Entry.kind == "bonus",
        Entry.source.like(REFERRER_REWARD)).scalar_subquery(),
]


def read_view(values: Sequence[Any]) -> tuple[str | None, Referrals]:
    """The referrer's code and the Referrals, from the values of FOR_VIEW's columns."""
    code, invited, converted, paid = values
    return code, Referrals(int(invited or 0), int(converted or 0), from_minor(int(paid or 0)))


def in_period(session: Session, since: datetime, until: datetime) -> Referrals:
    """Links made, newcomers' first purchases and referral bonuses (both sides) in
    [since, until)."""
    invited = session.scalar(select(func.count()).select_from(ReferralEvent).where(
        ReferralEvent.outcome == "linked", ReferralEvent.created_at >= since,
        ReferralEvent.created_at < until)) or 0
    newcomer = aliased(Account)
    converted = session.scalar(select(func.count()).select_from(newcomer).where(
        newcomer.referred_by_id.is_not(None), newcomer.first_purchase_at >= since,
        newcomer.first_purchase_at < until)) or 0
    paid = session.scalar(select(func.coalesce(func.sum(Entry.amount), 0)).where(
        Entry.kind == "bonus",
        or_(Entry.source.like(REFERRER_REWARD), Entry.source.like(NEWCOMER_BONUS)),
        Entry.occurred_at >= since, Entry.occurred_at < until))
    return Referrals(int(invited), int(converted), from_minor(int(paid or 0)))


@dataclass(frozen=True)
class Skipped:
    """A code given for this customer that did not link (or a reward the cap withheld)."""

    code: str | None
    outcome: str
    detail: str | None
    via: str | None
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "outcome": self.outcome, "detail": self.detail,
                "via": self.via, "at": self.at.isoformat()}


def skipped(session: Session, account_id: int, *, limit: int = 5) -> list[Skipped]:
    """The latest codes that did not link for this newcomer, newest first."""
    rows = session.execute(
        select(ReferralEvent.code, ReferralEvent.outcome, ReferralEvent.detail,
               ReferralEvent.via, ReferralEvent.created_at)
        .where(ReferralEvent.account_id == account_id, ReferralEvent.outcome != "linked")
        .order_by(ReferralEvent.id.desc()).limit(limit))
    return [Skipped(*row) for row in rows]
