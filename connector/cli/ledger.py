"""Reading and changing the ledger by hand, verifying it, and program analytics."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import click

from connector import mirror, periods, welcome
from connector.cli.base import (
    ACTOR,
    AMOUNT,
    Runtime,
    account_arguments,
    cli,
    echo_json,
    json_option,
    key_option,
    ledger_key,
    pass_runtime,
)
from connector.cli.output import figure, kind_name, local, report, show_account, signed_points
from connector.config import Settings
from connector.economics import money as money_view
from connector.i18n import translator
from connector.ledger.fingerprint import request_fingerprint
from connector.ledger.views import AccountRef
from connector.products.rows import Row, as_json, digest, rows_total
from connector.referrals import stats as referral_stats
from connector.stats import format_stats, program_stats


# -- accounts ------------------------------------------------------------------------------
@cli.group()
def account() -> None:
    """Read one customer's account."""


@account.command("show")
@account_arguments
@json_option
@pass_runtime
def account_show(runtime: Runtime, ref: AccountRef, as_json: bool) -> None:
    """Balance, tier, next tier and next expiry of one account."""
    services = runtime.services()
    view = services.ledger.account(ref)
    refused = mirror.refusals(services.db, account_id=view.id)
    with services.db.transaction(write=False) as session:
        codes = referral_stats.skipped(session, view.id)
    if as_json:
        extra = {"writeback_refused": {"at": refused[0].refused_at.isoformat(),
                                       "error": refused[0].error}} if refused else {}
        echo_json({**view.as_json(), **extra,
                   "referral_skipped": [code.as_json() for code in codes]})
        return
    show_account(view, runtime.settings)
    t = translator(runtime.settings.program.language)
    for code in codes:
        # The outcome and its detail are the referral module's codes and words, as stored.
        label = t.pgettext("account", "code given")
        click.echo(f"{label:<12} {code.code} ({code.via}, "
                   f"{local(code.at, runtime.settings)}): {code.outcome}, {code.detail}")
    if refused:
        label = t.pgettext("account", "write-back")
        command = (f"loyalty-connector account retry-writeback {ref.crm} {ref.portal} "
                   f"{ref.contact_id}")
        click.echo(f"{label:<12} " + t._(
            "refused for good by the CRM since %(since)s: %(error)s (after restoring the "
            "contact: %(command)s)", since=local(refused[0].refused_at, runtime.settings),
            error=refused[0].error, command=command))


@account.command("history")
@account_arguments
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
@pass_runtime
def account_history(runtime: Runtime, ref: AccountRef, limit: int, as_json: bool) -> None:
    """The account's latest entries, newest first."""
    entries = runtime.services().ledger.history(ref, limit=limit)
    if as_json:
        echo_json([entry.as_json() for entry in entries])
        return
    t = translator(runtime.settings.program.language)
    width = max([10, *(len(kind_name(e.kind, t)) for e in entries)])
    for e in entries:
        points = ("+" if e.points > 0 else "") + figure(e.points, t)
        click.echo(f"{e.id:>8}  {local(e.occurred_at, runtime.settings)}  "
                   f"{kind_name(e.kind, t):<{width}} {points:>12}  "
                   f"{figure(e.balance_after, t):>12}  {e.key}"
                   + (f"  {e.comment}" if e.comment else ""))


# -- changing balances ---------------------------------------------------------------------
# Points may be negative (adjust): let "-50" through as an argument, not an unknown option.
NUMBERS = {"ignore_unknown_options": True}


def fingerprint(operation: str, ref: AccountRef, **fields: object) -> str:
    """The request as the API would see it (same field names), so one key means one request
    whichever way it came in."""
    return request_fingerprint(operation, {"crm": ref.crm, "portal": ref.portal,
                                           "contact_id": ref.contact_id, **fields})


