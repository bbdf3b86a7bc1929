"""The loyalty program's rules: pure functions of the `[program]` settings, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from connector.campaigns.groups import CONTROL, TREATED, Group, group
from connector.config import ABTest, Campaign, ProgramSettings, Tier, Variant
from connector.errors import UnknownBonusError
from connector.money import round_points
from connector.products import rules as product_rules
from connector.products.rows import Row, digest

ZERO = Decimal("0.00")
ONE = Decimal(1)
CENT = Decimal("0.01")
# Named bonuses the program itself grants; custom ones come from [program.bonuses].
BUILTIN_BONUSES = ("welcome", "birthday", "anniversary", "referral", "referral_newcomer")
NO_VARIANT = Variant()


@dataclass(frozen=True)
class Earning:
    """How a purchase earns points; `breakdown` is stored beside the ledger entry."""

    points: Decimal
    tier: Tier
    rate: Decimal
    multiplier: Decimal
    extra_points: Decimal
    campaigns: tuple[str, ...] = ()
    rows: tuple[product_rules.RowRate, ...] = ()
    # The measured tests this purchase fell in: name -> its group and the points the test
    # gave beyond what the purchase would have earned without it (its cost).
    tests: tuple[Placement, ...] = ()

    @property
    def breakdown(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tier": self.tier.name,
            "rate": str(self.rate),
            "multiplier": str(self.multiplier),
            "extra_points": str(self.extra_points),
            "campaigns": list(self.campaigns),
        }
        if self.tests:
            out["tests"] = {t.name: t.as_json() for t in self.tests}
        if self.rows:
            out["rows"] = [rate.as_json() for rate in self.rows]
            out["rows_digest"] = digest(rate.row for rate in self.rows)
        return out


@dataclass(frozen=True)
class Placement:
    """A customer's group in a campaign with a holdout or the A/B test, for one purchase."""

    name: str
    kind: str  # "campaign" or "ab_test"
    group: Group
    points: Decimal = ZERO
    # The terms the purchase would have earned by without the test (rate, multiplier) and
    # the test's fixed extra points: a re-priced purchase recomputes `points` from them.
    base: tuple[Decimal, Decimal, Decimal] | None = None

    def as_json(self) -> dict[str, str]:
        out = {"group": self.group, "points": str(self.points)}
        if self.base is not None:
            out.update(base_rate=str(self.base[0]), base_multiplier=str(self.base[1]),
                       fixed=str(self.base[2]))
        return out


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
    eligible_amount: Decimal | None = None


