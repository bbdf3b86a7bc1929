"""The loyalty program's rules: pure functions of the `[program]` settings, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from connector.config import Campaign, ProgramSettings, Tier
from connector.errors import UnknownBonusError
from connector.money import round_points

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
# Named bonuses the program itself grants; custom ones come from [program.bonuses].
BUILTIN_BONUSES = ("welcome", "birthday", "anniversary", "referral", "referral_newcomer")


@dataclass(frozen=True)
class Earning:
    """How a purchase earns points; `breakdown` is stored beside the ledger entry."""

    points: Decimal
    tier: Tier
    rate: Decimal
    multiplier: Decimal
    extra_points: Decimal
    campaigns: tuple[str, ...] = ()

    @property
    def breakdown(self) -> dict[str, str | list[str]]:
        return {
            "tier": self.tier.name,
            "rate": str(self.rate),
            "multiplier": str(self.multiplier),
            "extra_points": str(self.extra_points),
            "campaigns": list(self.campaigns),
        }


@dataclass(frozen=True)
class Preview:
    """What a purchase would earn and how much of it could be paid with points."""

    purchase_amount: Decimal
    tier: str
    discount_percent: Decimal
    points_earned: Decimal
    max_redeem_points: Decimal
    max_redeem_amount: Decimal
    campaigns: tuple[str, ...] = field(default=())


class Program:
    def __init__(self, settings: ProgramSettings) -> None:
        self.settings = settings
        self.zone = settings.zone

    # -- tiers -----------------------------------------------------------------------------
    def tier_for(self, qualifying_spend: Decimal) -> Tier:
        chosen = self.settings.tiers[0]
        for tier in self.settings.tiers:
            if qualifying_spend >= tier.min_spend:
                chosen = tier
        return chosen

    def tier_named(self, name: str | None) -> Tier:
        for tier in self.settings.tiers:
            if tier.name == name:
                return tier
        return self.settings.tiers[0]

    def tier_rank(self, name: str | None) -> int:
        names = [tier.name for tier in self.settings.tiers]
        return names.index(name) if name in names else 0

    def next_tier(self, qualifying_spend: Decimal,
                  current: str | None = None) -> tuple[Tier, Decimal] | None:
        """The next tier up from `current` (else from the tier the spend earns) and the spend
        still missing to reach it. A customer kept in a tier through its grace, with less
        spend than it asks, still has the tier above it to reach."""
        rank = self.tier_rank(current) if current is not None \
            else self.tier_rank(self.tier_for(qualifying_spend).name)
        above = self.settings.tiers[rank + 1:]
        if not above:
            return None
        return above[0], max(above[0].min_spend - qualifying_spend, Decimal(0))

    def tier_window_start(self, now: datetime) -> datetime:
        return now - timedelta(days=self.settings.tier_period_days)

    # -- earning ---------------------------------------------------------------------------
    def active_campaigns(self, at: datetime, category: str | None) -> list[Campaign]:
        local = at.astimezone(self.zone).replace(tzinfo=None)
        return [
            campaign
            for campaign in self.settings.campaigns
            if campaign.starts <= local < campaign.ends
            and (not campaign.categories or (category is not None
                                             and category in campaign.categories))
        ]

    def earn(self, amount: Decimal, *, tier: Tier, at: datetime,
             category: str | None = None) -> Earning:
        """Points for a purchase. Campaign multipliers do not stack (the highest applies);
        fixed extra points of every active campaign add up."""
        campaigns = self.active_campaigns(at, category)
        multiplier = max((c.multiplier for c in campaigns), default=Decimal(1))
        extra = sum((c.extra_points for c in campaigns), ZERO)
        points = self.points_for(amount, tier.rate, multiplier)
        return Earning(
            points=points + extra,
            tier=tier,
            rate=tier.rate,
            multiplier=multiplier,
            extra_points=extra,
            campaigns=tuple(c.name for c in campaigns),
        )

    def points_for(self, amount: Decimal, rate: Decimal, multiplier: Decimal) -> Decimal:
        raw = amount * rate * multiplier / self.settings.point_value
        return round_points(raw, self.settings.points_precision, self.settings.rounding)

    # -- redeeming -------------------------------------------------------------------------
    def redeem_cap(self, purchase_amount: Decimal) -> Decimal:
        """Most points one purchase may be paid with, by the program's share alone."""
        cap_money = purchase_amount * self.settings.redeem_share
        return (cap_money / self.settings.point_value).quantize(CENT, rounding=ROUND_DOWN)

    def max_redeemable(self, purchase_amount: Decimal, available: Decimal) -> Decimal:
        if available <= 0 or available < self.settings.min_balance_to_redeem:
            return ZERO
        return min(available, self.redeem_cap(purchase_amount))

    def points_to_money(self, points: Decimal) -> Decimal:
        return (points * self.settings.point_value).quantize(CENT, rounding=ROUND_DOWN)

    def preview(self, purchase_amount: Decimal, *, tier: Tier, available: Decimal,
                at: datetime, category: str | None = None) -> Preview:
        earning = self.earn(purchase_amount, tier=tier, at=at, category=category)
        max_points = self.max_redeemable(purchase_amount, available)
        return Preview(
            purchase_amount=purchase_amount,
            tier=tier.name,
            discount_percent=tier.discount_percent,
            points_earned=earning.points,
            max_redeem_points=max_points,
            max_redeem_amount=self.points_to_money(max_points),
            campaigns=earning.campaigns,
        )

    # -- bonuses and lots ------------------------------------------------------------------
    def bonus_points(self, name: str) -> Decimal:
        if name in BUILTIN_BONUSES:
            return Decimal(getattr(self.settings, f"{name}_bonus"))
        if name in self.settings.bonuses:
            return Decimal(self.settings.bonuses[name])
        known = ", ".join([*BUILTIN_BONUSES, *self.settings.bonuses]) or "none"
        raise UnknownBonusError(f"bonus {name!r} is not configured (known: {known})",
                                bonus=name)

    def expires_at(self, earned_at: datetime) -> datetime | None:
        days = self.settings.points_lifetime_days
        return earned_at + timedelta(days=days) if days else None

    def available_at(self, earned_at: datetime) -> datetime:
        return earned_at + timedelta(days=self.settings.pending_days)