@cli.command(context_settings=NUMBERS)
@account_arguments
@click.argument("amount", type=AMOUNT)
@key_option
@click.option("--category", help="deal category / pipeline, for campaigns")
@click.option("--comment")
@click.option("--promo-code", help="a promo code the purchase came with")
@pass_runtime
def accrue(runtime: Runtime, ref: AccountRef, amount: Decimal, key: str,
           category: str | None, comment: str | None, promo_code: str | None) -> None:
    """Record a completed purchase of AMOUNT and earn points; `reverse` finds it as KEY."""
    existed = welcome.known(runtime.services(), ref, "cli")
    extra = {"promo_code": promo_code} if promo_code is not None else {}
    result = runtime.services().ledger.accrue(
        ref, amount, key=ledger_key(key), source=key, category=category, comment=comment,
        actor=ACTOR, fingerprint=fingerprint("accrue", ref, amount=amount, category=category,
                                             comment=comment, **extra),
        promo_code=promo_code)
    t = translator(runtime.settings.program.language)
    report(result, ref, t)
    _welcome_if_new(runtime, ref, existed)
    if "promo" in result.details:
        used = result.details["promo"]
        # The refusal's outcome code and detail are the campaign module's, as recorded.
        click.echo(t._("promo code %(code)s: %(points)s (%(campaign)s)", code=used["code"],
                       points=signed_points(Decimal(str(used["points"])), t),
                       campaign=used["campaign"]) if used["outcome"] == "applied" else
                   t._("promo code %(code)s: refused, %(outcome)s: %(detail)s",
                       code=used["code"], outcome=used["outcome"], detail=used["detail"]))


@cli.command(context_settings=NUMBERS)
@account_arguments
@click.argument("points", type=AMOUNT)
@key_option
@click.option("--purchase-amount", type=AMOUNT, help="caps POINTS at the program's share")
@click.option("--partial", is_flag=True, help="redeem as much of POINTS as allowed")
@pass_runtime
def redeem(runtime: Runtime, ref: AccountRef, points: Decimal, key: str,
           purchase_amount: Decimal | None, partial: bool) -> None:
    """Pay with POINTS."""
    result = runtime.services().ledger.redeem(
        ref, points, key=ledger_key(key), source=key, purchase_amount=purchase_amount,
        partial=partial, actor=ACTOR,
        fingerprint=fingerprint("redeem", ref, points=points, purchase_amount=purchase_amount,
                                partial=partial))
    report(result, ref, translator(runtime.settings.program.language))


@cli.command(context_settings=NUMBERS)
@account_arguments
@click.argument("points", type=AMOUNT)
@click.option("--reason", required=True, help="why; kept with the entry")
@key_option
@pass_runtime
def adjust(runtime: Runtime, ref: AccountRef, points: Decimal, reason: str, key: str) -> None:
    """Correct the balance by POINTS, e.g. 100 or -50 (before or after the options)."""
    existed = welcome.known(runtime.services(), ref, "cli")
    result = runtime.services().ledger.adjust(
        ref, points, key=ledger_key(key), reason=reason, actor=ACTOR,
        fingerprint=fingerprint("adjust", ref, points=points, reason=reason))
    report(result, ref, translator(runtime.settings.program.language))
    _welcome_if_new(runtime, ref, existed)


@cli.command()
@account_arguments
@click.argument("name")
@key_option
@click.option("--points", type=AMOUNT, help="any amount under NAME instead of the configured")
@pass_runtime
def bonus(runtime: Runtime, ref: AccountRef, name: str, key: str,
          points: Decimal | None) -> None:
    """Grant the bonus NAME (welcome, birthday, ... or one of [program.bonuses])."""
    existed = welcome.known(runtime.services(), ref, "cli")
    result = runtime.services().ledger.grant_bonus(
        ref, name, key=ledger_key(key), points=points, actor=ACTOR,
        fingerprint=fingerprint("bonus", ref, name=name, points=points))
    report(result, ref, translator(runtime.settings.program.language))
    _welcome_if_new(runtime, ref, existed)


def _welcome_if_new(runtime: Runtime, ref: AccountRef, existed: bool) -> None:
    """The welcome bonus for an account this command made, when program.welcome_on
    includes "cli"."""
    granted = welcome.welcome_if_new(runtime.services(), ref, existed=existed, channel="cli",
                                     actor=ACTOR)
    if granted is not None and granted.entry_id is not None:
        report(granted, ref, translator(runtime.settings.program.language))


@cli.command()
@account_arguments
@click.argument("source")
@key_option
@pass_runtime
def reverse(runtime: Runtime, ref: AccountRef, source: str, key: str) -> None:
    """Undo everything SOURCE (a deal, an order) earned or spent on the account."""
    result = runtime.services().ledger.reverse(
        ref, source, key=ledger_key(key), actor=ACTOR,
        fingerprint=fingerprint("reverse", ref, source=source))
    report(result, ref, translator(runtime.settings.program.language))


