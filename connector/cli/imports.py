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
            fail(f"{crm} is not enabled: set {crm}.enabled = true and its credentials "
                 "(see config.example.toml)")
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
    if crm is None:
        enabled = [name for name in CRMS if getattr(settings, name).enabled]
        if len(enabled) != 1:
            raise click.UsageError("name the CRM with --crm bitrix24|amocrm"
                                   + (" (both are enabled)" if enabled else ""))
        crm = enabled[0]
    if portal is None:
        portal = getattr(settings, crm).portal_key
        if not portal:
            raise click.UsageError(f"no {crm} portal is configured: name it with --portal")
        return crm, portal
    return crm, configured_portal(settings, crm, portal)


def _run(runtime: Runtime, crm: str, portal: str, rows: Any, *, source: str, apply: bool,
         write_back: bool, as_json: bool) -> None:
    services = runtime.services()
    progress = TerminalProgress() if TerminalProgress.wanted() and not as_json else Progress()
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
        _print(result, crm, portal)
    failed = result.applied is not None and result.applied.mismatches
    if result.refused or failed:
        click.get_current_context().exit(1)


def _print(result: ImportResult, crm: str, portal: str) -> None:
    if result.decisions:  # one write: 100,000 rows are 100,000 lines
        click.echo("\n".join(f"line {d.line:<6} contact {d.contact_id or '-':<10} "
                             f"{d.action:<9} {d.detail}" for d in result.decisions))
    counts = result.counts()
    tally = ", ".join(f"{counts[action]} {label}" for action, label in (
        ("open", "new"), ("update", "updated"), ("unchanged", "unchanged"),
        ("refused", "refused")))
    if result.applied is None:
        click.echo(f"dry run for {crm} {portal}: {tally}; nothing written (--apply writes "
                   "the accepted rows)")
        return
    applied = result.applied
    click.echo(f"applied to {crm} {portal}: {tally}; {applied.entries} opening entries, "
               f"{applied.as_dict()['points']} points, {applied.links} referrals linked")
    click.echo(f"verify: {applied.checked} accounts, {len(applied.mismatches)} mismatches")
    for mismatch in applied.mismatches:
        click.echo(f"  {mismatch}")
    if result.written_back is not None:
        click.echo(f"written back: {result.written_back} contacts")
    elif result.write_back_failed is not None:
        click.echo(f"written back: not now ({result.write_back_failed}); left to the "
                   "worker's write-back")
    else:
        click.echo("written back: left to the worker's write-back")
