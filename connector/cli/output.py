"""How the CLI prints results and accounts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import click

from connector.config import Settings
from connector.ledger.views import AccountRef, AccountView, Result


def signed(points: Decimal) -> str:
    return f"+{points}" if points > 0 else str(points)


def local(moment: datetime | None, settings: Settings, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return moment.astimezone(settings.program.zone).strftime(fmt) if moment else "-"


def report(result: Result, ref: AccountRef) -> None:
    if result.entry_id is None:
        click.echo(f"nothing recorded for {ref}: {result.details.get('skipped', 'no change')}")
        return
    line = f"{result.kind} {signed(result.points)} points for {ref}, balance {result.balance}"
    if result.shortfall:
        line += f" ({result.shortfall} could not be taken back)"
    if "tier_up" in result.details:
        line += f", tier up to {result.details['tier_up']}"
    if result.duplicate:
        line += " (already recorded)"
    click.echo(line)


def show_account(view: AccountView, settings: Settings) -> None:
    expiry = "-"
    if view.next_expiry_at is not None:
        expiry = f"{view.next_expiry_points} on {local(view.next_expiry_at, settings, '%Y-%m-%d')}"
    next_tier = "- (top tier)"
    if view.next_tier is not None:
        next_tier = f"{view.next_tier}, {view.spend_to_next_tier} more spend"
    rows = [
        ("account", f"{view.ref} (id {view.id})"),
        ("card", view.card_number or "-"),
        ("balance", view.balance),
        ("available", view.available),
        ("pending", view.pending),
        ("tier", view.tier),
        ("discount", f"{view.discount_percent}%"),
        ("spend", f"{view.qualifying_spend} in the last "
                  f"{settings.program.tier_period_days} days"),
        ("next tier", next_tier),
        ("next expiry", expiry),
        ("purchases", f"{view.purchase_count}, total {view.purchase_total}"),
        ("segment", f"{view.segment} (RFM {view.rfm})" if view.rfm else view.segment or "-"),
        ("referral", view.referral_code or "-"),
        ("referred by", view.referred_by or "-"),
        ("referrals", f"{view.referrals.invited} invited, {view.referrals.converted} "
                      f"converted, {view.referrals.points_paid} points paid"),
    ]
    for label, value in rows:
        click.echo(f"{label:<12} {value}")
