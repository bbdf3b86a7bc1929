"""What the card page shows, as a pure function of the account, its latest entries and the
program: every figure already written in the program's language. No personal data beyond
the first name, and the connector keeps none yet (`first_name` stays None)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from urllib.parse import quote

from connector.card import codes
from connector.config import ProgramSettings
from connector.i18n import N_, Translator
from connector.ledger.views import AccountView, EntryView
from connector.rewards.card import RewardsSection


@dataclass(frozen=True)
class Referral:
    """The customer's referral code and, with `program.referral_link`, the link to share."""

    code: str
    share_url: str | None


def referral(code: str | None, program: ProgramSettings) -> Referral | None:
    if not code:
        return None
    link = program.referral_link
    return Referral(code, link.replace("{code}", quote(code, safe="")) if link else None)


@dataclass(frozen=True)
class Line:
    """One ledger entry as the customer reads it."""

    day: str
    label: str
    points: str
    credit: bool


@dataclass(frozen=True)
class CardPage:
    language: str
    first_name: str | None
    card_number: str | None
    card_number_shown: str | None
    qr_svg: str | None
    barcode_svg: str | None
    balance: str
    balance_word: str
    available: str
    pending: str | None
    tier: str
    discount: str | None
    next_tier: str
    progress_percent: int  # of the way from this tier's threshold to the next one's
    expiring: str
    has_expiring: bool
    entries: list[Line]
    referral: Referral | None = None
    # Rewards to claim, claimed ones to collect, the tier's perks (connector.rewards.card).
    rewards: RewardsSection | None = None


def build(view: AccountView, entries: list[EntryView], program: ProgramSettings,
          now: datetime, t: Translator, *, first_name: str | None = None) -> CardPage:
    number = view.card_number
    return CardPage(
        language=t.language, first_name=first_name,
        card_number=number,
        card_number_shown=_grouped(number) if number else None,
        qr_svg=codes.qr_svg(number, t._("QR code of card %(number)s", number=number))
        if number else None,
        barcode_svg=codes.barcode_svg(number, t._("Barcode of card %(number)s",
                                                  number=number)) if number else None,
        balance=t.number(view.balance),
        balance_word=t.points_word(view.balance),
        available=t._("Available to spend: %(points)s", points=t.points(view.available)),
        pending=t._("Available soon: %(points)s", points=t.points(view.pending))
        if view.pending > 0 else None,
        tier=view.tier,
        discount=t._("%(percent)s off", percent=t.percent(view.discount_percent / 100,
                                                          places=None))
        if view.discount_percent > 0 else None,
        next_tier=_next_tier(view, program, t),
        progress_percent=_progress(view, program),
        expiring=_expiring(view, program, t),
        has_expiring=view.next_expiry_at is not None and view.next_expiry_points > 0,
        entries=[_line(entry, program, t) for entry in entries],
        referral=referral(view.referral_code, program),
    )


def _grouped(card_number: str) -> str:
    """0123 4567 89: read aloud or typed in groups of four."""
    return " ".join(card_number[i:i + 4] for i in range(0, len(card_number), 4))


def _next_tier(view: AccountView, program: ProgramSettings, t: Translator) -> str:
    if view.next_tier is None or view.spend_to_next_tier is None:
        return t._("You are at the top tier")
    return t._("Spend %(amount)s more to reach %(tier)s", tier=view.next_tier,
               amount=t.money(view.spend_to_next_tier, program.currency))


def _progress(view: AccountView, program: ProgramSettings) -> int:
    if view.next_tier is None:
        return 100
    floors = {tier.name: tier.min_spend for tier in program.tiers}
    start, goal = floors.get(view.tier, Decimal(0)), floors[view.next_tier]
    if goal <= start:
        return 0
    share = (view.qualifying_spend - start) / (goal - start)
    return max(0, min(100, int(share * 100)))


def _expiring(view: AccountView, program: ProgramSettings, t: Translator) -> str:
    if view.next_expiry_at is None or view.next_expiry_points <= 0:
        return t._("No points are about to expire")
    local = view.next_expiry_at.astimezone(program.zone).date()
    return t._("%(points)s expire on %(date)s", points=t.points(view.next_expiry_points),
               date=t.date(local))


def entry_label(kind: str, t: Translator) -> str:
    """An entry kind as a customer reads it; a kind added later shows as stored until it
    gets its words here."""
    labels = {"accrual": N_("Purchase"), "redemption": N_("Paid with points"),
              "reversal": N_("Return"), "expiry": N_("Points expired"),
              "adjustment": N_("Adjustment"), "bonus": N_("Bonus"),
              "reward": N_("Reward"), "opening": N_("Opening balance")}
    label = labels.get(kind)
    return label.render(t) if label else kind


def _line(entry: EntryView, program: ProgramSettings, t: Translator) -> Line:
    sign = "+" if entry.points > 0 else ""
    label = entry_label(entry.kind, t)
    if entry.kind == "accrual" and entry.purchase_amount:
        label = t._("Purchase of %(amount)s",
                    amount=t.money(entry.purchase_amount, program.currency))
    return Line(day=t.date(entry.occurred_at.astimezone(program.zone).date()),
                label=label, points=sign + t.number(entry.points), credit=entry.points > 0)
