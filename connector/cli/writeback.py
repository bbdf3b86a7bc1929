"""Contacts the CRM refused for good (deleted, or never there): which, why, and writing to
one again after it was restored in the CRM."""

from __future__ import annotations

import click

from connector import mirror
from connector.cli.base import (
    Runtime,
    account_arguments,
    echo_json,
    fail,
    json_option,
    pass_runtime,
)
from connector.cli.ledger import account
from connector.cli.output import local
from connector.i18n import translator
from connector.ledger.views import AccountRef


def refusal_json(refusal: mirror.Refusal) -> dict[str, object]:
    return {"account_id": refusal.account_id, "crm": refusal.crm, "portal": refusal.portal,
            "contact_id": refusal.contact_id, "refused_at": refusal.refused_at.isoformat(),
            "error": refusal.error}


@account.command("refused")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@json_option
@pass_runtime
def account_refused(runtime: Runtime, limit: int, as_json: bool) -> None:
    """Contacts whose write-back the CRM refused for good, the most recent first."""
    found = mirror.refusals(runtime.services().db, limit=limit)
    if as_json:
        echo_json([refusal_json(refusal) for refusal in found])
        return
    if not found:
        click.echo(translator(runtime.settings.program.language)._(
            "no contact refused by a CRM"))
        return
    for refusal in found:
        click.echo(f"{local(refusal.refused_at, runtime.settings)}  {refusal.crm}:"
                   f"{refusal.portal}:contact:{refusal.contact_id}  {refusal.error}")


@account.command("retry-writeback")
@account_arguments
@pass_runtime
def account_retry_writeback(runtime: Runtime, ref: AccountRef) -> None:
    """Write to a refused contact again (after restoring it in the CRM); it is written on
    the next pass."""
    services = runtime.services()
    t = translator(runtime.settings.program.language)
    account_id = services.ledger.account_id(ref)
    if account_id is None:
        fail(t._("no loyalty account for %(ref)s", ref=ref))
    if not mirror.clear_refusal(services.db, account_id):
        fail(t._("write-back to %(ref)s was not refused", ref=ref))
    # The refused change was never marked written, so the next pass sends it.
    click.echo(t._("%(ref)s: write-back pending again", ref=ref))
