"""Lifecycle bonuses granted by the scheduler: birthdays (and, later, anniversaries).

Dates are the program's time zone's. A birthday on February 29 is celebrated on February 28
in years without one: the customer gets the bonus every year, never twice.
"""

from __future__ import annotations

import calendar
import logging
from datetime import date

from sqlalchemy import select

from connector.ledger.models import Account
from connector.ledger.views import AccountRef, Result
from connector.services import Services
from connector.triggers import from_results, record

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
