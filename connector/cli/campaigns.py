"""`campaigns list` and `campaigns report NAME`: control groups and what they show."""

from __future__ import annotations

import click

from connector.campaigns.report import report, summaries
from connector.campaigns.text import format_list, format_report
from connector.cli.base import Runtime, cli, echo_json, json_option, pass_runtime
from connector.i18n import translator


@cli.group()
def campaigns() -> None:
    """Campaigns, trigger mailings and A/B tests with a control group."""


@campaigns.command("list")
@json_option
@pass_runtime
def campaigns_list(runtime: Runtime, as_json: bool) -> None:
    """Every test with a control group and how many customers each group has recorded."""
    services = runtime.services()
    with services.db.transaction(write=False) as session:
        rows = summaries(session, services.program, services.ledger.clock())
    if as_json:
        echo_json(rows)
        return
    for line in format_list(rows, translator(runtime.settings.program.language)):
        click.echo(line)


@campaigns.command("report")
@click.argument("name")
@json_option
@pass_runtime
def campaigns_report(runtime: Runtime, name: str, as_json: bool) -> None:
    """Treated against control: purchase rate, average check, revenue per customer with
    95% intervals, the cost, incremental revenue and ROI. Reads only."""
    services = runtime.services()
    with services.db.transaction(write=False) as session:
        result = report(session, services.program, name, services.ledger.clock())
    if as_json:
        echo_json(result.as_json())
        return
    program = runtime.settings.program
    for line in format_report(result, program.zone, translator(program.language)):
        click.echo(line)