class Program:
    def __init__(self, settings: ProgramSettings) -> None:
        self.settings = settings
        self.zone = settings.zone

    # -- tiers -----------------------------------------------------------------------------
    def tier_for(self, qualifying_spend: Decimal) -> Tier:
        return self.settings.tiers[self.tier_index(qualifying_spend)]

    def tier_index(self, qualifying_spend: Decimal) -> int:
        """The position in `tiers` of the tier the spend earns (the highest it reaches)."""
        chosen = 0
        for index, tier in enumerate(self.settings.tiers):
            if qualifying_spend >= tier.min_spend:
                chosen = index
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
             category: str | None = None, rows: Sequence[Row] | None = None,
             account_id: int | None = None) -> Earning:
        """Points for a purchase. Campaign multipliers do not stack (the highest applies);
        fixed extra points of every active campaign add up. With `rows`, the points are the
        sum over the rows, each at the rate its product rule gives (rounded once, on the
        sum, so small rows lose nothing); without, the amount earns at the tier's rate.
        `account_id` places the customer in the groups of campaigns with a holdout (control
        gets nothing from them) and of the A/B test; without it (an anonymous preview) the
        customer is taken as treated by campaigns and on the test's variant a."""
        applied, held_out = self.campaign_split(at, category, account_id)
        variant_group, variant = self.variant_for(at, account_id)
        rate = variant.rate if variant.rate is not None else tier.rate
        campaigns_multiplier = max((c.multiplier for c in applied), default=ONE)
        multiplier = campaigns_multiplier * variant.multiplier
        extra = sum((c.extra_points for c in applied), ZERO)
        points = self._points(amount, rows, rate, multiplier)
        tests = [Placement(c.name, "campaign", CONTROL) for c in held_out]
        for campaign in applied if account_id is not None else ():
            if campaign.holdout > 0:
                # What this campaign alone added: the points without it, the others kept.
                others = [c for c in applied if c is not campaign]
                base_multiplier = max((c.multiplier for c in others),
                                      default=ONE) * variant.multiplier
                without = self._points(amount, rows, rate, base_multiplier)
                tests.append(Placement(campaign.name, "campaign", TREATED,
                                       points - without + campaign.extra_points,
                                       (rate, base_multiplier, campaign.extra_points)))
        test = self.settings.ab_test
        if variant_group is not None and test is not None:
            base = test.a
            base_rate = base.rate if base.rate is not None else tier.rate
            base_multiplier = campaigns_multiplier * base.multiplier
            usual = self._points(amount, rows, base_rate, base_multiplier)
            tests.append(Placement(test.name, "ab_test", variant_group, points - usual,
                                   (base_rate, base_multiplier, ZERO)))
        return Earning(
            points=points + extra,
            tier=tier,
            rate=rate,
            multiplier=multiplier,
            extra_points=extra,
            campaigns=tuple(c.name for c in applied),
            rows=tuple(self.row_rates(rows, rate)) if rows else (),
            tests=tuple(tests),
        )

    def _points(self, amount: Decimal, rows: Sequence[Row] | None, rate: Decimal,
                multiplier: Decimal) -> Decimal:
        return self.points_for_rows(rows, rate, multiplier) if rows \
            else self.points_for(amount, rate, multiplier)

    def campaign_split(self, at: datetime, category: str | None, account_id: int | None
                       ) -> tuple[list[Campaign], list[Campaign]]:
        """The campaigns a purchase falls in: those that apply and those the customer is
        held out of (in the campaign's control group)."""
        if not self.settings.campaigns:
            return [], []
        applied, held_out = [], []
        for campaign in self.active_campaigns(at, category):
            if account_id is not None and campaign.holdout > 0 and group(
                    campaign.name, account_id, campaign.holdout) == CONTROL:
                held_out.append(campaign)
            else:
                applied.append(campaign)
        return applied, held_out

    def variant_for(self, at: datetime, account_id: int | None
                    ) -> tuple[Group | None, Variant]:
        """The A/B test's group of the customer and the variant it earns by: (None, the
        plain rules) outside the test's window or for an unknown customer."""
        test = self.settings.ab_test
        if test is None or not self._in_window(test, at):
            return None, NO_VARIANT
        if account_id is None:
            return None, test.a
        placed = group(test.name, account_id, ONE - test.share_b)
        return placed, test.b if placed == TREATED else test.a

    def _in_window(self, test: ABTest, at: datetime) -> bool:
        local = at.astimezone(self.zone).replace(tzinfo=None)
        return test.starts <= local < test.ends

    def terms(self, at: datetime, category: str | None, tier_rate: Decimal,
              account_id: int | None) -> tuple[Decimal, Decimal, Decimal]:
        """The rate, multiplier and fixed extra points a purchase earns by, as earn()
        applies them, without building its breakdown (the what-if replay's hot path)."""
        if not self.settings.campaigns and self.settings.ab_test is None:
            return tier_rate, ONE, ZERO
        applied, _ = self.campaign_split(at, category, account_id)
        _, variant = self.variant_for(at, account_id)
        multiplier = max((c.multiplier for c in applied), default=ONE) * variant.multiplier
        return (variant.rate if variant.rate is not None else tier_rate, multiplier,
                sum((c.extra_points for c in applied), ZERO))

    def campaign_terms(self, at: datetime, category: str | None,
                       account_id: int | None = None
                       ) -> tuple[list[Campaign], Decimal, Decimal]:
        """The campaigns a purchase falls in, the multiplier they give (the highest: they do
        not stack) and their fixed extra points (every one's, added up); a customer in a
        campaign's control group does not get it."""
        if not self.settings.campaigns:
            return [], ONE, ZERO
        campaigns, _ = self.campaign_split(at, category, account_id)
        multiplier = max((c.multiplier for c in campaigns), default=ONE)
        return campaigns, multiplier, sum((c.extra_points for c in campaigns), ZERO)

    def points_for(self, amount: Decimal, rate: Decimal, multiplier: Decimal) -> Decimal:
        raw = amount * rate * multiplier / self.settings.point_value
        return round_points(raw, self.settings.points_precision, self.settings.rounding)

    def row_rates(self, rows: Sequence[Row], tier_rate: Decimal) -> list[product_rules.RowRate]:
        return product_rules.rates(self.settings.product_rules, rows, tier_rate)

    def points_for_rows(self, rows: Sequence[Row], tier_rate: Decimal,
                        multiplier: Decimal) -> Decimal:
        """The rows' points at `tier_rate` (the tier's, or the one a purchase was first
        accrued at) and the campaign `multiplier`, by the product rules."""
        raw = sum((r.row.amount * r.rate for r in self.row_rates(rows, tier_rate)), ZERO)
        return round_points(raw * multiplier / self.settings.point_value,
                            self.settings.points_precision, self.settings.rounding)

    def stored_row_rate(self, product_id: str, rule: str | None,
                        tier_rate: Decimal) -> Decimal:
        """The rate of a row the ledger kept (its product and the name of the rule that
        rated it, as Earning.breakdown stores them) under this program's rules: the rule of
        that name when there is one, else the rules matched afresh by the product alone (a
        stored row keeps no section or property, so only product rules can match it)."""
        named = next((r for r in self.settings.product_rules if r.name == rule), None) \
            if rule is not None else None
        if named is None:
            bare = Row(product_id=product_id, price=Decimal(0), quantity=Decimal(1))
            return product_rules.row_rate(self.settings.product_rules, bare, tier_rate).rate
        if named.exclude:
            return Decimal(0)
        if named.rate is not None:
            return named.rate
        assert named.multiplier is not None
        return tier_rate * named.multiplier

    def points_for_stored_rows(self, rows: Sequence[dict[str, Any]], tier_rate: Decimal,
                               multiplier: Decimal) -> Decimal:
        """points_for_rows over rows as an entry's details keep them ("product_id",
        "amount", "rule"): the same sum, rounded once."""
        raw = sum((Decimal(row["amount"]) * self.stored_row_rate(
            str(row["product_id"]), row.get("rule"), tier_rate) for row in rows), ZERO)
        return round_points(raw * multiplier / self.settings.point_value,
                            self.settings.points_precision, self.settings.rounding)

    def redeem_base(self, purchase_amount: Decimal,
                    rows: Sequence[Row] | None = None) -> Decimal:
        """What the redemption cap is a share of: the purchase, or with
        redeem_eligible_only and rows, the rows that earn points."""
        if rows and self.settings.redeem_eligible_only:
            return min(purchase_amount,
                       product_rules.eligible_amount(self.settings.product_rules, rows))
        return purchase_amount

    # -- redeeming -------------------------------------------------------------------------
    def redeem_cap(self, purchase_amount: Decimal,
                   rows: Sequence[Row] | None = None) -> Decimal:
        """Most points one purchase may be paid with, by the program's share alone."""
        cap_money = self.redeem_base(purchase_amount, rows) * self.settings.redeem_share
        return (cap_money / self.settings.point_value).quantize(CENT, rounding=ROUND_DOWN)

    def max_redeemable(self, purchase_amount: Decimal, available: Decimal,
                       rows: Sequence[Row] | None = None) -> Decimal:
        if available <= 0 or available < self.settings.min_balance_to_redeem:
            return ZERO
        return min(available, self.redeem_cap(purchase_amount, rows))

    def points_to_money(self, points: Decimal) -> Decimal:
        return (points * self.settings.point_value).quantize(CENT, rounding=ROUND_DOWN)

    def preview(self, purchase_amount: Decimal, *, tier: Tier, available: Decimal,
                at: datetime, category: str | None = None,
                rows: Sequence[Row] | None = None, account_id: int | None = None) -> Preview:
        earning = self.earn(purchase_amount, tier=tier, at=at, category=category, rows=rows,
                            account_id=account_id)
        max_points = self.max_redeemable(purchase_amount, available, rows)
        return Preview(
            purchase_amount=purchase_amount,
            tier=tier.name,
            discount_percent=tier.discount_percent,
            points_earned=earning.points,
            max_redeem_points=max_points,
            max_redeem_amount=self.points_to_money(max_points),
            campaigns=earning.campaigns,
            eligible_amount=product_rules.eligible_amount(self.settings.product_rules, rows)
            if rows else None,
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
