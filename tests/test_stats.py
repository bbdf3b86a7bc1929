"""Program analytics over a worked data set whose every figure is computed by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import event, text

from connector.db import Database
from connector.i18n import translator
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef
from connector.stats import ProgramStats, format_stats, program_stats, ratio
from tests.conftest import Clock


def ref(contact: str) -> AccountRef:
    return AccountRef("bitrix24", "acme.bitrix24.ru", contact)


FRED, ANNA, BORIS, CARL, DORA, EVA = (ref(c) for c in ("1", "2", "3", "4", "5", "6"))
MARCH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
FEBRUARY = (datetime(2026, 1, 30, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {
        "tiers": [
            {"name": "Bronze", "min_spend": "0", "rate": "0.05"},
            {"name": "Silver", "min_spend": "10000", "rate": "0.10"},
        ],
        "welcome_bonus": "100",
        "points_lifetime_days": 30,
    }


def at(clock: Clock, month: int, day: int) -> None:
    clock.now = datetime(2026, month, day, 12, 0, tzinfo=UTC)


@pytest.fixture
def books(ledger: Ledger, clock: Clock) -> Ledger:
    """Six customers from January to April; the comments give each entry's points."""
    at(clock, 1, 5)
    ledger.accrue(FRED, D("500"), key="f1")                     # +25, expires Feb 4
    at(clock, 2, 10)
    ledger.accrue(ANNA, D("2000"), key="a1")                    # +100, expires Mar 12
    ledger.grant_bonus(ANNA, "welcome", key="welcome:anna")     # +100, expires Mar 12
    at(clock, 2, 15)
    ledger.accrue(BORIS, D("1000"), key="b1")                   # +50, expires Mar 17
    at(clock, 2, 20)
    assert ledger.expire_due() == 1                             # Fred -25
    at(clock, 3, 3)
    ledger.accrue(CARL, D("3000"), key="c1")                    # +150
    at(clock, 3, 5)
    ledger.accrue(ANNA, D("4000"), key="a2")                    # +200
    at(clock, 3, 6)
    ledger.redeem(ANNA, D("150"), key="r1")                     # -150: 100 + 50 of Feb 10
    at(clock, 3, 8)
    ledger.accrue(CARL, D("1000"), key="c2")                    # +50
    at(clock, 3, 9)
    ledger.reverse(CARL, "c2", key="c2:reverse")                # -50, purchase -1000, -1
    at(clock, 3, 10)
    ledger.adjust(CARL, D("25"), key="adj1", reason="goodwill")  # +25
    at(clock, 3, 20)
    assert ledger.expire_due() == 2                             # Anna -50, Boris -50
    at(clock, 3, 25)
    ledger.grant_bonus(DORA, "welcome", key="welcome:dora")     # +100
    at(clock, 3, 26)
    ledger.adjust(DORA, D("-10"), key="adj2", reason="typo")    # -10
    at(clock, 3, 28)
    ledger.accrue(EVA, D("12000"), key="e1")                    # +600, up to Silver
    at(clock, 4, 2)
    ledger.accrue(EVA, D("1000"), key="e2")                     # +100 at Silver, after March
    return ledger


def stats_for(ledger: Ledger, period: tuple[datetime, datetime]) -> ProgramStats:
    with ledger.db.transaction(write=False) as session:
        return program_stats(session, ledger.program, since=period[0], until=period[1])


def test_march_figures(books: Ledger) -> None:
    march = stats_for(books, MARCH)
    assert (march.accounts_total, march.accounts_new) == (6, 3)       # Carl, Dora, Eva
    assert march.accrued == D("1000.00")                               # 150 + 200 + 50 + 600
    assert march.bonuses == D("100.00")
    assert march.redeemed == D("-150.00")
    assert march.expired == D("-100.00")
    assert march.reversed == D("-50.00")
    assert march.adjusted == D("15.00")
    assert march.outstanding == D("1165.00")   # Anna 200, Carl 175, Dora 90, Eva 700
    assert march.tiers == {"Bronze": 5, "Silver": 1}
    assert march.purchases == 3                                        # c2 and its reversal: 0
    assert march.purchase_amount == D("19000.00")
    assert march.average_check == D("6333.33")
    assert march.active_customers == 3                                 # Carl, Anna, Eva
    assert march.repeat_rate == D("0.4000")                            # Anna, Eva of 5 buyers
    assert march.previously_active == 2                                # Anna, Boris
    assert march.retention == D("0.5000")                              # Anna came back


def test_previous_period_and_its_own_retention(books: Ledger) -> None:
    february = stats_for(books, FEBRUARY)
    assert (february.accounts_total, february.accounts_new) == (6, 2)
    assert (february.accrued, february.bonuses) == (D("150.00"), D("100.00"))
    assert (february.redeemed, february.expired) == (D("0.00"), D("-25.00"))
    assert (february.reversed, february.adjusted) == (D("0.00"), D("0.00"))
    assert (february.purchases, february.purchase_amount) == (2, D("3000.00"))
    assert february.average_check == D("1500.00")
    assert february.active_customers == 2
    assert (february.previously_active, february.retention) == (1, D("0.0000"))  # Fred left


