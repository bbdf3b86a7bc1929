"""Shared pieces of the CLI: the command group, settings/services on demand, arguments,
one-line errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property, wraps
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from connector.bitrix24.portal import domain_of
from connector.config import Settings, load_settings, resolve_config_path
from connector.db import is_unavailable, unavailable
from connector.errors import ConfigError, LedgerError, StorageError
from connector.i18n import translator
from connector.ledger.views import AccountRef
from connector.money import parse_amount
from connector.services import Services

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

    def services(self, *, migrated: bool = True, create: bool = False) -> Services:
        """`create`: this command may make the SQLite file (serve, db upgrade, doctor, which
        looks before it connects); any other stops rather than leave an empty one behind."""
        if self._services is None:
            self._services = Services.build(self.settings)
            click.get_current_context().call_on_close(self._services.close)
        missing = self._services.db.missing_file()
        if missing is not None and not create:
            config = resolve_config_path(self.config_path)
            t = translator(self.settings.program.language)
            raise StorageError(t._(
                "no database at %(path)s (config: %(config)s): run %(command)s (or serve) to "
                "make it, or name the config that holds database.url with --config",
                path=str(missing), config=str(config) if config else t._(
                    "none found, the defaults"), command="`loyalty-connector db upgrade`"))
        if migrated:
            self._services.db.check()
        return self._services


pass_runtime = click.make_pass_decorator(Runtime)


def config_first(args: list[str]) -> list[str]:
    """`--config PATH` may stand anywhere before a `--`: it is the group's option, so it is
    moved in front of the subcommand (`loyalty-connector doctor --config prod.toml`)."""
    moved: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        if arg == "--config" and index + 1 < len(args):
            moved += args[index:index + 2]
            index += 2
            continue
        (moved if arg.startswith("--config=") else rest).append(arg)
        index += 1
    return moved + rest


class _Group(click.Group):
    """Turns the errors a user can act on into one line each instead of a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, config_first(args) if ctx.parent is None else args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(f"config: {problem}", err=True)
            ctx.exit(2)
        except (LedgerError, StorageError) as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            # The database went away during the command: one line with the driver's reason,
            # not a traceback of the driver's internals.
            if not is_unavailable(exc) or not isinstance(ctx.obj, Runtime):
                raise
            fail(str(unavailable(ctx.obj.settings.database.url, exc)))


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


def configured_portal(settings: Settings, crm: str, given: str) -> str:
    """PORTAL as accounts name it: `-`, or any spelling of the configured portal (with or
    without scheme, port or case: `https://ACME.bitrix24.ru/`, `127.0.0.1` for
    `127.0.0.1:18920`), is the configured one; anything else is taken as given."""
    key = settings.bitrix24.portal_key if crm == "bitrix24" else settings.amocrm.portal_key
    if given == "-":
        if not key:
            raise click.BadParameter(f"no {crm} portal is configured: name it", param_hint="PORTAL")
        return key
    if crm == "amocrm" and key and given == settings.amocrm.account_subdomain:
        return key  # amoCRM's own name for the account: its subdomain
    domain = domain_of(given)
    if key and domain is not None and (domain == key or domain == key.rsplit(":", 1)[0]
                                       or domain.rsplit(":", 1)[0] == key):
        return key
    return given


def account_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds CRM PORTAL CONTACT_ID in front of the command's own arguments, passed as `ref`
    (PORTAL read by configured_portal)."""

    @wraps(func)
    def wrapper(*args: Any, crm: str, portal: str, contact_id: str, **kwargs: Any) -> Any:
        runtime = click.get_current_context().find_object(Runtime)
        if runtime is not None:
            portal = configured_portal(runtime.settings, crm, portal)
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML settings (default: $LOYALTY_CONFIG, else ./config.toml)")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Customer loyalty points for Bitrix24 and amoCRM."""
    ctx.obj = Runtime(config_path)


def main() -> None:
    cli(prog_name="loyalty-connector")

