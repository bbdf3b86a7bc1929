"""`simulate`: the book replayed under a proposed program, beside the current one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from connector.cli.base import Runtime, cli, echo_json, pass_runtime
from connector.db import utcnow
from connector.economics import table
from connector.economics.simulate import load_program, simulate


def _utc_day(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


@cli.command("simulate")
@click.option("--program", "program_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with the proposed [program] table")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="first day of the period, UTC midnight (default: the first entry)")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]),
              help="first day not included, UTC midnight (default: now)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@pass_runtime
def simulate_command(runtime: Runtime, program_path: Path, since: datetime | None,
                     until: datetime | None, as_json: bool) -> None:
    """What the purchases the ledger knows would have given under the proposed program,
    beside the current one. Reads only; writes nothing."""
    if since and until and since >= until:
        raise click.UsageError("--since must be before --until")
    proposed = load_program(program_path)
    services = runtime.services()
    result = simulate(services.db, runtime.settings.program, proposed,
                      since=_utc_day(since), until=_utc_day(until), now=utcnow())
    if as_json:
        echo_json(result.as_json())
    else:
        click.echo(table.text(result))
