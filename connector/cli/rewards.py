"""The rewards catalogue and its claims: list, claim for a customer, hand over, cancel."""

from __future__ import annotations

import uuid

import click

from connector import crm_texts
from connector.cli.base import (
    ACTOR,
    Runtime,
    account_arguments,
    cli,
    echo_json,
    json_option,
    ledger_key,
    pass_runtime,
)
from connector.cli.output import local
from connector.i18n import translator
from connector.ledger.fingerprint import request_fingerprint
from connector.ledger.views import AccountRef
from connector.rewards.claims import ClaimView


@cli.group()
def rewards() -> None:
    """Rewards customers claim for points ([[program.rewards]] and the API's)."""


@rewards.command("list")
@click.option("--all", "everything", is_flag=True, help="disabled rewards too")
@json_option
@pass_runtime
def rewards_list(runtime: Runtime, everything: bool, as_json: bool) -> None:
    """The catalogue: id, cost, stock left, limits."""
    listed = runtime.services().rewards.list(include_inactive=everything)
    if as_json:
        echo_json([reward.as_json() for reward in listed])
        return
    t = translator(runtime.settings.program.language)
    if not listed:
        click.echo(t._("no rewards: add %(table)s to the configuration",
                       table="[[program.rewards]]"))
    for r in listed:
        terms = [t._("stock %(left)s/%(stock)s", left=r.stock_left, stock=r.stock)
                 if r.stock is not None else t._("no stock limit")]
        if r.per_customer:
            terms.append(t._("%(count)s per customer", count=r.per_customer))
        if r.tier:
            terms.append(t._("%(tier)s and above", tier=r.tier))
        if r.starts_at or r.ends_at:
            start = local(r.starts_at, runtime.settings) if r.starts_at else "…"
            end = local(r.ends_at, runtime.settings) if r.ends_at else "…"
            terms.append(t._("%(start)s to %(end)s", start=start, end=end))
        if not r.active:
            terms.append(t._("disabled"))
        click.echo(f"{r.id:<20} {t.ledger_points(r.cost):>16}  {r.name}  ({', '.join(terms)})")


def _show(claim: ClaimView, runtime: Runtime) -> None:
    t = translator(runtime.settings.program.language)
    click.echo(f"{claim.code}  {crm_texts.claim_status(claim.status, t):<11} "
               f"{claim.reward:<20} {t.ledger_points(claim.points):>16}  {claim.ref}  "
               f"{local(claim.created_at, runtime.settings)}  "
               + t._("via %(channel)s", channel=claim.via))


@rewards.command("claim")
@account_arguments
@click.argument("reward")
@click.option("--key", help="idempotency key: repeating it claims nothing more "
                            "(default: a new one, so each run is a new claim)")
@json_option
@pass_runtime
def rewards_claim(runtime: Runtime, ref: AccountRef, reward: str, key: str | None,
                  as_json: bool) -> None:
    """Claim REWARD for the customer: points paid, a claim code printed, staff told."""
    key = key or f"cli-claim:{uuid.uuid4()}"
    fingerprint = request_fingerprint("reward", {"crm": ref.crm, "portal": ref.portal,
                                                 "contact_id": ref.contact_id,
                                                 "reward": reward})
    claimed = runtime.services().claims.claim(ref, reward, key=ledger_key(key), via="cli",
                                              actor=ACTOR, fingerprint=fingerprint)
    if as_json:
        echo_json(claimed.as_json())
        return
    t = translator(runtime.settings.program.language)
    text = t._("claimed %(reward)s for %(ref)s (already claimed under this key): code "
               "%(code)s, %(points)s, balance %(balance)s") if claimed.result.duplicate else \
        t._("claimed %(reward)s for %(ref)s: code %(code)s, %(points)s, balance %(balance)s")
    click.echo(text % {"reward": claimed.claim.reward_name, "ref": ref,
                       "code": claimed.claim.code,
                       "points": t.ledger_points(-claimed.result.points),
                       "balance": t.figure(claimed.result.balance)})


@rewards.command("claims")
@click.option("--open", "open_only", is_flag=True, help="only those still to hand over")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_runtime
def rewards_claims(runtime: Runtime, open_only: bool, limit: int, as_json: bool) -> None:
    """Claims, newest first."""
    listed = runtime.services().claims.list(open_only=open_only, limit=limit)
    if as_json:
        echo_json([claim.as_json() for claim in listed])
        return
    for claim in listed:
        _show(claim, runtime)


@rewards.command("cancel")
@click.argument("claim")
@pass_runtime
def rewards_cancel(runtime: Runtime, claim: str) -> None:
    """Cancel CLAIM (its code): the points back with their expiry, the unit to the stock."""
    _show(runtime.services().claims.cancel(claim, actor=ACTOR), runtime)


@rewards.command("handed")
@click.argument("claim")
@pass_runtime
def rewards_handed(runtime: Runtime, claim: str) -> None:
    """Mark CLAIM (its code) handed over to the customer."""
    _show(runtime.services().claims.handed(claim, actor=ACTOR), runtime)
