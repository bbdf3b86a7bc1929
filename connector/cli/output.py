"""How the CLI prints results and accounts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import click

from connector.config import Settings
from connector.i18n import Translator, translator
from connector.ledger.views import AccountRef, AccountView, Result


def signed(points: Decimal) -> str:
    return f"+{points}" if points > 0 else str(points)


def local(moment: datetime | None, settings: Settings, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return moment.astimezone(settings.program.zone).strftime(fmt) if moment else "-"


def kind_name(kind: str, t: Translator) -> str:
    """An entry's kind as the CLI names it: the code itself in English ("accrual")."""
    names = {"accrual": t.pgettext("entry kind", "accrual"),
             "redemption": t.pgettext("entry kind", "redemption"),
             "reversal": t.pgettext("entry kind", "reversal"),
             "expiry": t.pgettext("entry kind", "expiry"),
             "adjustment": t.pgettext("entry kind", "adjustment"),
             "bonus": t.pgettext("entry kind", "bonus"),
             "reward": t.pgettext("entry kind", "reward"),
             "opening": t.pgettext("entry kind", "opening")}
    return names.get(kind, kind)


def figure(value: Decimal | None, t: Translator) -> str:
    """Points or money to the hundredth, as the ledger keeps them: 1 210,00 (ru), 1,210.00."""
    return t.number(value, 2)


def signed_points(points: Decimal, t: Translator) -> str:
    """"+30.00 points", "-1,50 балла": the word agrees with the number (ngettext)."""
    return ("+" if points > 0 else "") + f"{figure(points, t)} {t.points_word(points)}"


def report(result: Result, ref: AccountRef, t: Translator) -> None:
    if result.entry_id is None:
        skipped = result.details.get("skipped")
        click.echo(t._("nothing recorded for %(ref)s: %(reason)s", ref=ref,
                       reason=skipped if skipped is not None else t._("no change")))
        return
    line = t._("%(kind)s %(points)s for %(ref)s, balance %(balance)s",
               kind=kind_name(result.kind, t), points=signed_points(result.points, t), ref=ref,
               balance=figure(result.balance, t))
    if result.shortfall:
        line += " " + t._("(%(shortfall)s could not be taken back)",
                          shortfall=figure(result.shortfall, t))
    if "tier_up" in result.details:
        line += ", " + t._("tier up to %(tier)s", tier=result.details["tier_up"])
    if result.duplicate:
        line += " " + t._("(already recorded)")
    click.echo(line)


def show_account(view: AccountView, settings: Settings) -> None:
    t = translator(settings.program.language)
    expiry = "-"
    if view.next_expiry_at is not None:
        expiry = t._("%(points)s on %(date)s", points=figure(view.next_expiry_points, t),
                     date=local(view.next_expiry_at, settings, "%Y-%m-%d"))
    next_tier = "- " + t._("(top tier)")
    if view.next_tier is not None:
        next_tier = t._("%(tier)s, %(spend)s more spend", tier=view.next_tier,
                        spend=figure(view.spend_to_next_tier, t))
    rows = [
        (t.pgettext("account", "account"), t._("%(ref)s (id %(id)s)", ref=view.ref, id=view.id)),
        (t.pgettext("account", "card"), view.card_number or "-"),
        (t.pgettext("account", "balance"), figure(view.balance, t)),
        (t.pgettext("account", "available"), figure(view.available, t)),
        (t.pgettext("account", "pending"), figure(view.pending, t)),
        (t.pgettext("account", "tier"), view.tier),
        (t.pgettext("account", "discount"), t.percent(view.discount_percent / 100, None)),
        (t.pgettext("account", "spend"), t.ngettext(
            "%(spend)s in the last %(num)d day", "%(spend)s in the last %(num)d days",
            settings.program.tier_period_days, spend=figure(view.qualifying_spend, t))),
        (t.pgettext("account", "next tier"), next_tier),
        (t.pgettext("account", "next expiry"), expiry),
        (t.pgettext("account", "purchases"), t._("%(count)s, total %(total)s",
                                                 count=view.purchase_count,
                                                 total=figure(view.purchase_total, t))),
        (t.pgettext("account", "segment"), t._("%(segment)s (RFM %(rfm)s)", segment=view.segment,
                                               rfm=view.rfm) if view.rfm
         else view.segment or "-"),
        (t.pgettext("account", "referral"), view.referral_code or "-"),
        (t.pgettext("account", "referred by"), view.referred_by or "-"),
        (t.pgettext("account", "referrals"), t._(
            "%(invited)s invited, %(converted)s converted, %(points)s points paid",
            invited=view.referrals.invited, converted=view.referrals.converted,
            points=figure(view.referrals.points_paid, t))),
    ]
    width = max(12, *(len(label) for label, _ in rows))
    for label, value in rows:
        click.echo(f"{label:<{width}} {value}")
