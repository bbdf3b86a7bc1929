"""Lifecycle jobs: birthday and anniversary bonuses once a year in the program's time zone
(February 29 decided), expiry warnings, pending points becoming available."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from connector.crm.models import TriggerEvent
from connector.ledger.views import AccountRef
from connector.lifecycle import (
    anniversary_bonuses,
    birthday_bonuses,
    celebrated_on,
    expiry_warnings,
    release_pending,
)
from connector.services import Services
from connector.triggers import ANNIVERSARY, BIRTHDAY, POINTS_AVAILABLE
from mappings import amocrm as amo
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


def _codes(services: Services) -> list[str]:
    with services.db.transaction(write=False) as session:
        return [e.code for e in session.scalars(select(TriggerEvent).order_by(TriggerEvent.id))]


def test_first_purchase_anniversary_bonus_once_a_year(tmp_path: Path,
                                                      database_url: str) -> None:
    # The first purchase at 22:00 UTC on Feb 28, 2027 is Mar 1 in Moscow: that is the day.
    clock = Clock(datetime(2027, 2, 28, 22, 0, tzinfo=UTC))
    services = fresh_services(make_settings(tmp_path, database_url,
                                            program={"anniversary_bonus": "300"}), clock=clock)
    ledger = services.ledger
    ledger.accrue(ANNA, D("1000"), key="first")
    assert anniversary_bonuses(services) == 0  # the day of the purchase itself is no anniversary
    assert anniversary_bonuses(services, today=date(2028, 2, 29)) == 0
    assert anniversary_bonuses(services, today=date(2028, 3, 1)) == 1
    assert anniversary_bonuses(services, today=date(2028, 3, 1)) == 0  # twice the same day
    assert ledger.account(ANNA).balance == D("330.00")  # 30 cashback + 300
    ledger.accrue(ANNA, D("1000"), key="second")  # later purchases move nothing
    assert anniversary_bonuses(services, today=date(2029, 3, 1)) == 1
    assert _codes(services).count(ANNIVERSARY) == 2
    services.close()


def test_no_anniversary_bonus_configured_grants_and_fires_nothing(tmp_path: Path,
                                                                  database_url: str) -> None:
    clock = Clock(datetime(2027, 3, 1, 9, 0, tzinfo=UTC))
    services = fresh_services(make_settings(tmp_path, database_url), clock=clock)
    services.ledger.accrue(ANNA, D("1000"), key="first")
    assert anniversary_bonuses(services, today=date(2028, 3, 1)) == 0
    assert ANNIVERSARY not in _codes(services)
    services.close()


def test_pending_points_become_available_with_one_trigger_per_lot(tmp_path: Path,
                                                                  database_url: str) -> None:
    clock = Clock()
    services = fresh_services(make_settings(tmp_path, database_url,
                                            program={"pending_days": 14}), clock=clock)
    ledger = services.ledger
    ledger.accrue(ANNA, D("1000"), key="d1")
    version = ledger.account(ANNA).version
    assert (ledger.account(ANNA).available, ledger.account(ANNA).pending) == (D(0), D(30))
    assert release_pending(services) == 0
    clock.advance(days=14)
    assert release_pending(services) == 1
    released = ledger.account(ANNA).version
    assert release_pending(services) == 0  # once per lot
    view = ledger.account(ANNA)
    assert view.version == released  # a repeat touches nothing
    assert (view.available, view.pending) == (D(30), D(0))
    assert view.version > version  # write-back shows the new "available" value
    assert _codes(services).count(POINTS_AVAILABLE) == 1
    services.close()


def test_pending_release_is_off_without_pending_days(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(make_settings(tmp_path, database_url))
    services.ledger.accrue(ANNA, D("1000"), key="d1")
    assert release_pending(services) == 0 and _codes(services).count(POINTS_AVAILABLE) == 0
    services.close()


def test_amocrm_birthday_from_the_configured_field() -> None:
    zone = ZoneInfo("Europe/Moscow")
    # v2 webhook: custom_fields by id; amoCRM stores local midnight as a Unix timestamp.
    midnight = int(datetime(1990, 5, 17, tzinfo=zone).timestamp())
    hook = {"id": "7", "custom_fields": [{"id": "555", "values": [{"value": str(midnight)}]}]}
    assert amo.birthday(hook, 555, zone) == date(1990, 5, 17)
    assert amo.birthday(hook, None, zone) is None  # no field configured
    assert amo.birthday(hook, 556, zone) is None
    v4 = {"id": 7, "custom_fields_values": [{"field_id": 555, "values": [{"value": midnight}]}]}
    assert amo.birthday(v4, 555, zone) == date(1990, 5, 17)
    for text, expected in (("1990-05-17", date(1990, 5, 17)), ("17.05.1990", date(1990, 5, 17)),
                           ("1990-05-17 00:00:00", date(1990, 5, 17)), ("garbage", None),
                           ("99999999999999999999", None)):
        given = {"custom_fields": [{"id": "555", "values": [{"value": text}]}]}
        assert amo.birthday(given, 555, zone) == expected, text
