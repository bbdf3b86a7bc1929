"""Customers' card pages: print a link, replace it, issue the missing ones."""

from __future__ import annotations

import click

from connector.card.links import Link
from connector.cli.base import (
    CRMS,
    Runtime,
    account_arguments,
    cli,
    echo_json,
    json_option,
    pass_runtime,
)
from connector.i18n import translator
from connector.ledger.views import AccountRef


@cli.group()
def card() -> None:
    """The customer's own card page (GET /card/<token>)."""


@card.command("link")
@account_arguments
@json_option
@pass_runtime
def card_link(runtime: Runtime, ref: AccountRef, as_json: bool) -> None:
    """Print the account's card page URL (issued now if it has none)."""
    link = runtime.services().cards.link(ref)
    _show(link, as_json)


@card.command("rotate")
@account_arguments
@json_option
@pass_runtime
def card_rotate(runtime: Runtime, ref: AccountRef, as_json: bool) -> None:
    """Replace the account's card page link: the old URL answers 404 from now on, and
    write-back puts the new one into the contact's card_url field."""
    link = runtime.services().cards.rotate(ref)
    _show(link, as_json)


def _show(link: Link, as_json: bool) -> None:
    if as_json:
        echo_json(link.as_json())
    else:
        click.echo(link.url)


@card.command("publish")
@click.argument("crm", type=click.Choice(CRMS))
@click.argument("portal")
@pass_runtime
def card_publish(runtime: Runtime, crm: str, portal: str) -> None:
    """Issue the links the portal's accounts lack, or lost to a new card.secret, for
    write-back to put into the CRM (after turning card pages on or changing the secret)."""
    issued = runtime.services().cards.publish(crm, portal)
    t = translator(runtime.settings.program.language)
    click.echo(t.ngettext("issued %(num)d card page link; write-back sends it with its next "
                          "pass", "issued %(num)d card page links; write-back sends them with "
                          "its next pass", issued))