@cli.command("return")
@account_arguments
@click.argument("source")
@click.option("--amount", type=AMOUNT, help="the amount returned (default: the rows' total)")
@click.option("--row", "rows", multiple=True, type=(str, AMOUNT, AMOUNT),
              metavar="PRODUCT_ID PRICE QUANTITY", help="a returned product; repeatable")
@key_option
@click.option("--comment")
@pass_runtime
def return_(runtime: Runtime, ref: AccountRef, source: str, amount: Decimal | None,
            rows: tuple[tuple[str, Decimal, Decimal], ...], key: str,
            comment: str | None) -> None:
    """Give back part or all of the purchase SOURCE: its points in proportion, and the
    points that paid for it."""
    t = translator(runtime.settings.program.language)
    returned = [Row(product, price, quantity) for product, price, quantity in rows]
    total = rows_total(returned) if returned else None
    if amount is None and total is None:
        raise click.UsageError(t._("give --amount or at least one --row"))
    if amount is not None and total is not None and amount != total:
        raise click.BadParameter(t._("%(amount)s differs from the rows' total %(total)s",
                                     amount=figure(amount, t), total=figure(total, t)),
                                 param_hint="--amount")
    given = amount if amount is not None else total
    assert given is not None
    noted = digest(returned) if returned else None  # as the API notes them
    result = runtime.services().ledger.return_purchase(
        ref, source, given, key=ledger_key(key), rows=returned, comment=comment, actor=ACTOR,
        source_data={"request": {"source": source, "amount": str(given),
                                 "rows": [as_json(row) for row in returned],
                                 "comment": comment}},
        fingerprint=fingerprint("return", ref, source=source, amount=amount, rows=noted,
                                comment=comment))
    report(result, ref, t)


# -- the books -----------------------------------------------------------------------------
@cli.command()
@pass_runtime
def verify(runtime: Runtime) -> None:
    """Recompute every balance from entries and lots; exit 1 on any mismatch."""
    checked, mismatches = runtime.services().ledger.verify()
    t = translator(runtime.settings.program.language)
    click.echo(t._("checked %(checked)s accounts, %(mismatches)s mismatches", checked=checked,
                   mismatches=len(mismatches)))
    for mismatch in mismatches:
        click.echo(str(mismatch))
    if mismatches:
        click.get_current_context().exit(1)


def _period(settings: Settings, days: int | None, since: datetime | None,
            until: datetime | None) -> tuple[datetime, datetime]:
    """The last --days days (default 30) as the dashboard reads them, or the local midnights
    of --since and --until (connector.periods)."""
    zone = settings.program.zone
    if since is None and until is None:
        return periods.last_days(datetime.now(UTC), days or periods.DEFAULT_DAYS, zone)
    if since is None or until is None or days is not None:
        t = translator(settings.program.language)
        raise click.UsageError(t._("give --days, or both --since and --until"))
    return periods.between(since.date(), until.date(), zone)


@cli.command()
@click.option("--days", type=click.IntRange(min=1),
              help="the last N days, today included, from local midnight (default 30)")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="first day, program time zone")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="first day not included")
@json_option
@pass_runtime
def stats(runtime: Runtime, days: int | None, since: datetime | None, until: datetime | None,
          as_json: bool) -> None:
    """Program analytics for a period: points, purchases, customers, retention, and the
    money view (liability, breakage, cost, revenue, churn, LTV)."""
    start, end = _period(runtime.settings, days, since, until)
    program = runtime.settings.program
    t = translator(program.language)
    if end <= start:
        raise click.UsageError(t._("--until must be after --since"))
    services = runtime.services()
    with services.db.transaction(write=False) as session:
        figures = program_stats(session, services.program, since=start, until=end)
        # -- money view (issue #14): its own block, under "money" in the JSON --------------
        money = money_view.money_view(session, program, since=start, until=end,
                                      at=services.ledger.clock())
    if as_json:
        echo_json({**figures.as_json(), "money": money.as_json()})
    else:
        for line in format_stats(figures, program.zone, t):
            click.echo(line)
        click.echo("")
        for line in money_view.format_money(money, t):
            click.echo(line)
