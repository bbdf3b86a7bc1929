"""Partial returns (Ledger.return_purchase): points back in proportion at the purchase's own
terms, redeemed points given back in proportion, spend lowered, the books always balanced."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from connector.errors import (
    IdempotencyConflictError,
    InvalidAmountError,
    NothingToReverseError,
    ReturnTooLargeError,
)
from connector.ledger.engine import Ledger
from connector.ledger.models import Entry
from connector.ledger.views import AccountRef, Result
from connector.products.rows import Row
from tests.conftest import Clock
from tests.test_concurrency import in_parallel

ANNA = AccountRef("bitrix24", "acme", "1")
DEAL = "bitrix24:acme:deal:42"


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"campaigns": [{"name": "double", "starts": "2026-03-01T00:00:00",
                           "ends": "2026-03-05T00:00:00", "multiplier": "2",
                           "extra_points": "50"}]}


def balance(ledger: Ledger) -> D:
    return ledger.account(ANNA).balance


def entries(ledger: Ledger, source: str) -> list[Entry]:
    with ledger.db.transaction(write=False) as session:
        return list(session.scalars(select(Entry).where(Entry.source == source)
                                    .order_by(Entry.id)))


def test_partial_returns_take_back_in_proportion_then_the_rest(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("10000"), key="order-1")  # 3%: 300 points
    first = ledger.return_purchase(ANNA, "order-1", D("2500"), key="ret-1")
    assert first.kind == "reversal" and first.points == D("-75.00")
    assert first.details["return"]["amount"] == "2500.00"
    assert first.details["return"]["remaining_after"] == "7500.00"
    view = ledger.account(ANNA)
    assert (view.balance, view.purchase_total, view.purchase_count) == \
        (D("225.00"), D("7500.00"), 1)
    assert view.qualifying_spend == D("7500.00")
    second = ledger.return_purchase(ANNA, "order-1", D("2500"), key="ret-2")
    assert second.points == D("-75.00")
    # What is left is taken back by the return that ends the purchase, whatever rounding did.
    last = ledger.return_purchase(ANNA, "order-1", D("5000"), key="ret-3")
    assert last.points == D("-150.00") and last.details["return"]["remaining_after"] == "0.00"
    view = ledger.account(ANNA)
    assert (view.balance, view.purchase_total, view.purchase_count) == (0, 0, 0)
    assert ledger.verify() == (1, [])


def test_a_return_larger_than_what_is_left_is_refused_and_writes_nothing(
        ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("1000"), key="order-1")
    ledger.return_purchase(ANNA, "order-1", D("600"), key="ret-1")
    before = len(entries(ledger, "order-1"))
    with pytest.raises(ReturnTooLargeError) as refused:
        ledger.return_purchase(ANNA, "order-1", D("400.01"), key="ret-2")
    assert refused.value.context["remaining"] == "400.00"
    assert len(entries(ledger, "order-1")) == before
    assert not ledger.key_used("ret-2")
    # The refused key is free for the right request.
    assert ledger.return_purchase(ANNA, "order-1", D("400"), key="ret-2").points == D("-12.00")
    with pytest.raises(NothingToReverseError):
        ledger.return_purchase(ANNA, "order-1", D("1"), key="ret-3")
    with pytest.raises(NothingToReverseError):
        ledger.return_purchase(ANNA, "no-such-order", D("1"), key="ret-4")


def test_repeating_the_key_writes_nothing_and_another_request_under_it_conflicts(
        ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("1000"), key="order-1")
    first = ledger.return_purchase(ANNA, "order-1", D("100"), key="ret-1", fingerprint="a")
    again = ledger.return_purchase(ANNA, "order-1", D("100"), key="ret-1", fingerprint="a")
    assert again.duplicate and again.entry_id == first.entry_id
    assert balance(ledger) == D("27.00")
    with pytest.raises(IdempotencyConflictError):
        ledger.return_purchase(ANNA, "order-1", D("200"), key="ret-1", fingerprint="b")


def test_rows_give_the_amount_and_must_agree_with_it(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("1000"), key="order-1")
    rows = [Row("sku-1", D("150"), D("2")), Row("sku-2", D("33.33"), D("3"))]
    result = ledger.return_purchase(ANNA, "order-1", D("399.99"), key="ret-1", rows=rows)
    assert result.details["return"]["rows"][1] == {"product_id": "sku-2", "price": "33.33",
                                                   "quantity": "3"}
    with pytest.raises(InvalidAmountError):
        ledger.return_purchase(ANNA, "order-1", D("100"), key="ret-2", rows=rows)


def test_campaign_multiplier_is_proportional_and_extra_points_go_with_the_last_return(
        ledger: Ledger, clock: Clock) -> None:
    clock.now = clock.now.replace(day=2)  # in the campaign: 3% x2 + 50 extra
    accrued = ledger.accrue(ANNA, D("1000"), key="order-1")
    assert accrued.points == D("110.00")
    clock.advance(days=10)  # the campaign is over; the purchase's own terms still hold
    assert ledger.return_purchase(ANNA, "order-1", D("500"), key="ret-1").points \
        == D("-30.00")
    assert ledger.return_purchase(ANNA, "order-1", D("500"), key="ret-2").points \
        == D("-80.00")
    assert balance(ledger) == 0 and ledger.verify() == (1, [])


def test_points_that_paid_for_the_purchase_come_back_in_proportion(ledger: Ledger) -> None:
    ledger.adjust(ANNA, D("1000"), key="gift", reason="opening balance")
    ledger.redeem(ANNA, D("200"), key="pay-1", source="order-1", purchase_amount=D("1000"))
    ledger.accrue(ANNA, D("1000"), key="order-1")  # 30 points
    assert balance(ledger) == D("830.00")
    part = ledger.return_purchase(ANNA, "order-1", D("250"), key="ret-1")
    # 30 earned on 1000 become the 22 that 750 earns (3%, floored); a quarter of the 200
    # redeemed comes back.
    assert part.details["return"]["points_taken_back"] == "8.00"
    assert part.details["return"]["redemption_given_back"] == "50.00"
    assert part.points == D("42.00")
    rest = ledger.return_purchase(ANNA, "order-1", D("750"), key="ret-2")
    assert rest.points == D("128.00")  # 150 redeemed back, 22 earned taken back
    assert balance(ledger) == D("1000.00") and ledger.verify() == (1, [])


def test_full_reverse_after_partial_returns_takes_only_what_remains(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("10000"), key="order-1")
    ledger.return_purchase(ANNA, "order-1", D("4000"), key="ret-1")
    reversed_ = ledger.reverse(ANNA, "order-1", key="rev-1")
    assert reversed_.points == D("-180.00")
    view = ledger.account(ANNA)
    assert (view.balance, view.purchase_total, view.purchase_count) == (0, 0, 0)
    with pytest.raises(NothingToReverseError):
        ledger.return_purchase(ANNA, "order-1", D("1"), key="ret-2")


def test_returns_keep_the_purchase_date_for_the_tier_window(ledger: Ledger,
                                                           clock: Clock) -> None:
    ledger.accrue(ANNA, D("20000"), key="old")
    clock.advance(days=300)
    ledger.accrue(ANNA, D("5000"), key="new")
    ledger.return_purchase(ANNA, "old", D("5000"), key="old:ret")
    assert ledger.account(ANNA).qualifying_spend == D("20000.00")
    clock.advance(days=70)  # the old purchase and its return are both out of the window
    assert ledger.account(ANNA).qualifying_spend == D("5000.00")


def test_clamped_return_records_the_shortfall_and_the_books_balance(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("10000"), key="order-1")  # 300
    ledger.redeem(ANNA, D("290"), key="spent")  # elsewhere
    result = ledger.return_purchase(ANNA, "order-1", D("5000"), key="ret-1")
    assert result.points == D("-10.00") and result.shortfall == D("140.00")
    assert balance(ledger) == 0
    last = ledger.return_purchase(ANNA, "order-1", D("5000"), key="ret-2")
    assert last.points == 0 and last.shortfall == D("150.00")
    assert ledger.account(ANNA).purchase_count == 0 and ledger.verify() == (1, [])


# -- settle: a CRM deal with returns recorded against it --------------------------------
def test_a_lowered_deal_amount_takes_back_at_the_same_terms_as_a_return(
        ledger: Ledger) -> None:
    other = AccountRef("bitrix24", "acme", "2")
    ledger.settle_purchase(ANNA, DEAL, D("10000"))
    ledger.accrue(other, D("10000"), key="order-2")
    [lowered] = ledger.settle_purchase(ANNA, DEAL, D("7000"))
    returned = ledger.return_purchase(other, "order-2", D("3000"), key="ret-2")
    assert lowered.points == returned.points == D("-90.00")


def test_settle_counts_returns_off_the_deals_amount(ledger: Ledger) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("10000"))
    ledger.return_purchase(ANNA, DEAL, D("3000"), key="ret-1")
    # The deal's amount in the CRM is still the sale: nothing to re-price.
    assert ledger.settle_purchase(ANNA, DEAL, D("10000")) == []
    [up] = ledger.settle_purchase(ANNA, DEAL, D("12000"))  # a correction of the sale
    assert up.points == D("60.00") and ledger.account(ANNA).purchase_total == D("9000.00")
    [gone] = ledger.settle_purchase(ANNA, DEAL, D("2000"))  # less than was returned
    assert ledger.account(ANNA).balance == 0 and gone.kind == "reversal"
    assert ledger.verify() == (1, [])


def test_a_deal_returned_in_full_stays_returned(ledger: Ledger) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("10000"))
    ledger.return_purchase(ANNA, DEAL, D("10000"), key="ret-1")
    assert ledger.settle_purchase(ANNA, DEAL, D("10000")) == []
    assert ledger.settle_purchase(ANNA, DEAL, None) == []
    assert balance(ledger) == 0 and ledger.account(ANNA).purchase_count == 0


# -- property: any sequence of returns keeps the books balanced ---------------------------
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(purchase=st.integers(min_value=1, max_value=10_000_00),
       redeemed=st.integers(min_value=0, max_value=300_00),
       shares=st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=6))
def test_returns_in_any_parts_end_where_a_full_reversal_ends(
        ledger: Ledger, purchase: int, redeemed: int, shares: list[int]) -> None:
    ref = AccountRef("bitrix24", "acme", f"p{purchase}-{redeemed}-{len(shares)}-{shares[0]}")
    source = f"order:{ref.contact_id}"
    if ledger.key_used(f"{source}:accrue"):
        return  # hypothesis repeated an example on the same database
    ledger.adjust(ref, D("300"), key=f"{source}:gift", reason="opening")
    if redeemed:
        ledger.redeem(ref, D(redeemed) / 100, key=f"{source}:pay", source=source)
    ledger.accrue(ref, D(purchase) / 100, key=f"{source}:accrue", source=source)
    left = purchase
    for number, share in enumerate(shares):
        part = max(1, left * share // 100)
        ledger.return_purchase(ref, source, D(part) / 100, key=f"{source}:ret{number}")
        left -= part
        if left == 0:
            break
        assert ledger.account(ref).purchase_total == D(left) / 100
    if left:
        ledger.return_purchase(ref, source, D(left) / 100, key=f"{source}:last")
    view = ledger.account(ref)
    # Everything the purchase earned went, everything that paid for it came back.
    assert (view.balance, view.purchase_total, view.purchase_count) == (D("300.00"), 0, 0)
    assert ledger.verify()[1] == []


def test_a_second_repricing_keeps_the_purchases_rate_and_date(ledger: Ledger,
                                                               clock: Clock) -> None:
    ledger.settle_purchase(ANNA, DEAL, D("10000"))  # Bronze, 3%
    clock.advance(days=1)
    ledger.settle_purchase(ANNA, DEAL, D("40000"))  # +900, and up to Silver (5%)
    assert ledger.account(ANNA).tier == "Silver"
    clock.advance(days=364.5)  # the purchase's own date (day 0) has left the window
    [down] = ledger.settle_purchase(ANNA, DEAL, D("20000"))
    assert down.points == D("-600.00")  # at the purchase's 3%, not the account's 5%
    assert ledger.account(ANNA).qualifying_spend == 0


def test_parallel_returns_never_give_back_more_than_the_purchase(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("1000"), key="order-1")  # 30 points
    outcomes = in_parallel(8, lambda i: ledger.return_purchase(
        ANNA, "order-1", D("300"), key=f"ret-{i}"))
    succeeded = [o for o in outcomes if isinstance(o, Result)]
    refused = [o for o in outcomes if isinstance(o, ReturnTooLargeError)]
    assert len(succeeded) == 3 and len(refused) == 5
    view = ledger.account(ANNA)
    assert (view.purchase_total, view.balance) == (D("100.00"), D("3.00"))
    assert ledger.verify() == (1, [])
