"""Birthday bonuses: once a year, in the program's time zone, February 29 decided."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

from sqlalchemy import select

from connector.crm.models import TriggerEvent
from connector.ledger.views import AccountRef
from connector.lifecycle import birthday_bonuses, celebrated_on, expiry_warnings
from connector.triggers import BIRTHDAY
from tests.conftest import Clock, fresh_services, make_settings

ANNA = AccountRef("bitrix24", "acme", "1")
LEAP = AccountRef("bitrix24", "acme", "2")


def test_february_29_is_celebrated_on_february_28_in_other_years() -> None:
    assert celebrated_on(date(2000, 2, 29), 2027) == date(2027, 2, 28)
    assert celebrated_on(date(2000, 2, 29), 2028) == date(2028, 2, 29)
    assert celebrated_on(date(1990, 5, 1), 2027) == date(2027, 5, 1)


def test_birthday_bonus_once_a_year_in_the_program_time_zone(tmp_path: Path,
                                                             database_url: str) -> None:
    # 2027-04-30 21:30 UTC is already May 1 in Moscow.
    clock = Clock(datetime(2027, 4, 30, 21, 30, tzinfo=UTC))
    services = fresh_services(make_settings(tmp_path, database_url,
                                            program={"birthday_bonus": "200"}), clock=clock)
    ledger = services.ledger
    ledger.open_account(ANNA, birthday=date(1990, 5, 1))
    ledger.open_account(LEAP, birthday=date(2000, 2, 29))
    assert birthday_bonuses(services) == 1
    assert birthday_bonuses(services) == 0  # the same day again
    assert ledger.account(ANNA).balance == D("200.00")
    clock.advance(days=366)  # 2028 has a February 29
    assert birthday_bonuses(services) == 1  # next year, once more
    assert birthday_bonuses(services, today=date(2027, 2, 28)) == 1  # the Feb 29 customer
    assert birthday_bonuses(services, today=date(2027, 3, 1)) == 0
    assert ledger.account(LEAP).balance == D("200.00")
    with services.db.transaction(write=False) as session:
        codes = [e.code for e in session.scalars(select(TriggerEvent))]
    assert codes == [BIRTHDAY] * 3
    services.close()


def test_points_expiring_warning_fires_once_per_lot(tmp_path: Path, database_url: str) -> None:
    clock = Clock()
    services = fresh_services(make_settings(
        tmp_path, database_url, program={"points_lifetime_days": 30},
        scheduler={"expiry_warning_days": 7}), clock=clock)
    services.ledger.accrue(ANNA, D("1000"), key="d1")
    clock.advance(days=10)
    services.ledger.accrue(ANNA, D("1000"), key="d2")
    assert expiry_warnings(services) == 0  # nothing within 7 days yet
    clock.advance(days=14)  # the first lot expires in 6 days
    assert expiry_warnings(services) == 1
    assert expiry_warnings(services) == 0  # once per lot
    clock.advance(days=10)  # the first lot is gone, the second expires in 6 days
    services.ledger.expire_due()
    assert expiry_warnings(services) == 1
    with services.db.transaction(write=False) as session:
        transitions = [e.transition for e in session.scalars(select(TriggerEvent))]
    assert len(transitions) == 2 and all(t.startswith("lot:") for t in transitions)
    services.close()
