"""Worked examples of the ledger, on every configured database."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from connector.errors import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InsufficientPointsError,
    InvalidAmountError,
    LedgerError,
    NothingToReverseError,
    RedemptionCapError,
    UnknownBonusError,
)
from connector.ledger.engine import Ledger
from connector.ledger.models import Entry, Lot
from connector.ledger.views import AccountRef
from connector.referrals.codes import luhn_valid
from tests.conftest import Clock

ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "101")
BORIS = AccountRef("bitrix24", "acme.bitrix24.ru", "102")


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {
        "tiers": [
            {"name": "Bronze", "min_spend": "0", "rate": "0.05"},
            {"name": "Silver", "min_spend": "10000", "rate": "0.10", "discount_percent": "5"},
        ],
        "welcome_bonus": "100",
        "referral_bonus": "300",
        "referral_newcomer_bonus": "50",
        "bonuses": {"review": "50"},
        "points_lifetime_days": 30,
    }


def balance(ledger: Ledger, ref: AccountRef = ANNA) -> D:
    return ledger.account(ref).balance


def test_purchase_earns_by_tier_and_replay_changes_nothing(ledger: Ledger) -> None:
    first = ledger.accrue(ANNA, D("1000"), key="deal:1")
    again = ledger.accrue(ANNA, D("1000"), key="deal:1")
    assert first.points == D("50.00") and not first.duplicate
    assert again.duplicate and again.entry_id == first.entry_id and again.points == D("50.00")
    assert balance(ledger) == D("50.00")
    assert ledger.verify() == (1, [])


def test_reaching_a_tier_upgrades_at_once_and_next_purchase_earns_more(ledger: Ledger) -> None:
    up = ledger.accrue(ANNA, D("12000"), key="deal:1")
    assert up.points == D("600.00")  # earned at Bronze: the upgrade follows the purchase
    assert up.details["tier_up"] == "Silver"
    view = ledger.account(ANNA)
    assert view.tier == "Silver" and view.discount_percent == D("5")
    assert view.next_tier is None and view.qualifying_spend == D("12000.00")
    assert ledger.accrue(ANNA, D("1000"), key="deal:2").points == D("100.00")


def test_redemption_is_capped_by_share_and_balance(ledger: Ledger) -> None:
    ledger.grant_bonus(ANNA, "welcome", key="welcome:101")
    ledger.accrue(ANNA, D("4000"), key="deal:1")  # +200 -> 300
    with pytest.raises(RedemptionCapError) as cap:
        ledger.redeem(ANNA, D("250"), key="r1", purchase_amount=D("400"))
    assert cap.value.context["max_redeemable"] == "200.00"
    with pytest.raises(InsufficientPointsError):
        ledger.redeem(ANNA, D("301"), key="r2")
    partial = ledger.redeem(ANNA, D("250"), key="r3", purchase_amount=D("400"), partial=True)
    assert partial.points == D("-200.00") and partial.balance == D("100.00")
    assert balance(ledger) == D("100.00")


def test_min_balance_to_redeem(ledger: Ledger, settings: Any, clock: Clock) -> None:
    strict = Ledger(ledger.db, type(ledger.program)(settings.program.model_copy(
        update={"min_balance_to_redeem": D("500")})), clock=clock)
    strict.accrue(ANNA, D("2000"), key="deal:1")  # 100 points
    with pytest.raises(InsufficientPointsError):
        strict.redeem(ANNA, D("10"), key="r1")


def test_reversal_takes_back_what_the_deal_earned(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("2000"), key="deal:1", source="deal:1")
    ledger.accrue(ANNA, D("1000"), key="deal:2", source="deal:2")
    result = ledger.reverse(ANNA, "deal:1", key="deal:1:lost")
    assert result.points == D("-100.00") and result.shortfall == 0
    view = ledger.account(ANNA)
    assert view.balance == D("50.00") and view.purchase_count == 1
    assert view.purchase_total == D("1000.00")
    # reversing again with another key finds nothing left to undo, and writes nothing
    entries = len(ledger.history(ANNA))
    with pytest.raises(NothingToReverseError):
        ledger.reverse(ANNA, "deal:1", key="deal:1:lost-again")
    assert len(ledger.history(ANNA)) == entries
    assert ledger.verify() == (1, [])


def test_reversal_of_spent_points_clamps_and_records_shortfall(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("2000"), key="deal:1")  # 100
    ledger.redeem(ANNA, D("80"), key="pay:1")
    result = ledger.reverse(ANNA, "deal:1", key="deal:1:lost")
    assert result.points == D("-20.00") and result.shortfall == D("80.00")
    assert balance(ledger) == D("0.00")
    # won again: the new accrual is not eaten by the old shortfall
    ledger.accrue(ANNA, D("2000"), key="deal:1:won-again", source="deal:1")
    assert balance(ledger) == D("100.00")
    assert ledger.reverse(ANNA, "deal:1", key="deal:1:lost-again").points == D("-100.00")
    assert ledger.verify() == (1, [])


def test_reversal_may_go_negative_when_allowed(ledger: Ledger, settings: Any,
                                              clock: Clock) -> None:
    allow = Ledger(ledger.db, type(ledger.program)(settings.program.model_copy(
        update={"negative_balance": "allow"})), clock=clock)
    allow.accrue(ANNA, D("2000"), key="deal:1")
    allow.redeem(ANNA, D("80"), key="pay:1")
    assert allow.reverse(ANNA, "deal:1", key="rev").points == D("-100.00")
    assert balance(allow) == D("-80.00")
    assert allow.accrue(ANNA, D("2000"), key="deal:2").balance == D("20.00")
    assert allow.account(ANNA).available == D("20.00")
    assert allow.verify() == (1, [])


def test_reversing_a_redemption_gives_points_back(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("2000"), key="deal:1")
    ledger.redeem(ANNA, D("60"), key="pay:1", source="order:7")
    back = ledger.reverse(ANNA, "order:7", key="order:7:cancelled")
    assert back.points == D("60.00") and balance(ledger) == D("100.00")
    assert ledger.verify() == (1, [])


def test_refunded_points_keep_their_original_expiry(ledger: Ledger, clock: Clock) -> None:
    ledger.accrue(ANNA, D("2000"), key="deal:1")
    clock.advance(days=10)
    ledger.redeem(ANNA, D("100"), key="pay:1")
    ledger.reverse(ANNA, "pay:1", key="pay:1:cancelled")
    clock.advance(days=21)  # 31 days after the accrual
    assert ledger.expire_due() == 1
    assert balance(ledger) == D("0.00")


def test_expiry_takes_oldest_lots_first(ledger: Ledger, clock: Clock) -> None:
    ledger.accrue(ANNA, D("2000"), key="deal:1")  # 100, expires day 30
    clock.advance(days=20)
    ledger.accrue(ANNA, D("1000"), key="deal:2")  # 50, expires day 50
    ledger.redeem(ANNA, D("120"), key="pay:1")  # takes 100 old + 20 new
    view = ledger.account(ANNA)
    assert view.next_expiry_points == D("30.00")
    clock.advance(days=11)
    assert ledger.expire_due() == 0  # the oldest lot was fully spent
    clock.advance(days=20)
    assert ledger.expire_due() == 1
    assert balance(ledger) == D("0.00")
    assert ledger.expire_due() == 0  # running again changes nothing
    kinds = [e.kind for e in ledger.history(ANNA)]
    assert kinds == ["expiry", "redemption", "accrual", "accrual"]


def test_pending_points_cannot_be_spent_until_available(ledger: Ledger, settings: Any,
                                                        clock: Clock) -> None:
    pending = Ledger(ledger.db, type(ledger.program)(settings.program.model_copy(
        update={"pending_days": 14})), clock=clock)
    pending.accrue(ANNA, D("2000"), key="deal:1")
    view = pending.account(ANNA)
    assert (view.balance, view.available, view.pending) == (D("100.00"), D("0.00"),
                                                            D("100.00"))
    with pytest.raises(InsufficientPointsError):
        pending.redeem(ANNA, D("10"), key="r1")
    clock.advance(days=14)
    assert pending.redeem(ANNA, D("10"), key="r1").balance == D("90.00")


def test_bonuses_named_custom_and_zero(ledger: Ledger) -> None:
    assert ledger.grant_bonus(ANNA, "review", key="review:1").points == D("50.00")
    assert ledger.grant_bonus(ANNA, "birthday", key="bday:2026").entry_id is None
    with pytest.raises(UnknownBonusError):
        ledger.grant_bonus(ANNA, "nonsense", key="x")
    manual = ledger.grant_bonus(ANNA, "manual", key="m1", points=D("12.5"))
    assert manual.points == D("12.50") and balance(ledger) == D("62.50")


def test_referral_bonus_on_first_purchase_only(ledger: Ledger) -> None:
    ledger.link_referral(BORIS, referrer=ANNA)
    ledger.accrue(BORIS, D("1000"), key="deal:b1")
    ledger.accrue(BORIS, D("1000"), key="deal:b2")
    assert balance(ledger, ANNA) == D("300.00")
    assert balance(ledger, BORIS) == D("150.00")  # 50 + 50 + newcomer 50
    with pytest.raises(LedgerError):
        ledger.link_referral(ANNA, referrer=BORIS)  # a cycle


def test_adjust_needs_reason_and_cannot_overdraw_under_clamp(ledger: Ledger) -> None:
    with pytest.raises(LedgerError):
        ledger.adjust(ANNA, D("10"), key="a0", reason="  ")
    ledger.adjust(ANNA, D("10"), key="a1", reason="goodwill", actor="admin")
    with pytest.raises(InsufficientPointsError):
        ledger.adjust(ANNA, D("-11"), key="a2", reason="correction")
    assert ledger.adjust(ANNA, D("-10"), key="a3", reason="correction").balance == 0
    entry = ledger.history(ANNA)[0]
    assert entry.comment == "correction" and entry.kind == "adjustment"


def test_key_reused_for_another_operation_is_refused(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("1000"), key="k")
    with pytest.raises(IdempotencyConflictError):
        ledger.redeem(ANNA, D("1"), key="k")
    with pytest.raises(IdempotencyConflictError):
        ledger.accrue(BORIS, D("1000"), key="k")


def test_bad_amounts_and_unknown_accounts(ledger: Ledger) -> None:
    with pytest.raises(InvalidAmountError):
        ledger.accrue(ANNA, D("0"), key="z")
    with pytest.raises(InvalidAmountError):
        ledger.redeem(ANNA, D("-5"), key="z")
    with pytest.raises(AccountNotFoundError):
        ledger.redeem(ANNA, D("5"), key="z")
    with pytest.raises(AccountNotFoundError):
        ledger.account(ANNA)


def test_campaign_doubles_points_inside_its_window(tmp_path: Any, db: Any, settings: Any,
                                                   clock: Clock) -> None:
    from connector.program import Program

    campaign = {"name": "double", "starts": "2026-03-10T00:00:00",
                "ends": "2026-03-11T00:00:00", "multiplier": "2", "categories": ["7"]}
    program = Program(settings.program.model_validate(
        {**settings.program.model_dump(), "campaigns": [campaign]}))
    ledger = Ledger(db, program, clock=clock)
    assert ledger.accrue(ANNA, D("1000"), key="d1", category="7").points == D("100.00")
    assert ledger.accrue(ANNA, D("1000"), key="d2", category="8").points == D("50.00")
    clock.advance(days=1)
    assert ledger.accrue(ANNA, D("1000"), key="d3", category="7").points == D("50.00")


def test_account_has_a_card_number_and_can_be_found_by_it(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("1000"), key="d1")
    view = ledger.account(ANNA)
    assert view.card_number is not None and len(view.card_number) == 10
    assert luhn_valid(view.card_number)
    assert ledger.account_by_card(view.card_number).ref == ANNA


def test_database_refuses_a_duplicate_key_and_a_wrong_sign(ledger: Ledger) -> None:
    ledger.accrue(ANNA, D("1000"), key="d1")
    with ledger.db.transaction(write=False) as session:
        entry = session.scalar(select(Entry))
        columns = {c.name: getattr(entry, c.key) for c in Entry.__table__.columns
                   if c.name != "id"}
    with pytest.raises(IntegrityError), ledger.db.transaction() as session:
        session.execute(Entry.__table__.insert().values(**columns))
    columns.update(idempotency_key="other", kind="redemption")  # positive redemption
    with pytest.raises(IntegrityError), ledger.db.transaction() as session:
        session.execute(Entry.__table__.insert().values(**columns))
    with pytest.raises(IntegrityError), ledger.db.transaction() as session:
        session.execute(text("UPDATE lots SET remaining = amount + 1"))
    with ledger.db.transaction(write=False) as session:
        assert session.scalar(select(Lot.remaining)) == 5000
