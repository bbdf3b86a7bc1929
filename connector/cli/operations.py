"""Backing up the database (and its key), and CSV exports for accounting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from connector import periods
from connector.cli.base import Runtime, cli, fail, pass_runtime
from connector.i18n import Translator, translator
from connector.operations import export as exports
from connector.operations.backup import backup as make_backup


def _size(size: int, t: Translator) -> str:
    exact = t.ngettext("%(num)d byte", "%(num)d bytes", size)
    if size < 1024:
        return exact
    scaled = float(size)  # for display only
    for unit in ("KB", "MB", "GB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GB":
            break
    units = {"KB": t._("KB"), "MB": t._("MB"), "GB": t._("GB")}
    return f"{t.number(round(scaled, 1), 1)} {units[unit]} ({exact})"


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@pass_runtime
def backup(runtime: Runtime, path: Path) -> None:
    """A consistent copy of the database at PATH (safe while `serve` runs), and its key file
    as PATH.key. SQLite: online backup; PostgreSQL: pg_dump -Fc (restore with pg_restore)."""
    result = make_backup(runtime.settings, path)
    t = translator(runtime.settings.program.language)
    click.echo(t._("backup: wrote %(path)s (%(size)s)", path=str(result.path),
                   size=_size(result.size, t)))
    if result.key_path is not None:
        click.echo(t._("backup: wrote the secret key to %(path)s (mode 0600): keep it with the "
                       "copy, the CRM tokens in it need it", path=str(result.key_path)))
    if result.key_note:
        click.echo(t._("backup: %(note)s", note=result.key_note.render(t)))


def _local_midnight(day: datetime | None, zone: ZoneInfo) -> datetime | None:
    """The start of a calendar day in the program's zone, as UTC (as `stats` reads its days)."""
    if day is None:
        return None
    return periods.local_midnight(day.date(), zone).astimezone(UTC)


@cli.command("export")
@click.argument("what", type=click.Choice(["accounts", "entries"]))
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="first day, program time zone (accounts: with --at)")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]),
              help="entries: first day not included, program time zone")
@click.option("--at", "at", type=click.DateTime(["%Y-%m-%d"]),
              help="accounts: balances at the end of this day, program time zone")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="write to FILE (default: standard output)")
@pass_runtime
def export(runtime: Runtime, what: str, since: datetime | None, until: datetime | None,
           at: datetime | None, output: Path | None) -> None:
    """CSV for accounting: every account (now, or at the end of a day --at), or the entries
    that happened in a period. Days are read in the program's time zone."""
    program = runtime.settings.program
    t = translator(program.language)
    if what == "accounts" and until:
        raise click.UsageError(t._("accounts: --at DAY ends the period, --until applies to "
                                   "entries"))
    if what == "accounts" and since and not at:
        raise click.UsageError(t._("accounts: --since needs --at"))
    if what == "entries" and at:
        raise click.UsageError(t._("--at applies to accounts only"))
    if since and until and since >= until:
        raise click.UsageError(t._("--since must be before --until"))
    if since and at and since > at:
        raise click.UsageError(t._("--since must not be after --at"))
    db = runtime.services().db
    zone = program.zone
    rows: Iterator[tuple[str | int | None, ...]]
    if what == "accounts" and at is not None:
        # The end of day AT is the start of the next one.
        end = periods.local_midnight(at.date() + timedelta(days=1), zone).astimezone(UTC)
        columns = exports.ACCOUNT_AT_COLUMNS
        rows = exports.account_rows_at(db, end, _local_midnight(since, zone))
    elif what == "accounts":
        columns, rows = exports.ACCOUNT_COLUMNS, exports.account_rows(db)
    else:
        columns = exports.ENTRY_COLUMNS
        rows = exports.entry_rows(db, _local_midnight(since, zone), _local_midnight(until, zone))
    if output is None:
        exports.write_csv(_Echo(), columns, rows)
        return
    # Written whole or not at all: a half file could pass for a complete period.
    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as file:
            count = exports.write_csv(file, columns, rows)
        os.replace(temporary, output)
    except OSError as exc:
        fail(t._("cannot write %(path)s: %(reason)s", path=str(output),
                 reason=exc.strerror or str(exc)))
    finally:
        temporary.unlink(missing_ok=True)
    click.echo(t.ngettext("export: wrote %(num)d account to %(path)s",
                          "export: wrote %(num)d accounts to %(path)s", count, path=str(output))
               if what == "accounts" else
               t.ngettext("export: wrote %(num)d entry to %(path)s",
                          "export: wrote %(num)d entries to %(path)s", count, path=str(output)),
               err=True)


class _Echo:
    """Standard output as click sees it (so CliRunner captures it too)."""

    def write(self, text: str) -> None:
        click.echo(text, nl=False)
