"""Birthday and anniversary bonuses a scheduler that was down missed are granted late,
within scheduler.catch_up_days, and never twice."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

from sqlalchemy import select

from connector.crm.models import TriggerEvent
from connector.ledger.views import AccountRef
from connector.lifecycle import anniversary_bonuses, birthday_bonuses
from connector.services import Services
from connector.triggers import ANNIVERSARY, BIRTHDAY
from tests.conftest import Clock, fresh_services, make_settings

ANNA = AccountRef("bitrix24", "acme", "1")
BORIS = AccountRef("bitrix24", "acme", "2")
NEW_YEAR = AccountRef("bitrix24", "acme", "3")


def build(tmp_path: Path, database_url: str, clock: Clock, **scheduler: int) -> Services:
    return fresh_services(make_settings(
        tmp_path, database_url, scheduler=scheduler,
        program={"birthday_bonus": "200", "anniversary_bonus": "50"}), clock=clock)


def history_comments(services: Services, ref: AccountRef) -> list[str | None]:
    return [e.comment for e in services.ledger.history(ref) if e.kind == "bonus"]


def test_a_scheduler_gap_is_caught_up_within_catch_up_days_once(tmp_path: Path,
                                                               database_url: str) -> None:
    # Down from May 1 to May 5 (Moscow): Anna's birthday was May 2, Boris's April 20.
    clock = Clock(datetime(2027, 5, 5, 9, 0, tzinfo=UTC))
    services = build(tmp_path, database_url, clock)
    ledger = services.ledger
    ledger.open_account(ANNA, birthday=date(1990, 5, 2))
    ledger.open_account(BORIS, birthday=date(1985, 4, 20))
    assert birthday_bonuses(services) == 1
    assert history_comments(services, ANNA) == ["birthday 2027 (due 2027-05-02)"]
    assert ledger.account(BORIS).balance == 0  # 15 days late: beyond the default 7
    assert birthday_bonuses(services) == 0
    clock.advance(days=1)
    assert birthday_bonuses(services) == 0  # still in the window, already granted
    clock.advance(days=362)  # 2028-05-02: on time, the next year's bonus
    assert birthday_bonuses(services) == 1
    assert ledger.account(ANNA).balance == D("400.00")
    with services.db.transaction(write=False) as session:
        codes = [e.code for e in session.scalars(select(TriggerEvent))]
    assert codes == [BIRTHDAY, BIRTHDAY]
    services.close()


def test_on_time_grant_is_not_repeated_by_the_catch_up(tmp_path: Path,
                                                       database_url: str) -> None:
    clock = Clock(datetime(2027, 5, 2, 9, 0, tzinfo=UTC))
    services = build(tmp_path, database_url, clock)
    services.ledger.open_account(ANNA, birthday=date(1990, 5, 2))
    assert birthday_bonuses(services) == 1
    for _ in range(7):
        clock.advance(days=1)
        assert birthday_bonuses(services) == 0
    assert services.ledger.account(ANNA).balance == D("200.00")
    services.close()


def test_catch_up_across_new_year_names_the_year_that_was_missed(tmp_path: Path,
                                                                 database_url: str) -> None:
    clock = Clock(datetime(2028, 1, 2, 9, 0, tzinfo=UTC))
    services = build(tmp_path, database_url, clock, catch_up_days=3)
    services.ledger.open_account(NEW_YEAR, birthday=date(1990, 12, 31))
    assert birthday_bonuses(services) == 1
    assert history_comments(services, NEW_YEAR) == ["birthday 2027 (due 2027-12-31)"]
    assert birthday_bonuses(services, today=date(2027, 12, 31)) == 0  # the same year's key
    services.close()


def test_catch_up_days_zero_grants_on_the_day_only(tmp_path: Path, database_url: str) -> None:
    clock = Clock(datetime(2027, 5, 3, 9, 0, tzinfo=UTC))
    services = build(tmp_path, database_url, clock, catch_up_days=0)
    services.ledger.open_account(ANNA, birthday=date(1990, 5, 2))
    assert birthday_bonuses(services) == 0
    assert birthday_bonuses(services, today=date(2027, 5, 2)) == 1
    services.close()


def test_a_missed_anniversary_is_granted_late_once(tmp_path: Path, database_url: str) -> None:
    clock = Clock(datetime(2026, 6, 10, 9, 0, tzinfo=UTC))
    services = build(tmp_path, database_url, clock)
    services.ledger.accrue(ANNA, D("100"), key="first")  # 3 points
    clock.advance(days=365 + 4)  # the scheduler was down on 2027-06-10
    assert anniversary_bonuses(services) == 1
    assert anniversary_bonuses(services) == 0
    assert history_comments(services, ANNA) == ["anniversary 2027 (due 2027-06-10)"]
    with services.db.transaction(write=False) as session:
        codes = [e.code for e in session.scalars(select(TriggerEvent))]
    assert codes == [ANNIVERSARY]
    services.close()
