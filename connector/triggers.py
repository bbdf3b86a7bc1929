"""Automation triggers owed to marketing: recorded once per transition, sent by each CRM."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from connector.crm.models import TriggerEvent
from connector.db import Database, utcnow
from connector.ledger.views import Result

TIER_UP = "loyalty_tier_up"
TIER_DOWN = "loyalty_tier_down"
POINTS_EXPIRING = "loyalty_points_expiring"
BIRTHDAY = "loyalty_birthday"
WELCOME = "loyalty_welcome"
POINTS_ACCRUED = "loyalty_points_accrued"
CODES = (TIER_UP, TIER_DOWN, POINTS_EXPIRING, BIRTHDAY, WELCOME, POINTS_ACCRUED)
NAMES = {
    TIER_UP: "Loyalty: tier upgraded",
    TIER_DOWN: "Loyalty: tier downgraded",
    POINTS_EXPIRING: "Loyalty: points expiring soon",
    BIRTHDAY: "Loyalty: birthday bonus granted",
    WELCOME: "Loyalty: welcome bonus granted",
    POINTS_ACCRUED: "Loyalty: points accrued",
}


@dataclass(frozen=True)
class Transition:
    account_id: int
    code: str
    transition: str
    deal_id: str | None = None


def from_results(results: Iterable[Result], *, deal_id: str | None = None) -> list[Transition]:
    """The transitions ledger results carry: points accrued, tier reached, bonuses."""
    found = []
    for result in results:
        if result.entry_id is None or result.duplicate:
            continue
        if result.kind == "accrual" and result.points > 0:
            found.append(Transition(result.account_id, POINTS_ACCRUED,
                                    f"entry:{result.entry_id}", deal_id))
        if tier := result.details.get("tier_up"):
            found.append(Transition(result.account_id, TIER_UP, f"tier:{tier}:{result.entry_id}",
                                    deal_id))
        bonus = result.details.get("bonus")
        if result.kind == "bonus" and bonus == "welcome":
            found.append(Transition(result.account_id, WELCOME, "welcome", deal_id))
        if result.kind == "bonus" and bonus == "birthday":
            found.append(Transition(result.account_id, BIRTHDAY,
                                    f"birthday:{result.entry_id}", deal_id))
    return found


def record(db: Database, transitions: Iterable[Transition]) -> int:
    """Store each transition once; a repeated one is ignored. Returns how many were new."""
    added = 0
    for transition in transitions:
        try:
            with db.transaction() as session:
                exists = session.scalar(select(TriggerEvent.id).where(
                    TriggerEvent.account_id == transition.account_id,
                    TriggerEvent.code == transition.code,
                    TriggerEvent.transition == transition.transition))
                if exists is None:
                    session.add(TriggerEvent(
                        account_id=transition.account_id, code=transition.code,
                        transition=transition.transition, deal_id=transition.deal_id,
                        status="pending", attempts=0, created_at=utcnow()))
                    added += 1
        except IntegrityError:
            continue  # recorded concurrently by another worker
    return added
