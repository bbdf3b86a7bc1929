"""Connecting the CRMs: install, uninstall, sync."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click

from connector.amocrm.authorization import authorize_hint, needs_authorization
from connector.amocrm.connector import AmoCRMConnector
from connector.bitrix24.connector import Bitrix24Connector
from connector.cli.base import Runtime, cli, echo_json, fail, json_option, pass_runtime
from connector.errors import CRMError
from connector.i18n import N_, Translator, translator

CONNECTED = click.Choice(["bitrix24", "amocrm"])


def connector_for(runtime: Runtime, crm: str) -> Bitrix24Connector | AmoCRMConnector:
    services = runtime.services()
    connector = services.bitrix24 if crm == "bitrix24" else services.amocrm
    if connector is None:
        fail(f"{crm} is not enabled: set {crm}.enabled = true and its credentials "
             "(see config.example.toml)")
    return connector


@cli.command()
@click.argument("crm", type=CONNECTED)
@pass_runtime
def install(runtime: Runtime, crm: str) -> None:
    """Create the CRM fields, event handlers, robots and triggers (safe to run again).
    amoCRM over OAuth without valid tokens: prints the authorization link instead."""
    connector = connector_for(runtime, crm)
    services = runtime.services()
    if crm == "amocrm" and needs_authorization(services):
        fail(f"amocrm: not authorized: {authorize_hint(services)}, then run install again")
    try:
        report = connector.installer.install()
    except CRMError as exc:
        if crm == "amocrm" and needs_authorization(services):  # revoked on the way
            fail(f"amocrm: {exc.detail}: {authorize_hint(services)}")
        fail(f"{crm}: {exc.detail}")
    for line in report.lines():
        click.echo(line)


@cli.command()
@click.argument("crm", type=CONNECTED)
@click.option("--yes", is_flag=True, help="do not ask: the contact fields and their values go")
@pass_runtime
def uninstall(runtime: Runtime, crm: str, yes: bool) -> None:
    """Remove what install made, including the contact fields and their values."""
    if not yes:
        click.confirm(f"remove the loyalty fields, handlers, robots and triggers from {crm}?",
                      abort=True)
    try:
        report = connector_for(runtime, crm).installer.uninstall()
    except CRMError as exc:
        fail(f"{crm}: {exc.detail}")
    for line in report.lines() or ["nothing to remove"]:
        click.echo(line)


@contextmanager
def progress(label: str, *, hidden: bool
             ) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """(set_total, update): a bar once the total is known (Bitrix24 counts the deals with
    the list's first page); amoCRM tells none without a paid filter, so then a running
    count."""
    seen = [0]
    with ExitStack() as stack:
        bar: list[Any] = []

        def set_total(total: int) -> None:
            bar.append(stack.enter_context(click.progressbar(
                length=total, label=label, file=sys.stderr, hidden=hidden)))

        def update(step: int) -> None:
            if bar:
                bar[0].update(step)
                return
            seen[0] += step
            if not hidden and seen[0] % 250 == 0:
                click.echo(f"\r{label}: {seen[0]}", nl=False, err=True)

        yield set_total, update
        if not bar and not hidden:
            click.echo(f"\r{label}: {seen[0]}", err=True)


@cli.command()
@click.argument("crm", type=CONNECTED)
@click.option("--full", is_flag=True, help="every deal, not only those changed since last sync")
@json_option
@pass_runtime
def sync(runtime: Runtime, crm: str, full: bool, as_json: bool) -> None:
    """Reconcile the ledger with the CRM's deals, then write back what changed."""
    connector = connector_for(runtime, crm)
    try:
        bitrix24 = isinstance(connector, Bitrix24Connector)
        t = translator(runtime.settings.program.language)
        label = t._("deals") if bitrix24 else t.pgettext("amoCRM", "leads")
        with progress(label, hidden=as_json) as (total, update):
            if isinstance(connector, Bitrix24Connector):
                report = connector.reconcile(full=full, progress=update, on_total=total)
            else:
                report = connector.reconcile(full=full, progress=update)
        flushed = connector.flush()
    except CRMError as exc:
        fail(f"{crm}: {exc.detail}")
    # amoCRM calls its deals leads: the summary speaks each CRM's word.
    entity = "deals" if isinstance(connector, Bitrix24Connector) else "leads"
    summary: dict[str, Any] = {entity: report.deals, "changed": report.changed,
                               "without_contact": report.without_contact,
                               "api_calls": connector.client.calls, "cursor": report.cursor,
                               **flushed}
    if as_json:
        echo_json(summary)
    else:
        # "label: N" reads in Russian and Ukrainian with no plural forms to agree.
        click.echo(", ".join(f"{sync_label(key, t)}: {value}"
                             for key, value in summary.items()))


SYNC_LABELS = {"deals": N_("deals"), "changed": N_("changed"),
               "without_contact": N_("without contact"), "api_calls": N_("api calls"),
               "cursor": N_("cursor"), "contacts_written": N_("contacts written"),
               "contacts_refused": N_("contacts refused"), "triggers_sent": N_("triggers sent"),
               "triggers_skipped": N_("triggers skipped"),
               "triggers_failed": N_("triggers failed")}


def sync_label(key: str, t: Translator) -> str:
    if key == "leads":  # amoCRM's word for its deals
        return t.pgettext("amoCRM", "leads")
    known = SYNC_LABELS.get(key)
    return known.render(t) if known is not None else key.replace("_", " ")
