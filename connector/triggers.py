"""Automation triggers owed to marketing: recorded once per transition, sent by each CRM."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from connector.campaigns import placement
from connector.crm.models import TriggerEvent
from connector.db import Database, utcnow
from connector.i18n import N_, Message, Translator
from connector.ledger.models import Account
from connector.ledger.views import Result
from connector.privacy.anonymous import not_erased
from connector.program import Program

if TYPE_CHECKING:
    from connector.config import ProgramSettings
    from connector.ledger.engine import TierChange

TIER_UP = "loyalty_tier_up"
TIER_DOWN = "loyalty_tier_down"
POINTS_EXPIRING = "loyalty_points_expiring"
BIRTHDAY = "loyalty_birthday"
WELCOME = "loyalty_welcome"
POINTS_ACCRUED = "loyalty_points_accrued"
ANNIVERSARY = "loyalty_anniversary"
POINTS_AVAILABLE = "loyalty_points_available"
REFERRAL_REWARDED = "loyalty_referral_rewarded"
REWARD_CLAIMED = "loyalty_reward_claimed"
CODES = (TIER_UP, TIER_DOWN, POINTS_EXPIRING, BIRTHDAY, WELCOME, POINTS_ACCRUED, ANNIVERSARY,
         POINTS_AVAILABLE, REFERRAL_REWARDED, REWARD_CLAIMED)
NAMES = {
    TIER_UP: "Loyalty: tier upgraded",
    TIER_DOWN: "Loyalty: tier downgraded",
    POINTS_EXPIRING: "Loyalty: points expiring soon",
    BIRTHDAY: "Loyalty: birthday bonus granted",
    WELCOME: "Loyalty: welcome bonus granted",
    POINTS_ACCRUED: "Loyalty: points accrued",
    ANNIVERSARY: "Loyalty: first-purchase anniversary bonus granted",
    POINTS_AVAILABLE: "Loyalty: pending points became available",
    REFERRAL_REWARDED: "Loyalty: referral bonus for a friend's first purchase",
    REWARD_CLAIMED: "Loyalty: reward claimed, hand it over",
}
# What a manager reads of each in the CRM (an amoCRM note or task, a timeline comment), in
# program.language; NAMES are the triggers' own names as registered in the portal.
TEXTS: dict[str, Message] = {
    TIER_UP: N_("Loyalty: tier upgraded"),
    TIER_DOWN: N_("Loyalty: tier downgraded"),
    POINTS_EXPIRING: N_("Loyalty: points expiring soon"),
    BIRTHDAY: N_("Loyalty: birthday bonus granted"),
    WELCOME: N_("Loyalty: welcome bonus granted"),
    POINTS_ACCRUED: N_("Loyalty: points accrued"),
    ANNIVERSARY: N_("Loyalty: first-purchase anniversary bonus granted"),
    POINTS_AVAILABLE: N_("Loyalty: pending points became available"),
    REFERRAL_REWARDED: N_("Loyalty: referral bonus for a friend's first purchase"),
    REWARD_CLAIMED: N_("Loyalty: reward claimed, hand it over"),
}



def text(code: str, t: Translator) -> str:
    """A trigger's text for a manager, in `t`'s language; an unknown code as it is."""
    known = TEXTS.get(code)
    return known.render(t) if known is not None else code


# Why a trigger of a customer in its holdout's control group was never sent.
HELD_OUT = "control group of the trigger's holdout"

YEARLY = {"birthday": BIRTHDAY, "anniversary": ANNIVERSARY}


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
        if result.kind == "bonus" and bonus in YEARLY:
            found.append(Transition(result.account_id, YEARLY[bonus],
                                    f"{bonus}:{result.entry_id}", deal_id))
        referral = result.details.get("referral") or {}
        if referral.get("rewarded") and referral.get("referrer_id"):
            # The referrer's trigger: the deal is the newcomer's, so it runs on the
            # referrer's own latest deal.
            found.append(Transition(int(referral["referrer_id"]), REFERRAL_REWARDED,
                                    f"referral:{result.account_id}"))
    return found


def from_tier_changes(changes: Iterable[TierChange], program: Program) -> list[Transition]:
    """Tier moves found by the recalculation: up or down, once per move."""
    return [Transition(change.account_id,
                       TIER_UP if program.tier_rank(change.new) > program.tier_rank(change.old)
                       else TIER_DOWN, f"tier:{change.old}->{change.new}:{change.at.isoformat()}")
            for change in changes]


@dataclass(frozen=True)
class Due:
    id: int
    account_id: int
    contact_id: str
    code: str
    deal_id: str | None
    transition: str = ""


def due(db: Database, crm: str, portal: str, limit: int) -> list[Due]:
    """Triggers still owed to one CRM portal, oldest first."""
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(TriggerEvent.id, TriggerEvent.account_id, Account.contact_id,
                   TriggerEvent.code, TriggerEvent.deal_id, TriggerEvent.transition)
            .join(Account, Account.id == TriggerEvent.account_id)
            .where(TriggerEvent.status == "pending", Account.crm == crm,
                   Account.portal == portal, not_erased(Account.contact_id))
            .order_by(TriggerEvent.id).limit(limit))
        return [Due(*row) for row in rows]


def mark(db: Database, trigger_id: int, status: str, error: str | None,
         now: datetime) -> None:
    mark_all(db, [(trigger_id, status, error)], now)


def mark_all(db: Database, marks: Iterable[tuple[int, str, str | None]],
             now: datetime) -> None:
    """mark() for several triggers (id, status, error) in one transaction."""
    marks = list(marks)
    if not marks:
        return
    with db.transaction() as session:
        for trigger_id, status, error in marks:
            row = session.get(TriggerEvent, trigger_id)
            if row is not None:
                row.status = status
                row.attempts += 1
                row.last_error = error
                if status == "sent":
                    row.sent_at = now


def record(db: Database, transitions: Iterable[Transition], *, program: Program,
           touch: bool = False) -> int:
    """Store each transition once; a repeated one is ignored. Returns how many were new.
    `touch`: the transition changes what the contact's fields show, so a new one also bumps
    the account's version (write-back), in the same transaction: a crash leaves both or
    neither. A customer in the control group of the trigger's holdout
    ([[program.trigger_holdouts]]) is placed in it and the trigger is kept as skipped, never
    sent, so the report can compare the groups."""
    transitions = list(transitions)
    if not transitions:
        return 0
    with db.transaction() as session:
        return add(session, transitions, program=program.settings, touch=touch)


def add(session: Session, transitions: Iterable[Transition], *, program: ProgramSettings,
        touch: bool = False) -> int:
    """record() inside a transaction the caller already has: one INSERT for all, each
    transition kept once by the UNIQUE key (one recorded concurrently by another worker, or
    before, is skipped by ON CONFLICT DO NOTHING, so the caller's transaction never fails
    on it)."""
    now = utcnow()
    rows = []
    for t in transitions:
        control = placement.withheld(program, session, t.code, t.account_id, now)
        rows.append({"account_id": t.account_id, "code": t.code, "transition": t.transition,
                     "deal_id": t.deal_id, "status": "skipped" if control else "pending",
                     "attempts": 0, "last_error": HELD_OUT if control else None,
                     "created_at": now})
    if not rows:
        return 0
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # Rows as parameters, not inlined: one cached statement, whatever their number.
    added = list(session.scalars(
        insert(TriggerEvent)
        .on_conflict_do_nothing(index_elements=["account_id", "code", "transition"])
        .returning(TriggerEvent.account_id), rows))
    if touch:
        for account_id in added:
            session.execute(update(Account).where(Account.id == account_id).values(
                version=Account.version + 1).execution_options(synchronize_session=False))
    return len(added)