def test_movements_over_all_time_add_up_to_the_outstanding_balance(books: Ledger) -> None:
    figures = stats_for(books, (datetime(2025, 1, 1, tzinfo=UTC),
                                datetime(2027, 1, 1, tzinfo=UTC)))
    moved = (figures.accrued + figures.bonuses + figures.redeemed + figures.expired
             + figures.reversed + figures.adjusted)
    assert moved == figures.outstanding == D("1165.00")
    assert figures.purchases == 7 and figures.purchase_amount == D("23500.00")
    assert books.verify() == (6, [])


def test_period_includes_since_and_excludes_until(ledger: Ledger, clock: Clock) -> None:
    since, until = datetime(2026, 3, 10, 9, 0, tzinfo=UTC), datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
    ledger.accrue(ANNA, D("1000"), key="at-since", occurred_at=since)
    ledger.accrue(BORIS, D("3000"), key="at-until", occurred_at=until)
    figures = stats_for(ledger, (since, until))
    assert (figures.purchases, figures.purchase_amount, figures.accrued) == (
        1, D("1000.00"), D("50.00"))
    assert figures.active_customers == 1


def test_empty_books_give_zeros_and_no_rates(ledger: Ledger) -> None:
    figures = stats_for(ledger, MARCH)
    assert (figures.accounts_total, figures.outstanding, figures.purchases) == (0, D("0.00"), 0)
    assert figures.tiers == {"Bronze": 0, "Silver": 0}
    assert figures.average_check is None and figures.repeat_rate is None
    assert figures.retention is None and figures.previously_active == 0


def test_a_tier_no_longer_configured_is_listed_after_the_program_tiers(
        ledger: Ledger, db: Database) -> None:
    ledger.accrue(ANNA, D("100"), key="a")
    ledger.accrue(BORIS, D("100"), key="b")
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE accounts SET tier = 'Platinum' WHERE contact_id = '3'"))
    assert list(stats_for(ledger, MARCH).tiers.items()) == [
        ("Bronze", 1), ("Silver", 0), ("Platinum", 1)]


def test_query_count_does_not_grow_with_accounts(ledger: Ledger, db: Database,
                                                 clock: Clock) -> None:
    def statements() -> int:
        seen: list[str] = []

        def listener(*args: Any) -> None:
            seen.append(args[2])

        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            stats_for(ledger, MARCH)
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        return len(seen)

    ledger.accrue(ANNA, D("100"), key="first")
    few = statements()
    for number in range(20):
        ledger.accrue(ref(f"x{number}"), D("100"), key=f"many:{number}")
    assert statements() == few


def test_ratio_rounds_to_four_places_and_refuses_zero() -> None:
    assert ratio(1, 3) == D("0.3333") and ratio(2, 3) == D("0.6667")
    assert ratio(0, 0) is None and ratio(5, 5) == D("1.0000")


def test_bad_period_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="after"):
        stats_for(ledger, (MARCH[1], MARCH[0]))
    with pytest.raises(ValueError, match="timezone"):
        stats_for(ledger, (datetime(2026, 3, 1), datetime(2026, 3, 2)))


def test_json_and_table(books: Ledger) -> None:
    figures = stats_for(books, MARCH)
    data = json.loads(json.dumps(figures.as_json()))
    assert data["accrued"] == "1000.00" and data["average_check"] == "6333.33"
    assert data["retention"] == "0.5000" and data["since"] == "2026-03-01T00:00:00+00:00"
    assert data["tiers"] == {"Bronze": 5, "Silver": 1}
    table = format_stats(figures, books.program.zone, translator("en"))
    assert table[0] == ("period         1 Mar 2026, 03:00 - 31 Mar 2026, 03:00 "
                        "(Europe/Moscow)")
    assert "retention      50.00% of 2 active in the previous period" in table
    assert "redeemed       -150.00" in table
    assert "average check  6,333.33" in table


@pytest.mark.parametrize(("language", "lines"), [
    ("ru", ["период         01.03.2026 03:00 - 31.03.2026 03:00 (Europe/Moscow)",
            "удержание      50,00\u00a0% из 2 активных в прошлом периоде",
            "средний чек    6\u00a0333,33", "начислено      +1\u00a0000,00"]),
    ("uk", ["період         01.03.2026 03:00 - 31.03.2026 03:00 (Europe/Moscow)",
            "утримання      50,00% з 2 активних у попередньому періоді",
            "середній чек   6\u00a0333,33", "нараховано     +1\u00a0000,00"]),
])
def test_the_table_in_russian_and_ukrainian(books: Ledger, language: str,
                                            lines: list[str]) -> None:
    table = format_stats(stats_for(books, MARCH), books.program.zone, translator(language))
    for line in lines:
        assert line in table, table
