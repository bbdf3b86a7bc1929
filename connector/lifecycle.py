"""Lifecycle work of the scheduler: birthday bonuses and points-expiring warnings.

Dates are the program's time zone's. A birthday on February 29 is celebrated on February 28
in years without one: the customer gets the bonus every year, never twice.
"""

from __future__ import annotations

import calendar
import logging
from datetime import date, timedelta

from sqlalchemy import select

from connector.ledger.models import Account, Lot
from connector.ledger.views import AccountRef, Result
from connector.services import Services
from connector.triggers import POINTS_EXPIRING, Transition, from_results, record

log = logging.getLogger(__name__)


def celebrated_on(birthday: date, year: int) -> date:
    if birthday.month == 2 and birthday.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return birthday.replace(year=year)


def birthday_bonuses(services: Services, *, today: date | None = None) -> int:
    """Grant the birthday bonus to everyone whose birthday is today; once per year each
    (the key names the year), so running twice a day changes nothing."""
    ledger = services.ledger
    today = today or ledger.clock().astimezone(services.program.zone).date()
    with services.db.transaction(write=False) as session:
        rows = list(session.execute(
            select(Account.crm, Account.portal, Account.contact_id, Account.birthday)
            .where(Account.birthday.is_not(None))))
    granted: list[Result] = []
    for crm, portal, contact_id, birthday in rows:
        if celebrated_on(birthday, today.year) != today:
            continue
        ref = AccountRef(crm, portal, contact_id)
        result = ledger.grant_bonus(ref, "birthday", key=f"birthday:{ref}:{today.year}",
                                    actor="scheduler", comment=f"birthday {today.year}")
        if result.entry_id is not None and not result.duplicate:
            granted.append(result)
    record(services.db, from_results(granted))
    log.info("birthday_bonuses: %d bonus(es) granted for %s", len(granted), today)
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
                                 for lot_id, account_id in lots])
    log.info("expiry_warnings: %d new warning(s)", added)
    return added
