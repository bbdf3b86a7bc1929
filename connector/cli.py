"""The `loyalty-connector` command: run the service, migrate, read and change the ledger.

Exit codes: 0 done; 1 refused (ledger error, database not migrated, verify found mismatches);
2 bad usage or bad configuration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property, wraps
from typing import Any, NoReturn

import click

from connector.config import Settings, load_settings
from connector.errors import ConfigError, LedgerError, StorageError
from connector.ledger.views import AccountRef, AccountView, Result
from connector.money import parse_amount
from connector.services import Services
from connector.stats import format_stats, program_stats

ACTOR = "cli"
CRMS = ("bitrix24", "amocrm")
# The ledger derives keys of its own (expiry:lot:N, referral:N, CRM events); a prefix keeps a
# key typed here from ever taking one of those.
KEY_PREFIX = "cli:"
KEY_MAX = 255


@dataclass
class Runtime:
    """Settings and services, built only when a command needs them (so --help never fails)."""

    config_path: str | None
    _services: Services | None = None

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def services(self, *, migrated: bool = True) -> Services:
        if self._services is None:
            self._services = Services.build(self.settings)
            click.get_current_context().call_on_close(self._services.close)
        if migrated:
            self._services.db.check()
        return self._services


pass_runtime = click.make_pass_decorator(Runtime)


class _Group(click.Group):
    """Turns the errors a user can act on into one line each instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(f"config: {problem}", err=True)
            ctx.exit(2)
        except (LedgerError, StorageError) as exc:
            fail(str(exc))


class Amount(click.ParamType):
    """An exact amount: at most two decimal places, never through float."""

    name = "amount"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            return parse_amount(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


AMOUNT = Amount()


def account_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds CRM PORTAL CONTACT_ID in front of the command's own arguments, passed as `ref`."""

    @wraps(func)
    def wrapper(*args: Any, crm: str, portal: str, contact_id: str, **kwargs: Any) -> Any:
        return func(*args, ref=AccountRef(crm, portal, contact_id), **kwargs)

    # Click lists parameters in reverse order of decoration.
    for argument in (click.argument("contact_id"), click.argument("portal"),
                     click.argument("crm", type=click.Choice(CRMS))):
        wrapper = argument(wrapper)
    return wrapper


def ledger_key(key: str) -> str:
    stored = KEY_PREFIX + key
    if len(stored) <= KEY_MAX:
        return stored
    return f"{KEY_PREFIX}sha256:{hashlib.sha256(key.encode()).hexdigest()}"


key_option = click.option("--key", required=True,
                          help="idempotency key: repeating it changes nothing")
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    click.get_current_context().exit(1)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


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
    ]
    for label, value in rows:
        click.echo(f"{label:<12} {value}")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML settings (default: $LOYALTY_CONFIG, else ./config.toml)")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Customer loyalty points for Bitrix24 and amoCRM."""
    ctx.obj = Runtime(config_path)


def main() -> None:
    cli(prog_name="loyalty-connector")


# -- the service ---------------------------------------------------------------------------
def _stop(_signum: int, _frame: object) -> NoReturn:
    # waitress's loop ends on SystemExit; SIGINT too, even where a shell left it ignored.
    raise SystemExit(0)


@cli.command()
@pass_runtime
def serve(runtime: Runtime) -> None:
    """Migrate the database, start the scheduler and serve HTTP until SIGINT/SIGTERM."""
    # The one place the core reaches up to the web tier: imported here so that every other
    # command runs without loading Flask and the HTTP server.
    from waitress import create_server

    from connector.scheduler import build_scheduler
    from webhooks import create_app

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = runtime.services(migrated=False)
    services.db.upgrade()
    # Every /healthz opens a migration context, which would log two lines per probe.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    config = runtime.settings.server
    try:
        server = create_server(create_app(services=services), host=config.host,
                               port=config.port, threads=config.threads)
    except OSError as exc:
        fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
    scheduler = build_scheduler(services)
    if runtime.settings.scheduler.enabled:
        scheduler.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    click.echo(f"listening on http://{server.effective_host}:{server.effective_port}")
    try:
        server.run()
    finally:
        if scheduler.running:
            scheduler.shutdown()
        server.close()
        click.echo("stopped")


# -- the database --------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@pass_runtime
def db_upgrade(runtime: Runtime) -> None:
    """Apply every pending migration."""
    database = runtime.services(migrated=False).db
    database.upgrade()
    click.echo(f"database at revision {database.current_revision()} (head)")


