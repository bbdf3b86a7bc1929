"""settle_purchase: the ledger follows a CRM purchase's current state, whatever the order."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef
from tests.conftest import Clock

ANNA = AccountRef("bitrix24", "acme", "1")
BORIS = AccountRef("bitrix24", "acme", "2")
DEAL = "bitrix24:acme:deal:42"


def balance(ledger: Ledger, ref: AccountRef = ANNA) -> D:
    return ledger.account(ref).balance


def test_won_lost_won_with_new_amount_deleted(ledger: Ledger) -> None:
    [won] = ledger.settle_purchase(ANNA, DEAL, D("10000"))
    assert won.points == D("300.00") and won.kind == "accrual"
    assert ledger.settle_purchase(ANNA, DEAL, D("10000")) == []  # duplicate event
    [lost] = ledger.settle_purchase(ANNA, DEAL, None)
    assert lost.points == D("-300.00") and balance(ledger) == 0
    assert ledger.settle_purchase(ANNA, DEAL, None) == []
    [again] = ledger.settle_purchase(ANNA, DEAL, D("20000"))
    assert again.points == D("600.00")
    [deleted] = ledger.settle_purchase(None, DEAL, None)
    assert deleted.points == D("-600.00")
    view = ledger.account(ANNA)
    assert (view.balance, view.purchase_count, view.purchase_total) == (0, 0, 0)
    assert ledger.verify() == (1, [])


def test_amount_change_adjusts_by_the_difference_at_the_original_rate(ledger: Ledger) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("10000"))
    ledger.adjust(ANNA, D("1000000"), key="lift", reason="make the account Gold")
    [up] = ledger.settle_purchase(ANNA, DEAL, D("12000"))
    assert up.points == D("60.00")  # 3% of the extra 2000, as first accrued
    [down] = ledger.settle_purchase(ANNA, DEAL, D("5000"))
    assert down.points == D("-210.00") and down.kind == "reversal"
    view = ledger.account(ANNA)
    assert view.purchase_total == D("5000.00") and view.purchase_count == 1
    assert ledger.settle_purchase(ANNA, DEAL, D("5000")) == []
    assert ledger.verify() == (1, [])


def test_contact_change_moves_the_purchase(ledger: Ledger) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("10000"))
    results = ledger.settle_purchase(BORIS, DEAL, D("10000"))
    assert [r.points for r in results] == [D("-300.00"), D("300.00")]
    assert (balance(ledger, ANNA), balance(ledger, BORIS)) == (0, D("300.00"))
    assert ledger.account(ANNA).purchase_count == 0


def test_zero_amount_and_unknown_contact_write_nothing(ledger: Ledger) -> None:
    assert ledger.settle_purchase(ANNA, DEAL, D("0")) == []
    assert ledger.settle_purchase(None, DEAL, None) == []
    assert ledger.verify() == (0, [])


def test_a_late_return_counts_against_the_purchases_own_date(ledger: Ledger,
                                                            clock: Clock) -> None:
    ledger.accrue(ANNA, D("20000"), key="old", source="old")
    clock.advance(days=300)
    ledger.accrue(ANNA, D("5000"), key="new", source="new")
    ledger.reverse(ANNA, "old", key="old:returned")
    clock.advance(days=70)  # the old purchase and its return are both out of the window
    assert ledger.account(ANNA).qualifying_spend == D("5000.00")


def test_a_purchase_moved_twice_at_once_is_held_by_one_customer(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anna's deal moves to Boris while another worker moves it to Clara: the worker for
    Boris read Anna as the holder before Clara's move committed. The purchase ends on one
    account, the last settled, not on both."""
    clara = AccountRef("bitrix24", "acme", "3")
    ledger.settle_purchase(ANNA, DEAL, D("10000"))
    real = ledger._settle
    moved: list[bool] = []

    def clara_first(ref: AccountRef, *args: Any, **kwargs: Any) -> Any:
        # Boris's worker is about to take the deal back from Anna, whom it read as the
        # holder; Clara's worker moves it to her in the meantime.
        if ref == ANNA and not moved:
            moved.append(True)
            ledger.settle_purchase(clara, DEAL, D("10000"))
        return real(ref, *args, **kwargs)

    monkeypatch.setattr(ledger, "_settle", clara_first)
    ledger.settle_purchase(BORIS, DEAL, D("10000"))
    assert moved
    held = {ref.contact_id: ledger.account(ref).purchase_count for ref in (ANNA, BORIS, clara)}
    assert held == {"1": 0, "2": 1, "3": 0}
    assert balance(ledger, BORIS) == D("300.00") and balance(ledger, clara) == D("0.00")
    assert ledger.verify()[1] == []
