"""The program's rules as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.config import ProgramSettings
from connector.errors import UnknownBonusError
from connector.program import Program

SETTINGS = ProgramSettings.model_validate({
    "timezone": "Europe/Kyiv",
    "tiers": [
        {"name": "Bronze", "min_spend": "0", "rate": "0.03"},
        {"name": "Silver", "min_spend": "30000", "rate": "0.05", "discount_percent": "3"},
        {"name": "Gold", "min_spend": "100000", "rate": "0.07", "discount_percent": "5"},
    ],
    "campaigns": [
        {"name": "double", "starts": "2026-11-27T00:00:00", "ends": "2026-11-28T00:00:00",
         "multiplier": "2"},
        {"name": "coffee", "starts": "2026-11-01T00:00:00", "ends": "2026-12-01T00:00:00",
         "multiplier": "3", "extra_points": "10", "categories": ["cafe"]},
    ],
    "bonuses": {"review": "50"},
    "welcome_bonus": "100",
})
PROGRAM = Program(SETTINGS)
BRONZE, SILVER, GOLD = SETTINGS.tiers


def test_tier_by_spend() -> None:
    assert PROGRAM.tier_for(D("29999.99")) is BRONZE
    assert PROGRAM.tier_for(D("30000")) is SILVER
    assert PROGRAM.tier_for(D("10000000")) is GOLD
    assert PROGRAM.next_tier(D("25000")) == (SILVER, D("5000"))
    assert PROGRAM.next_tier(D("100000")) is None
    # From the tier held: a Silver customer below Silver's spend (kept through grace).
    assert PROGRAM.next_tier(D("25000"), "Silver") == (GOLD, D("75000"))
    assert PROGRAM.next_tier(D("25000"), "Gold") is None


def test_points_are_floored_to_whole_points() -> None:
    at = datetime(2026, 10, 1, tzinfo=UTC)
    assert PROGRAM.earn(D("999.99"), tier=BRONZE, at=at).points == D("29.00")
    assert PROGRAM.earn(D("999.99"), tier=GOLD, at=at).points == D("69.00")


def test_campaign_window_is_in_the_program_time_zone() -> None:
    # 2026-11-26 22:30 UTC is already 2026-11-27 00:30 in Kyiv
    inside = PROGRAM.earn(D("1000"), tier=BRONZE, at=datetime(2026, 11, 26, 22, 30, tzinfo=UTC))
    before = PROGRAM.earn(D("1000"), tier=BRONZE, at=datetime(2026, 11, 26, 21, 30, tzinfo=UTC))
    assert (inside.points, inside.campaigns) == (D("60.00"), ("double",))
    assert (before.points, before.campaigns) == (D("30.00"), ())


def test_multipliers_do_not_stack_extra_points_add() -> None:
    at = datetime(2026, 11, 27, 12, tzinfo=UTC)
    earning = PROGRAM.earn(D("1000"), tier=BRONZE, at=at, category="cafe")
    assert earning.multiplier == D("3") and earning.points == D("100.00")  # 90 + 10
    assert earning.campaigns == ("double", "coffee")


def test_redeem_cap_and_preview() -> None:
    assert PROGRAM.redeem_cap(D("999.99")) == D("499.99")
    assert PROGRAM.max_redeemable(D("1000"), available=D("120")) == D("120")
    preview = PROGRAM.preview(D("1000"), tier=SILVER, available=D("800"),
                              at=datetime(2026, 10, 1, tzinfo=UTC))
    assert (preview.points_earned, preview.max_redeem_points, preview.max_redeem_amount) == (
        D("50.00"), D("500.00"), D("500.00"))
    assert preview.discount_percent == D("3")


def test_bonuses() -> None:
    assert PROGRAM.bonus_points("welcome") == D("100")
    assert PROGRAM.bonus_points("review") == D("50")
    assert PROGRAM.bonus_points("birthday") == D("0")
    with pytest.raises(UnknownBonusError, match="review"):
        PROGRAM.bonus_points("selfie")


@given(amount=st.decimals(min_value=D("0.01"), max_value=D("10000000"), places=2))
def test_earning_is_exact_and_never_exceeds_the_rate(amount: D) -> None:
    earning = PROGRAM.earn(amount, tier=GOLD, at=datetime(2026, 1, 5, tzinfo=UTC))
    assert earning.points == earning.points.to_integral_value()
    assert 0 <= amount * D("0.07") - earning.points < 1