@db.command("current")
@pass_runtime
def db_current(runtime: Runtime) -> None:
    """Show the schema revision; exit 1 when it is behind."""
    database = runtime.services(migrated=False).db
    current, head = database.current_revision(), database.head_revision()
    if current == head:
        click.echo(f"database at revision {current} (head)")
        return
    click.echo(f"database at revision {current or 'nothing'}, head is {head}")
    database.check()


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
    view = runtime.services().ledger.account(ref)
    if as_json:
        echo_json(view.as_json())
    else:
        show_account(view, runtime.settings)


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
    for e in entries:
        click.echo(f"{e.id:>8}  {local(e.occurred_at, runtime.settings)}  {e.kind:<10} "
                   f"{signed(e.points):>12}  {e.balance_after:>12}  {e.key}"
                   + (f"  {e.comment}" if e.comment else ""))


# -- changing balances ---------------------------------------------------------------------
# Points may be negative (adjust): let "-50" through as an argument, not an unknown option.
NUMBERS = {"ignore_unknown_options": True}


@cli.command(context_settings=NUMBERS)
@account_arguments
@click.argument("amount", type=AMOUNT)
@key_option
@click.option("--category", help="deal category / pipeline, for campaigns")
@click.option("--comment")
@pass_runtime
def accrue(runtime: Runtime, ref: AccountRef, amount: Decimal, key: str,
           category: str | None, comment: str | None) -> None:
    """Record a completed purchase of AMOUNT and earn points; `reverse` finds it as KEY."""
    result = runtime.services().ledger.accrue(ref, amount, key=ledger_key(key), source=key,
                                              category=category, comment=comment, actor=ACTOR)
    report(result, ref)


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
    result = runtime.services().ledger.redeem(ref, points, key=ledger_key(key), source=key,
                                              purchase_amount=purchase_amount,
                                              partial=partial, actor=ACTOR)
    report(result, ref)


@cli.command(context_settings=NUMBERS)
@account_arguments
@click.argument("points", type=AMOUNT)
@click.option("--reason", required=True, help="why; kept with the entry")
@key_option
@pass_runtime
def adjust(runtime: Runtime, ref: AccountRef, points: Decimal, reason: str, key: str) -> None:
    """Correct the balance by POINTS, e.g. 100 or -50 (or `-- -50`)."""
    result = runtime.services().ledger.adjust(ref, points, key=ledger_key(key), reason=reason,
                                              actor=ACTOR)
    report(result, ref)


@cli.command()
@account_arguments
@click.argument("name")
@key_option
@click.option("--points", type=AMOUNT, help="any amount under NAME instead of the configured")
@pass_runtime
def bonus(runtime: Runtime, ref: AccountRef, name: str, key: str,
          points: Decimal | None) -> None:
    """Grant the bonus NAME (welcome, birthday, ... or one of [program.bonuses])."""
    result = runtime.services().ledger.grant_bonus(ref, name, key=ledger_key(key),
                                                   points=points, actor=ACTOR)
    report(result, ref)


@cli.command()
@account_arguments
@click.argument("source")
@key_option
@pass_runtime
def reverse(runtime: Runtime, ref: AccountRef, source: str, key: str) -> None:
    """Undo everything SOURCE (a deal, an order) earned or spent on the account."""
    result = runtime.services().ledger.reverse(ref, source, key=ledger_key(key), actor=ACTOR)
    report(result, ref)


# -- the books -----------------------------------------------------------------------------
@cli.command()
@pass_runtime
def verify(runtime: Runtime) -> None:
    """Recompute every balance from entries and lots; exit 1 on any mismatch."""
    checked, mismatches = runtime.services().ledger.verify()
    click.echo(f"checked {checked} accounts, {len(mismatches)} mismatches")
    for mismatch in mismatches:
        click.echo(str(mismatch))
    if mismatches:
        click.get_current_context().exit(1)


def _period(settings: Settings, days: int | None, since: datetime | None,
            until: datetime | None) -> tuple[datetime, datetime]:
    """--days back from now, or local midnights of --since and --until in UTC."""
    if since is None and until is None:
        end = datetime.now(UTC)
        return end - timedelta(days=days or 30), end
    if since is None or until is None or days is not None:
        raise click.UsageError("give --days, or both --since and --until")
    zone = settings.program.zone
    return (since.replace(tzinfo=zone).astimezone(UTC),
            until.replace(tzinfo=zone).astimezone(UTC))


@cli.command()
@click.option("--days", type=click.IntRange(min=1), help="the last N days (default 30)")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="first day, program time zone")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="first day not included")
@json_option
@pass_runtime
def stats(runtime: Runtime, days: int | None, since: datetime | None, until: datetime | None,
          as_json: bool) -> None:
    """Program analytics for a period: points, purchases, customers, retention."""
    start, end = _period(runtime.settings, days, since, until)
    if end <= start:
        raise click.UsageError("--until must be after --since")
    services = runtime.services()
    with services.db.transaction(write=False) as session:
        figures = program_stats(session, services.program, since=start, until=end)
    if as_json:
        echo_json(figures.as_json())
    else:
        for line in format_stats(figures, runtime.settings.program.zone):
            click.echo(line)
