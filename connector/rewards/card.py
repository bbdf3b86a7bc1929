"""The rewards part of the customer's card page: what may be claimed now (or why not), the
rewards claimed and still to collect, and the tier's perks; in the program's language."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from connector.card import texts
from connector.config import ProgramSettings
from connector.ledger.views import AccountView
from connector.rewards.catalogue import RewardView
from connector.rewards.claims import ClaimView


@dataclass(frozen=True)
class Offer:
    id: str
    name: str
    button: str  # "Get it for 500 points"
    why_not: str | None  # set when the customer cannot claim it now


@dataclass(frozen=True)
class Collect:
    name: str
    code: str


@dataclass(frozen=True)
class RewardsSection:
    offers: list[Offer] = field(default_factory=list)
    to_collect: list[Collect] = field(default_factory=list)
    perks: list[str] = field(default_factory=list)
    notice: str | None = None  # the outcome of a claim just made (or refused)
    notice_ok: bool = True


def refusal_text(reason: str, t: Mapping[str, str], *, tier: str | None = None) -> str:
    text = t.get(f"reward_{reason}", t["reward_disabled"])
    return text.format(tier=tier or "")


def section(view: AccountView, catalogue: list[RewardView], claims: list[ClaimView],
            program: ProgramSettings, now: datetime) -> RewardsSection:
    t = texts.TEXTS[program.language]
    ranks = {tier.name: rank for rank, tier in enumerate(program.tiers)}
    offers = []
    for reward in catalogue:
        if not reward.active or not reward.open_at(now):
            continue  # nothing to show a customer about a reward not offered now
        why = None
        if reward.tier and ranks.get(view.tier, 0) < ranks.get(reward.tier, 0):
            why = refusal_text("tier", t, tier=reward.tier)
        elif reward.stock_left == 0:
            why = refusal_text("stock", t)
        elif view.available < reward.cost:
            why = refusal_text("points", t)
        offers.append(Offer(reward.id, reward.name,
                            t["claim"].format(points=texts.points(reward.cost,
                                                                   program.language)), why))
    perks = next((list(tier.perks) for tier in program.tiers if tier.name == view.tier), [])
    return RewardsSection(
        offers=offers,
        to_collect=[Collect(c.reward_name, c.code) for c in claims if c.status == "issued"],
        perks=perks)
