"""Texts the connector writes into a CRM for its managers (a deal's timeline comment, an
amoCRM lead note or task), in `program.language`: shared by both CRMs, so an outcome reads
the same in Bitrix24 and amoCRM and is translated once. Points and balances are written to
the hundredth, as the ledger keeps them, the points word agreeing with the number."""

from __future__ import annotations

from decimal import Decimal

from connector.i18n import N_, Message, Translator

CLAIM_STATUSES: dict[str, Message] = {
    "issued": N_("issued"), "handed": N_("handed over"), "cancelled": N_("cancelled")}


def claim_status(status: str, t: Translator) -> str:
    known = CLAIM_STATUSES.get(status)
    return known.render(t) if known is not None else status


def nps(score: int | str, bonus: Decimal | None, t: Translator) -> str:
    """An NPS answer recorded from a CRM; `bonus`: the points it earned, if any."""
    if bonus is None:
        return t._("Loyalty: NPS answer %(score)s recorded", score=score)
    return t._("Loyalty: NPS answer %(score)s recorded, bonus %(points)s", score=score,
               points=t.ledger_points(bonus, signed=True))


def redeemed(points: Decimal, balance: Decimal, t: Translator) -> str:
    return t._("Loyalty: redeemed %(points)s, balance %(balance)s",
               points=t.ledger_points(points), balance=t.figure(balance))


def reward_claimed(reward: str, code: str, points: Decimal, balance: Decimal,
                   t: Translator) -> str:
    return t._("Loyalty: reward %(reward)s claimed, code %(code)s: %(points)s, balance "
               "%(balance)s. Hand it over, then: %(command)s", reward=reward, code=code,
               points=t.ledger_points(points), balance=t.figure(balance),
               command=f"loyalty-connector rewards handed {code}")


def promo_pending(code: str, campaign: str | None, t: Translator, *, lead: bool = False
                  ) -> str:
    """A code checked and kept with a purchase not won yet (an amoCRM lead's or a deal's)."""
    if lead:
        return t._("Loyalty: promo code %(code)s (%(campaign)s) is used when the lead is won",
                   code=code, campaign=campaign or "")
    return t._("Loyalty: promo code %(code)s (%(campaign)s) is used when the deal is won",
               code=code, campaign=campaign or "")


def reason(text: object, t: Translator) -> str:
    """A refusal: the ledger's or the check's own words (English, not marked) after the
    translated prefix."""
    return t._("Loyalty: %(reason)s", reason=text)
