"""The rewards part of the customer's card page: what may be claimed now (or why not), the
rewards claimed and still to collect, and the tier's perks; in the program's language."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from connector.config import ProgramSettings
from connector.i18n import N_, Message, Translator
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


REFUSALS = {"points": N_("Not enough points."), "stock": N_("Out of stock."),
            "limit": N_("You already have this reward."),
            "window": N_("This reward cannot be claimed now."),
            "disabled": N_("This reward is no longer offered.")}


def refusal(reason: str, *, tier: str | None = None) -> Message:
    """Why a reward cannot be claimed: rendered in the program's language on the page, in
    English (`str()`) in a JSON refusal."""
    if reason == "tier":
        return N_("For %(tier)s and above.", tier=tier or "")
    return REFUSALS.get(reason, REFUSALS["disabled"])


def outcome(claim: ClaimView) -> Message:
    """What the page says of a claim its form made: the code to show, or, when the same form
    comes again after staff acted on the claim, what became of it."""
    if claim.status == "cancelled":
        return N_("%(name)s: this claim was cancelled and its points returned.",
                  name=claim.reward_name)
    if claim.status == "handed":
        return N_("%(name)s: handed over already.", name=claim.reward_name)
    return N_("Done! %(name)s: show code %(code)s to staff.", name=claim.reward_name,
              code=claim.code)


def section(view: AccountView, catalogue: list[RewardView], claims: list[ClaimView],
            program: ProgramSettings, now: datetime, t: Translator) -> RewardsSection:
    ranks = {tier.name: rank for rank, tier in enumerate(program.tiers)}
    offers = []
    for reward in catalogue:
        if not reward.active or not reward.open_at(now):
            continue  # nothing to show a customer about a reward not offered now
        why = None
        if reward.tier and ranks.get(view.tier, 0) < ranks.get(reward.tier, 0):
            why = refusal("tier", tier=reward.tier).render(t)
        elif reward.stock_left == 0:
            why = refusal("stock").render(t)
        elif view.available < reward.cost:
            why = refusal("points").render(t)
        offers.append(Offer(reward.id, reward.name,
                            t._("Get it for %(points)s", points=t.points(reward.cost)), why))
    perks = next((list(tier.perks) for tier in program.tiers if tier.name == view.tier), [])
    return RewardsSection(
        offers=offers,
        to_collect=[Collect(c.reward_name, c.code) for c in claims if c.status == "issued"],
        perks=perks)
