"""Partial returns of purchases that earned by product rows or with a promo code's points:
what a return takes back and gives back follows what the purchase actually earned."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from connector.config import Settings
from connector.db import Database
from connector.economics.simulate import simulate
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef
from connector.products.rows import Row
from tests.conftest import Clock

ANNA = AccountRef("bitrix24", "acme", "1")
DEAL = "bitrix24:acme:deal:42"
BOOK = Row("100", D("500"), D("1"))
GIFT_CARD = Row("900", D("500"), D("1"))  # excluded: earns nothing


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"product_rules": [{"name": "gift cards", "products": ["900"], "exclude": True}],
            "promo": [{"name": "winter", "code": "winter-25", "points": "100",
                       "starts": "2026-01-01T00:00:00"}]}


def test_returning_a_row_that_earned_nothing_takes_nothing_back(ledger: Ledger) -> None:
    accrued = ledger.settle_purchase(ANNA, DEAL, D("1000"), rows=[BOOK, GIFT_CARD])[0]
    assert accrued.points == D("15.00")  # 3% of the book only
    part = ledger.return_purchase(ANNA, DEAL, D("500"), key="ret-1", rows=[GIFT_CARD])
    assert part.points == D("0.00")
    assert ledger.account(ANNA).balance == D("15.00")
    rest = ledger.return_purchase(ANNA, DEAL, D("500"), key="ret-2", rows=[BOOK])
    assert rest.points == D("-15.00")
    assert ledger.account(ANNA).balance == 0 and ledger.verify() == (1, [])


def test_returning_the_row_that_earned_takes_its_points_back(ledger: Ledger) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("1000"), rows=[BOOK, GIFT_CARD])
    part = ledger.return_purchase(ANNA, DEAL, D("500"), key="ret-1", rows=[BOOK])
    assert part.points == D("-15.00")
    # The same deal settled again with the same rows changes nothing.
    assert ledger.settle_purchase(ANNA, DEAL, D("1000"), rows=[BOOK, GIFT_CARD]) == []
    assert ledger.account(ANNA).balance == 0 and ledger.verify() == (1, [])


def test_a_code_paid_purchase_gives_back_its_redemption_in_proportion(ledger: Ledger) -> None:
    ledger.adjust(ANNA, D("1000"), key="gift", reason="opening balance")
    ledger.redeem(ANNA, D("200"), key="pay-1", source="order-1", purchase_amount=D("1000"))
    accrued = ledger.accrue(ANNA, D("1000"), key="order-1", promo_code="WINTER25")
    assert accrued.points == D("130.00")  # 30 earned + the code's 100
    part = ledger.return_purchase(ANNA, "order-1", D("500"), key="ret-1")
    assert part.details["return"]["redemption_given_back"] == "100.00"
    assert part.details["return"]["points_taken_back"] == "15.00"
    rest = ledger.return_purchase(ANNA, "order-1", D("500"), key="ret-2")
    assert rest.points == D("-15.00")  # 100 redeemed back, 15 earned and the code's 100 taken
    assert ledger.account(ANNA).balance == D("1000.00") and ledger.verify() == (1, [])


def test_rows_changed_after_a_return_do_not_give_the_returned_rows_points_back(
        ledger: Ledger) -> None:
    other = Row("101", D("500"), D("1"))
    ledger.settle_purchase(ANNA, DEAL, D("1000"), rows=[BOOK, other])  # 30 points
    ledger.return_purchase(ANNA, DEAL, D("500"), key="ret-1", rows=[BOOK])
    assert ledger.account(ANNA).balance == D("15.00")
    # The deal gains a row in the CRM: 1200 sold, 500 of it returned, 700 earns 21.
    added = Row("102", D("200"), D("1"))
    [repriced] = ledger.settle_purchase(ANNA, DEAL, D("1200"), rows=[BOOK, other, added])
    assert repriced.points == D("6.00")
    view = ledger.account(ANNA)
    assert (view.balance, view.purchase_total) == (D("21.00"), D("700.00"))
    # What stands returns to nothing: the rest is taken, and only the rest.
    part = ledger.return_purchase(ANNA, DEAL, D("200"), key="ret-2", rows=[added])
    assert part.points == D("-6.00")
    ledger.return_purchase(ANNA, DEAL, D("500"), key="ret-3", rows=[other])
    assert ledger.account(ANNA).balance == 0 and ledger.verify() == (1, [])


def test_a_return_after_rows_were_removed_reads_the_rows_as_re_priced(ledger: Ledger) -> None:
    other = Row("101", D("500"), D("1"))
    ledger.settle_purchase(ANNA, DEAL, D("1500"), rows=[BOOK, other, GIFT_CARD])  # 30 points
    [lowered] = ledger.settle_purchase(ANNA, DEAL, D("1000"), rows=[BOOK, GIFT_CARD])
    assert lowered.points == D("-15.00")
    # A quarter of what stands, without rows: a quarter of the 15 the book earned.
    part = ledger.return_purchase(ANNA, DEAL, D("250"), key="ret-1")
    assert part.points == D("-3.75")
    ledger.return_purchase(ANNA, DEAL, D("750"), key="ret-2")
    assert ledger.account(ANNA).balance == 0 and ledger.verify() == (1, [])


def test_a_deal_lost_and_won_again_keeps_what_was_returned_of_it(ledger: Ledger) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("1000"))  # 3%: 30
    ledger.return_purchase(ANNA, DEAL, D("300"), key="ret-1")
    ledger.settle_purchase(ANNA, DEAL, None)
    [won] = ledger.settle_purchase(ANNA, DEAL, D("1000"))
    assert won.points == D("21.00")
    view = ledger.account(ANNA)
    assert (view.balance, view.purchase_total, view.purchase_count) == (D("21.00"), D("700.00"), 1)
    assert ledger.settle_purchase(ANNA, DEAL, D("1000")) == []  # the same state: nothing
    [more] = ledger.settle_purchase(ANNA, DEAL, D("1100"))  # a higher sale, less the return
    assert more.points == D("3.00") and ledger.account(ANNA).purchase_total == D("800.00")
    last = ledger.return_purchase(ANNA, DEAL, D("800"), key="ret-2")
    assert last.details["return"]["returned_before"] == "300.00"
    assert ledger.account(ANNA).balance == 0 and ledger.verify() == (1, [])


def test_a_deal_with_rows_lost_and_won_again_keeps_its_returned_rows_returned(
        ledger: Ledger) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("1000"), rows=[BOOK, GIFT_CARD])  # 15
    ledger.return_purchase(ANNA, DEAL, D("500"), key="ret-1", rows=[BOOK])
    ledger.settle_purchase(ANNA, DEAL, None)
    [won] = ledger.settle_purchase(ANNA, DEAL, D("1000"), rows=[BOOK, GIFT_CARD])
    assert won.points == D("0.00")
    assert ledger.settle_purchase(ANNA, DEAL, D("1000"), rows=[BOOK, GIFT_CARD]) == []
    assert ledger.account(ANNA).balance == 0 and ledger.verify() == (1, [])


def test_the_what_if_replay_follows_these_returns(ledger: Ledger, db: Database,
                                                  settings: Settings, clock: Clock) -> None:
    other = Row("101", D("500"), D("1"))
    deal = f"{DEAL}:2"
    ledger.settle_purchase(ANNA, DEAL, D("1500"), rows=[BOOK, other, GIFT_CARD])
    ledger.return_purchase(ANNA, DEAL, D("500"), key="ret-1", rows=[GIFT_CARD])
    ledger.return_purchase(ANNA, DEAL, D("250"), key="ret-2")
    ledger.settle_purchase(ANNA, DEAL, D("1700"), rows=[BOOK, other, GIFT_CARD,
                                                        Row("102", D("200"), D("1"))])
    ledger.settle_purchase(ANNA, DEAL, None)
    ledger.settle_purchase(ANNA, DEAL, D("1700"), rows=[BOOK, other, GIFT_CARD,
                                                        Row("102", D("200"), D("1"))])
    ledger.settle_purchase(ANNA, deal, D("1000"))
    ledger.return_purchase(ANNA, deal, D("100"), key="ret-3")
    ledger.settle_purchase(ANNA, deal, None)
    ledger.settle_purchase(ANNA, deal, D("1000"))
    ledger.return_purchase(ANNA, deal, D("100"), key="ret-4")
    assert ledger.verify() == (1, [])
    sim = simulate(db, settings.program, settings.program, now=clock())
    assert sim.differing_entries == 0
