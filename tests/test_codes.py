"""Promo codes in the ledger: what each grants, the limits and why a code is refused,
idempotent use, returns, and exact limits under concurrent purchases (SQLite and
PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import func, select

from connector.codes import catalog
from connector.codes.models import PromoCampaign, PromoRedemption
from connector.db import Database
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef, Result
from tests.conftest import Clock
from tests.test_concurrency import in_parallel

ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "1")
BORIS = AccountRef("bitrix24", "acme.bitrix24.ru", "2")


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {
        "bonuses": {"review": "50"},
        "promo": [
            {"name": "winter", "code": "winter-25", "points": "100",
             "starts": "2026-03-01T00:00:00", "ends": "2026-04-01T00:00:00"},
            {"name": "double", "multiplier": "2", "uses_per_customer": 0},
            {"name": "review", "bonus": "review", "budget": "120", "uses_per_customer": 0},
            {"name": "spring", "points": "10", "starts": "2026-04-01T00:00:00"},
            {"name": "busy", "code": "BUSY", "points": "5", "shared_code_uses": 2,
             "uses_per_customer": 0},
        ],
    }


def promo(result: Result) -> dict[str, Any]:
    return result.details["promo"]


def ref(n: int) -> AccountRef:
    return AccountRef("bitrix24", "acme.bitrix24.ru", str(100 + n))


def test_a_shared_code_grants_its_points_once_per_customer(ledger: Ledger) -> None:
    first = ledger.accrue(ANNA, D("1000"), key="p1", promo_code="Winter 25")
    assert promo(first) == {"code": "WINTER25", "outcome": "applied", "campaign": "winter",
                            "points": "100.00", "detail": ""}
    assert first.points == D("130.00")  # 3% cashback + the code's 100
    again = ledger.accrue(ANNA, D("1000"), key="p2", promo_code="WINTER25")
    assert promo(again)["outcome"] == "already_used" and again.points == D("30.00")
    assert ledger.accrue(BORIS, D("10"), key="p3", promo_code="winter25").points == D("100.00")
    replay = ledger.accrue(ANNA, D("1000"), key="p1", promo_code="Winter 25")
    assert replay.duplicate and promo(replay)["outcome"] == "applied"
    assert ledger.account(ANNA).balance == D("160.00")
    assert catalog.show(ledger.db, ledger.program, "winter25").uses == 2


def test_a_multiplier_and_a_named_bonus(ledger: Ledger, db: Database) -> None:
    [code] = catalog.generate(db, ledger.program, "double", 1, now=ledger.clock())
    doubled = ledger.accrue(ANNA, D("1000"), key="p1", promo_code=code.lower())
    assert doubled.points == D("60.00") and promo(doubled)["points"] == "30.00"
    used = ledger.accrue(BORIS, D("1000"), key="p2", promo_code=code)
    assert promo(used)["outcome"] == "used_up" and used.points == D("30.00")
    [review] = catalog.generate(db, ledger.program, "review", 1, now=ledger.clock())
    assert promo(ledger.accrue(BORIS, D("100"), key="p3", promo_code=review))["points"] \
        == "50.00"


def test_refusals_say_why(ledger: Ledger, db: Database, clock: Clock) -> None:
    [spring] = catalog.generate(db, ledger.program, "spring", 1, now=clock())
    [review, other] = catalog.generate(db, ledger.program, "review", 2, now=clock())
    assert promo(ledger.accrue(ANNA, D("100"), key="a", promo_code="NOPE99"))["outcome"] \
        == "unknown"
    assert promo(ledger.accrue(ANNA, D("100"), key="b", promo_code="!"))["outcome"] \
        == "unknown"
    early = promo(ledger.accrue(ANNA, D("100"), key="c", promo_code=spring))
    assert early["outcome"] == "not_yet_valid" and "2026-04-01" in early["detail"]
    ledger.accrue(ANNA, D("100"), key="d", promo_code=review)  # 50 of the budget of 120
    ledger.accrue(ANNA, D("100"), key="e", promo_code=other)   # 100 of 120
    [third] = catalog.generate(db, ledger.program, "review", 1, now=clock())
    broke = promo(ledger.accrue(ANNA, D("100"), key="f", promo_code=third))
    assert broke["outcome"] == "budget_exhausted" and "20.00" in broke["detail"]
    clock.advance(days=30)  # 2026-04-09: winter is over
    late = promo(ledger.accrue(BORIS, D("100"), key="g", promo_code="WINTER25"))
    assert late["outcome"] == "expired"
    check = ledger.check_promo(spring, D("100"), BORIS)
    assert (check.outcome, check.points) == ("valid", D("10"))
    assert ledger.verify()[1] == []


def test_a_returned_purchase_takes_the_codes_points_back_and_a_rewin_reuses_them(
        ledger: Ledger) -> None:
    ledger.settle_purchase(ANNA, "deal:1", D("1000"), promo_code="BUSY")
    assert ledger.account(ANNA).balance == D("35.00")
    ledger.settle_purchase(ANNA, "deal:1", D("2000"), promo_code="BUSY")  # re-priced
    assert ledger.account(ANNA).balance == D("65.00")
    ledger.settle_purchase(ANNA, "deal:1", None)
    assert ledger.account(ANNA).balance == D("0.00")
    ledger.settle_purchase(ANNA, "deal:1", D("1000"), promo_code="BUSY")
    assert ledger.account(ANNA).balance == D("35.00")
    view = catalog.show(ledger.db, ledger.program, "busy")
    assert (view.uses, view.uses_left, len(view.used_by)) == (1, 1, 1)


def test_a_check_writes_nothing(ledger: Ledger, db: Database) -> None:
    assert ledger.check_promo("WINTER25", D("100"), ANNA).outcome == "valid"
    with db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(PromoRedemption)) == 0


def test_the_last_use_of_a_shared_code_goes_to_one_purchase(ledger: Ledger,
                                                             db: Database) -> None:
    outcomes = in_parallel(8, lambda i: ledger.accrue(ref(i), D("100"), key=f"busy:{i}",
                                                      promo_code="BUSY"))
    results = [o for o in outcomes if isinstance(o, Result)]
    assert len(results) == 8, outcomes
    applied = [r for r in results if promo(r)["outcome"] == "applied"]
    assert len(applied) == 2
    assert {promo(r)["outcome"] for r in results if r not in applied} == {"used_up"}
    assert catalog.show(db, ledger.program, "BUSY").uses == 2
    assert ledger.verify()[1] == []


def test_the_last_points_of_a_budget_go_to_one_purchase(ledger: Ledger,
                                                        db: Database) -> None:
    codes = catalog.generate(db, ledger.program, "review", 8, now=ledger.clock())
    outcomes = in_parallel(8, lambda i: ledger.accrue(ref(i), D("100"), key=f"rv:{i}",
                                                      promo_code=codes[i]))
    results = [o for o in outcomes if isinstance(o, Result)]
    assert len(results) == 8, outcomes
    assert sum(promo(r)["outcome"] == "applied" for r in results) == 2  # 2 x 50 of 120
    with db.transaction(write=False) as session:
        assert session.get(PromoCampaign, "review").granted == 10000


def test_one_customer_racing_two_purchases_uses_the_code_once(ledger: Ledger) -> None:
    outcomes = in_parallel(6, lambda i: ledger.accrue(ANNA, D("100"), key=f"w:{i}",
                                                      promo_code="WINTER25"))
    results = [o for o in outcomes if isinstance(o, Result)]
    assert len(results) == 6, outcomes
    assert sum(promo(r)["outcome"] == "applied" for r in results) == 1
    assert ledger.account(ANNA).balance == D("118.00")


def test_generated_codes_are_distinct_and_unguessable_in_form(ledger: Ledger,
                                                             db: Database) -> None:
    codes = catalog.generate(db, ledger.program, "double", 2500, now=ledger.clock())
    assert len(set(codes)) == 2500 and all(len(c) == 12 for c in codes)
    assert not set("01OIL") & set("".join(codes))


def test_stats_count_codes_used_and_their_points(ledger: Ledger, db: Database,
                                                 clock: Clock) -> None:
    from datetime import timedelta

    from connector.i18n import translator
    from connector.stats import format_stats, program_stats

    ledger.accrue(ANNA, D("1000"), key="p1", promo_code="WINTER25")
    ledger.accrue(BORIS, D("1000"), key="p2", promo_code="WINTER25")
    ledger.accrue(BORIS, D("1000"), key="p3", promo_code="WINTER25")  # refused: not counted
    with db.transaction(write=False) as session:
        figures = program_stats(session, ledger.program, since=clock() - timedelta(days=1),
                                until=clock() + timedelta(seconds=1))
    assert (figures.as_json()["promo_codes_used"], figures.as_json()["promo_points"]) == \
        (2, "200.00")
    assert "promo codes    2 used, 200.00 points granted" in format_stats(
        figures, ledger.program.zone, translator("en"))


def test_a_second_accrual_of_a_standing_purchase_gets_no_second_grant(ledger: Ledger) -> None:
    first = ledger.accrue(ANNA, D("1000"), key="k1", source="order-7", promo_code="BUSY")
    assert promo(first)["outcome"] == "applied"
    second = ledger.accrue(ANNA, D("500"), key="k2", source="order-7", promo_code="BUSY")
    assert promo(second)["outcome"] == "already_used" and second.points == D("15.00")
    ledger.reverse(ANNA, "order-7", key="r1")
    again = ledger.accrue(ANNA, D("1000"), key="k3", source="order-7", promo_code="BUSY")
    assert promo(again)["outcome"] == "applied" and again.points == D("35.00")
    assert catalog.show(ledger.db, ledger.program, "BUSY").uses == 1


@pytest.mark.parametrize(("promo_entry", "problem"), [
    ({"name": "x", "points": "1", "multiplier": "2"}, "exactly one of points, multiplier"),
    ({"name": "x", "bonus": "nope"}, "bonus 'nope' is not in [program.bonuses]"),
    ({"name": "x", "points": "1", "code": "a!"}, "3 to 32 letters and digits"),
    ({"name": "x", "points": "1", "starts": "2026-02-01T00:00:00",
      "ends": "2026-01-01T00:00:00"}, "ends must be after starts"),
])
def test_bad_promo_config_names_the_problem(tmp_path: Any, promo_entry: dict[str, Any],
                                            problem: str) -> None:
    from connector.errors import ConfigError
    from tests.conftest import make_settings

    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, program={"promo": [promo_entry]})
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_a_code_attached_before_the_purchase_is_used_when_it_is_accrued(
        ledger: Ledger, db: Database) -> None:
    from connector.codes.attach import attach

    [code] = catalog.generate(db, ledger.program, "double", 1, now=ledger.clock())
    early = attach(db, ledger, "deal:9", code, ref=ANNA, amount=None, via="test")
    assert (early.outcome, early.points) == ("valid", D("0.00"))
    assert "amount" in early.detail
    assert attach(db, ledger, "deal:8", "NOPE99", ref=ANNA, amount=D("10"),
                  via="test").outcome == "unknown"
    ledger.settle_purchase(ANNA, "deal:9", D("1000"))
    assert ledger.account(ANNA).balance == D("60.00")
    late = attach(db, ledger, "deal:9", "WINTER25", ref=ANNA, amount=D("1000"), via="test")
    assert late.outcome == "settled" and late.refused
