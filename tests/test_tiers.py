"""Tier recalculation over the rolling period: downgrades, grace, triggers once."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import select

from connector.crm.models import TriggerEvent
from connector.db import Database
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef
from connector.triggers import TIER_DOWN, from_tier_changes, record
from tests.conftest import Clock

ANNA = AccountRef("amocrm", "shop", "1")


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"tiers": [{"name": "Bronze", "min_spend": "0", "rate": "0.03"},
                      {"name": "Silver", "min_spend": "10000", "rate": "0.05"},
                      {"name": "Gold", "min_spend": "50000", "rate": "0.07"}],
            "tier_period_days": 365, "tier_grace_days": 30}


def tier(ledger: Ledger) -> str:
    return ledger.account(ANNA).tier


def test_downgrade_after_the_period_and_not_within_grace(ledger: Ledger, clock: Clock,
                                                        db: Database) -> None:
    ledger.accrue(ANNA, D("60000"), key="big")
    assert tier(ledger) == "Gold"
    clock.advance(days=200)
    ledger.accrue(ANNA, D("12000"), key="small")
    assert ledger.recalculate_tiers() == []  # 72,000 in the window: still Gold
    clock.advance(days=170)  # the big purchase left the window: 12,000 remain
    kept = ledger.account(ANNA)  # Gold until the recalculation: nothing above it
    assert (kept.tier, kept.next_tier, kept.spend_to_next_tier) == ("Gold", None, None)
    [change] = ledger.recalculate_tiers()
    assert (change.old, change.new) == ("Gold", "Silver") and tier(ledger) == "Silver"
    assert ledger.recalculate_tiers() == []  # run twice, same result
    record(db, from_tier_changes([change], ledger.program), program=ledger.program)
    record(db, from_tier_changes([change], ledger.program), program=ledger.program)
    with db.transaction(write=False) as session:
        events = list(session.scalars(select(TriggerEvent)))
    assert [(e.code, e.status) for e in events] == [(TIER_DOWN, "pending")]
    clock.advance(days=10)  # within 30 days of the last change: no further downgrade
    ledger.reverse(ANNA, "small", key="small:returned")
    assert ledger.recalculate_tiers() == [] and tier(ledger) == "Silver"
    # Kept in Silver with no spend: Gold is still the next tier, not "the top tier".
    view = ledger.account(ANNA)
    assert (view.next_tier, view.spend_to_next_tier) == ("Gold", D("50000"))
    clock.advance(days=21)
    [change] = ledger.recalculate_tiers()
    assert (change.old, change.new) == ("Silver", "Bronze")


def test_downgrade_marks_the_account_for_write_back(ledger: Ledger, clock: Clock) -> None:
    ledger.accrue(ANNA, D("20000"), key="a")
    version = ledger.account(ANNA).version
    clock.advance(days=400)
    ledger.recalculate_tiers()
    view = ledger.account(ANNA)
    assert view.tier == "Bronze" and view.version > version


def test_a_purchase_made_while_tiers_are_recalculated_keeps_its_tier(
        ledger: Ledger, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger.accrue(ANNA, D("20000"), key="a")
    clock.advance(days=400)  # the purchase left the window: Silver is due to go
    real = ledger.program.tier_for
    made: list[bool] = []

    def purchase_meanwhile(spend: D) -> Any:
        # Between the recalculation's read of the spend and its lock on the account, a
        # purchase commits that keeps the account in Silver (no tier change of its own).
        if not made:
            made.append(True)
            ledger.accrue(ANNA, D("11000"), key="meanwhile")
        return real(spend)

    monkeypatch.setattr(ledger.program, "tier_for", purchase_meanwhile)
    assert ledger.recalculate_tiers() == [] and made
    view = ledger.account(ANNA)
    assert (view.tier, view.qualifying_spend) == ("Silver", D("11000.00"))
