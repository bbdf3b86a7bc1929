"""`import`: bring existing customers and balances in, from a file or a CRM contact field.
Dry run unless --apply; one line per row says what would happen, or why it is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from connector.cli.base import (
    CRMS,
    Runtime,
    cli,
    configured_portal,
    echo_json,
    fail,
    json_option,
    pass_runtime,
)
from connector.errors import CRMError
from connector.i18n import Translator, render, translator
from connector.imports.fields import amocrm_rows, bitrix24_rows
from connector.imports.progress import Progress, TerminalProgress
from connector.imports.rows import ImportFileError, read_rows
from connector.imports.runner import ImportResult, connector_of, run_import

apply_option = click.option("--apply", "apply_", is_flag=True,
                            help="write the accepted rows (default: a dry run)")
writeback_option = click.option("--no-write-back", "no_write_back", is_flag=True,
                                help="leave sending the contacts to the worker's write-back")


@cli.group(name="import")
def import_group() -> None:
    """Bring existing customers and balances in (dry run unless --apply)."""


@import_group.command("customers")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--crm", type=click.Choice(CRMS), help="default: the one CRM enabled")
@click.option("--portal", help="default: the CRM's configured portal")
@apply_option
@writeback_option
@json_option
@pass_runtime
def import_customers(runtime: Runtime, file: Path, crm: str | None, portal: str | None,
                     apply_: bool, no_write_back: bool, as_json: bool) -> None:
    """Customers from FILE (.csv or .xlsx): contact_id or phone / email, balance, and
    optionally expires, tier, birthday, card_number, referrer."""
    crm, portal = _target(runtime, crm, portal)
    try:
        _, rows = read_rows(file)
    except ImportFileError as exc:
        raise click.UsageError(str(exc)) from None
    _run(runtime, crm, portal, rows, source=file.name, apply=apply_,
         write_back=not no_write_back, as_json=as_json)


def _field_command(crm: str) -> None:
    @import_group.command(crm, help=f"Balances kept in a {crm} contact field, as opening "
                                    "balances of those contacts.")
    @click.option("--balance-field", "field", required=True,
                  help="the contact field holding each customer's balance (its code; for "
                       "amoCRM also its id)")
    @apply_option
    @writeback_option
    @json_option
    @pass_runtime
    def command(runtime: Runtime, field: str, apply_: bool, no_write_back: bool,
                as_json: bool) -> None:
        services = runtime.services()
        connector = connector_of(services, crm)
        if connector is None:
            t = translator(runtime.settings.program.language)
            fail(t._("%(crm)s is not enabled: set %(crm)s.enabled = true and its credentials "
                     "(see config.example.toml)", crm=crm))
        target, portal = _target(runtime, crm, None)
        reader = bitrix24_rows if crm == "bitrix24" else amocrm_rows
        try:
            rows = list(reader(connector.client, field))  # type: ignore[arg-type]
        except ImportFileError as exc:
            raise click.UsageError(str(exc)) from None
        except CRMError as exc:
            fail(f"{crm}: {exc.detail}")
        _run(runtime, target, portal, iter(rows), source=f"{crm} field {field}",
             apply=apply_, write_back=not no_write_back, as_json=as_json)


for _crm in CRMS:
    _field_command(_crm)


def _target(runtime: Runtime, crm: str | None, portal: str | None) -> tuple[str, str]:
    settings = runtime.settings
    t = translator(settings.program.language)
    if crm is None:
        enabled = [name for name in CRMS if getattr(settings, name).enabled]
        if len(enabled) != 1:
            raise click.UsageError(t._("name the CRM with --crm bitrix24|amocrm (both are "
                                       "enabled)") if enabled else
                                   t._("name the CRM with --crm bitrix24|amocrm"))
        crm = enabled[0]
    if portal is None:
        portal = getattr(settings, crm).portal_key
        if not portal:
            raise click.UsageError(t._("no %(crm)s portal is configured: name it with --portal",
                                       crm=crm))
        return crm, portal
    return crm, configured_portal(settings, crm, portal)


def _run(runtime: Runtime, crm: str, portal: str, rows: Any, *, source: str, apply: bool,
         write_back: bool, as_json: bool) -> None:
    services = runtime.services()
    progress = TerminalProgress(translator(runtime.settings.program.language)) \
        if TerminalProgress.wanted() and not as_json else Progress()
    try:
        result = run_import(services, crm, portal, rows, source=source, apply=apply,
                            write_back=write_back, progress=progress)
    except ImportFileError as exc:
        progress.finish()
        raise click.UsageError(str(exc)) from None
    except CRMError as exc:
        progress.finish()
        fail(f"{crm}: {exc.detail}")
    if as_json:
        echo_json({"rows": [d.as_dict() for d in result.decisions],
                   "summary": result.summary()})
    else:
        _print(result, crm, portal, translator(runtime.settings.program.language))
    failed = result.applied is not None and result.applied.mismatches
    if result.refused or failed:
        click.get_current_context().exit(1)


def _print(result: ImportResult, crm: str, portal: str, t: Translator) -> None:
    """The report in program.language: a line per row, then the summary. Counts are written
    "label: N" in Russian and Ukrainian, which needs no plural forms."""
    if result.decisions:  # one write: 100,000 rows are 100,000 lines
        line, contact = t.pgettext("import report", "line"), t.pgettext("import report",
                                                                          "contact")
        actions = {"open": t.pgettext("import action", "open"),
                   "update": t.pgettext("import action", "update"),
                   "unchanged": t.pgettext("import action", "unchanged"),
                   "refused": t.pgettext("import action", "refused")}
        width = max(len(label) for label in actions.values())
        click.echo("\n".join(f"{line} {d.line:<6} {contact} {d.contact_id or '-':<10} "
                             f"{actions[d.action]:<{width}} {render(d.detail, t)}"
                             for d in result.decisions))
    counts = result.counts()
    tally = t._("%(new)s new, %(updated)s updated, %(unchanged)s unchanged, %(refused)s "
                "refused", new=counts["open"], updated=counts["update"],
                unchanged=counts["unchanged"], refused=counts["refused"])
    if result.applied is None:
        click.echo(t._("dry run for %(crm)s %(portal)s: %(tally)s; nothing written (--apply "
                       "writes the accepted rows)", crm=crm, portal=portal, tally=tally))
        return
    applied = result.applied
    click.echo(t._("applied to %(crm)s %(portal)s: %(tally)s; %(entries)s opening entries, "
                   "%(points)s points, %(links)s referrals linked", crm=crm, portal=portal,
                   tally=tally, entries=applied.entries, points=applied.as_dict()["points"],
                   links=applied.links))
    click.echo(t._("verify: %(checked)s accounts, %(mismatches)s mismatches",
                   checked=applied.checked, mismatches=len(applied.mismatches)))
    for mismatch in applied.mismatches:
        click.echo(f"  {mismatch}")
    if result.written_back is not None:
        click.echo(t._("written back: %(count)s contacts", count=result.written_back))
    elif result.write_back_failed is not None:
        click.echo(t._("written back: not now (%(reason)s); left to the worker's write-back",
                       reason=result.write_back_failed))
    else:
        click.echo(t._("written back: left to the worker's write-back"))
