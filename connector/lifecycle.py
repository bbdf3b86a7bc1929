"""Lifecycle work of the scheduler: birthday and first-purchase anniversary bonuses,
points-expiring warnings, pending points becoming available.

Dates are the program's time zone's. A birthday (or first purchase) on February 29 is
celebrated on February 28 in years without one: the customer gets the bonus every year, never
twice.
"""

from __future__ import annotations

import calendar
import logging
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from connector.ledger.models import Account, Lot
from connector.ledger.views import AccountRef, Result
from connector.privacy.anonymous import not_erased
from connector.services import Services
from connector.triggers import (
    POINTS_AVAILABLE,
    POINTS_EXPIRING,
    Transition,
    from_results,
    record,
)

log = logging.getLogger(__name__)


def celebrated_on(birthday: date, year: int) -> date:
    if birthday.month == 2 and birthday.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return birthday.replace(year=year)


def birthday_bonuses(services: Services, *, today: date | None = None) -> int:
    """Grant the birthday bonus to everyone whose birthday is today, or was within
    `scheduler.catch_up_days` and went ungranted (the scheduler was down); once per year
    each (the key names the year), so running twice a day changes nothing."""
    return _yearly_bonus(services, "birthday", Account.birthday, today)


def anniversary_bonuses(services: Services, *, today: date | None = None) -> int:
    """Grant the anniversary bonus on each anniversary of a customer's first purchase (the
    day in the program's time zone), from the first year on, late within
    `scheduler.catch_up_days`; once per year each."""
    return _yearly_bonus(services, "anniversary", Account.first_purchase_at, today)


def _yearly_bonus(services: Services, bonus: str, column: Any, today: date | None) -> int:
    ledger, zone = services.ledger, services.program.zone
    today = today or ledger.clock().astimezone(zone).date()
    if not services.program.bonus_points(bonus):
        return 0  # not configured: nothing to grant, no trigger to fire
    with services.db.transaction(write=False) as session:
        rows = list(session.execute(
            select(Account.crm, Account.portal, Account.contact_id, column)
            .where(column.is_not(None), not_erased(Account.contact_id))))
    # Today and the days a scheduler that was down may have missed, latest first.
    window = [today - timedelta(days=back)
              for back in range(services.settings.scheduler.catch_up_days + 1)]
    granted: list[Result] = []
    for crm, portal, contact_id, value in rows:
        day = value.astimezone(zone).date() if isinstance(value, datetime) else value
        due = next((d for d in window if day.year < d.year and celebrated_on(day, d.year) == d),
                   None)
        if due is None:
            continue
        ref = AccountRef(crm, portal, contact_id)
        late = f" (due {due.isoformat()})" if due != today else ""
        # The key names the year celebrated: a late grant and an on-time one are the same.
        result = ledger.grant_bonus(ref, bonus, key=f"{bonus}:{ref}:{due.year}",
                                    actor="scheduler", comment=f"{bonus} {due.year}{late}")
        if result.entry_id is not None and not result.duplicate:
            granted.append(result)
    record(services.db, from_results(granted), program=services.program)
    log.info("%s_bonuses: %d bonus(es) granted for %s", bonus, len(granted), today)
    return len(granted)


def expiry_warnings(services: Services) -> int:
    """Fire the points-expiring trigger once per lot that expires within
    `scheduler.expiry_warning_days` (the contact's fields already show how many and when)."""
    days = services.settings.scheduler.expiry_warning_days
    if not days:
        return 0
    now = services.ledger.clock()
    with services.db.transaction(write=False) as session:
        lots = list(session.execute(
            select(Lot.id, Lot.account_id).where(
                Lot.remaining > 0, Lot.expires_at > now,
                Lot.expires_at <= now + timedelta(days=days))))
    added = record(services.db, [Transition(account_id, POINTS_EXPIRING, f"lot:{lot_id}")
                                 for lot_id, account_id in lots],
                   program=services.program)
    log.info("expiry_warnings: %d new warning(s)", added)
    return added


def release_pending(services: Services, *, lookback_days: int = 7) -> int:
    """Pending points that became spendable: fire the points-available trigger once per lot
    and let write-back refresh the contact. Looks back `lookback_days`, so a scheduler that
    was down for a while still catches up; the trigger's key keeps it once per lot."""
    if not services.settings.program.pending_days:
        return 0
    now = services.ledger.clock()
    with services.db.transaction(write=False) as session:
        lots = list(session.execute(
            select(Lot.id, Lot.account_id).where(
                Lot.available_at > Lot.earned_at, Lot.available_at <= now,
                Lot.available_at > now - timedelta(days=lookback_days), Lot.remaining > 0)))
    fresh = [Transition(account_id, POINTS_AVAILABLE, f"lot:{lot_id}")
             for lot_id, account_id in lots]
    added = record(services.db, fresh, program=services.program, touch=True)
    log.info("release_pending: %d lot(s) became available", added)
    return added
