"""`account erase`: a customer's personal data removed, their amounts kept anonymously."""

from __future__ import annotations

import getpass

import click

from connector.cli.base import Runtime, account_arguments, echo_json, json_option, pass_runtime
from connector.cli.ledger import account
from connector.i18n import translator
from connector.ledger.views import AccountRef
from connector.privacy.erase import erase


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


@account.command("erase")
@account_arguments
@click.option("--reason", required=True,
              help="why (kept in the erasure log: a request number, not the person's name)")
@click.option("--by", "by", help="who asks or does it (default: cli:<system user>)")
@json_option
@pass_runtime
def account_erase(runtime: Runtime, ref: AccountRef, reason: str, by: str | None,
                  as_json: bool) -> None:
    """Erase the contact's personal data; its points and figures stay under an anonymous id.

    Safe to repeat: a second run finds nothing left to erase."""
    t = translator(runtime.settings.program.language)
    if not reason.strip():
        raise click.BadParameter(t._("must say why"), param_hint="--reason")
    services = runtime.services()
    report = erase(services.db, ref, reason=reason.strip(), by=(by or _who()).strip(),
                   clock=services.ledger.clock)
    if as_json:
        echo_json(report.as_json())
        return
    if report.nothing:
        click.echo(t._("nothing to erase for %(ref)s: no account and no received events name "
                       "it (already erased, or never seen)", ref=ref))
        return
    # The table names stay as they are: what an operator greps the erasure log for.
    removed = ", ".join(f"{name.replace('_', ' ')} {count}"
                        for name, count in report.removed.items())
    if report.anonymous_id is None:
        click.echo(t._("no account for %(ref)s; scrubbed: %(removed)s (erasure %(erasure)s)",
                       ref=ref, removed=removed, erasure=report.erasure_id))
        return
    click.echo(t._("erased %(ref)s: its account is now %(anonymous)s; cleared: %(removed)s "
                   "(erasure %(erasure)s)", ref=ref,
                   anonymous=f"{ref.crm} {ref.portal} {report.anonymous_id}", removed=removed,
                   erasure=report.erasure_id))
