"""The cap on referral rewards per referrer per calendar month (`program.referral_monthly_cap`,
0 = none), counted in the program's time zone from the referrer's reward entries. Runs in the
ledger's transaction with the referrer's row locked, so two conversions cannot both take the
last place."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connector.ledger.models import Account, Entry
from connector.program import Program
from connector.referrals.models import ReferralEvent

REWARD_KEY = "referral:"  # the referrer's bonus: idempotency key and source referral:<newcomer>


def month_bounds(at: datetime, program: Program) -> tuple[datetime, datetime]:
    """The calendar month holding `at` in the program's zone, as UTC [start, end)."""
    local = at.astimezone(program.zone)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start.astimezone(UTC), end.astimezone(UTC)


def rewards_in_month(session: Session, program: Program, referrer_id: int,
                     at: datetime) -> int:
    start, end = month_bounds(at, program)
    return session.scalar(select(func.count()).select_from(Entry).where(
        Entry.account_id == referrer_id, Entry.kind == "bonus",
        Entry.source.like(f"{REWARD_KEY}%"),
        Entry.occurred_at >= start, Entry.occurred_at < end)) or 0


def allows(session: Session, program: Program, referrer_id: int, at: datetime) -> bool:
    cap = program.settings.referral_monthly_cap
    return cap == 0 or rewards_in_month(session, program, referrer_id, at) < cap


def record_capped(session: Session, newcomer: Account, referrer: Account, program: Program,
                  *, now: datetime) -> None:
    session.add(ReferralEvent(
        account_id=newcomer.id, referrer_id=referrer.id, code=referrer.referral_code,
        outcome="capped", via="ledger", created_at=now,
        detail=f"referrer reached program.referral_monthly_cap "
               f"({program.settings.referral_monthly_cap}) this month: no referral bonus"))
