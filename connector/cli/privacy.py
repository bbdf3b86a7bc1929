"""`account erase`: a customer's personal data removed, their amounts kept anonymously."""

from __future__ import annotations

import getpass

import click

from connector.cli.base import Runtime, account_arguments, echo_json, json_option, pass_runtime
from connector.cli.ledger import account
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
    if not reason.strip():
        raise click.BadParameter("must say why", param_hint="--reason")
    services = runtime.services()
    report = erase(services.db, ref, reason=reason.strip(), by=(by or _who()).strip(),
                   clock=services.ledger.clock)
    if as_json:
        echo_json(report.as_json())
        return
    if report.nothing:
        click.echo(f"nothing to erase for {ref}: no account and no received events name it "
                   "(already erased, or never seen)")
        return
    removed = ", ".join(f"{name.replace('_', ' ')} {count}"
                        for name, count in report.removed.items())
    if report.anonymous_id is None:
        click.echo(f"no account for {ref}; scrubbed: {removed} (erasure {report.erasure_id})")
        return
    click.echo(f"erased {ref}: its account is now {ref.crm} {ref.portal} "
               f"{report.anonymous_id}; cleared: {removed} (erasure {report.erasure_id})")
