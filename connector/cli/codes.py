"""Promo codes: draw a batch for a campaign, export it, who used a code, a summary."""

from __future__ import annotations

import io
import os
from pathlib import Path

import click

from connector.cli.base import Runtime, cli, echo_json, fail, json_option, pass_runtime
from connector.codes import catalog, draw
from connector.codes.redeem import campaign
from connector.i18n import translator


@cli.group()
def codes() -> None:
    """Promo codes of the [[program.promo]] campaigns."""


def _campaign(runtime: Runtime, name: str) -> None:
    if campaign(runtime.services().ledger.program, name) is None:
        t = translator(runtime.settings.program.language)
        known = ", ".join(p.name for p in runtime.settings.program.promo) or t._(
            "none configured")
        raise click.BadParameter(t._("no promo campaign %(name)s in %(table)s (known: "
                                     "%(known)s)", name=repr(name), table="[[program.promo]]",
                                     known=known), param_hint="CAMPAIGN")


def _write(output: Path | None, text: str, runtime: Runtime) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    # Written whole or not at all: half a batch could pass for all of it.
    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, output)
    except OSError as exc:
        fail(translator(runtime.settings.program.language)._(
            "cannot write %(path)s: %(reason)s", path=str(output),
            reason=exc.strerror or exc))
    finally:
        temporary.unlink(missing_ok=True)


_OUTPUT = click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
                       help="write the CSV to FILE (default: standard output)")


@codes.command("generate")
@click.argument("name", metavar="CAMPAIGN")
@click.option("--count", type=click.IntRange(1, 1_000_000), required=True,
              help="how many new unique codes")
@_OUTPUT
@pass_runtime
def generate(runtime: Runtime, name: str, count: int, output: Path | None) -> None:
    """Draw COUNT new unique codes for CAMPAIGN and print them as CSV (campaign, code)."""
    _campaign(runtime, name)
    services = runtime.services()
    made = catalog.generate(services.db, services.ledger.program, name, count,
                            now=services.ledger.clock())
    text = "campaign,code\n" + "".join(f"{name},{draw.printed(code)}\n" for code in made)
    _write(output, text, runtime)
    t = translator(runtime.settings.program.language)
    said = t.ngettext("codes: %(num)d new code for campaign %(name)s",
                      "codes: %(num)d new codes for campaign %(name)s", len(made), name=name)
    if output:
        said += " " + t._("written to %(path)s", path=str(output))
    click.echo(said, err=True)


@codes.command("export")
@click.argument("name", metavar="CAMPAIGN")
@_OUTPUT
@pass_runtime
def export(runtime: Runtime, name: str, output: Path | None) -> None:
    """Every generated code of CAMPAIGN as CSV (campaign, code, uses, created_at), for
    printing or a mailing."""
    _campaign(runtime, name)
    buffer = io.StringIO()
    count = catalog.export(runtime.services().db, name, buffer)
    _write(output, buffer.getvalue(), runtime)
    click.echo(translator(runtime.settings.program.language).ngettext(
        "codes: exported %(num)d code of campaign %(name)s",
        "codes: exported %(num)d codes of campaign %(name)s", count, name=name), err=True)


@codes.command("show")
@click.argument("code")
@json_option
@pass_runtime
def show(runtime: Runtime, code: str, as_json: bool) -> None:
    """A code's campaign, uses left, and who used it when."""
    services = runtime.services()
    view = catalog.show(services.db, services.ledger.program, code)
    if as_json:
        echo_json(view.as_json())
        return
    for line in catalog.lines(view, runtime.settings.program.zone):
        click.echo(line)


@codes.command("list")
@click.argument("name", metavar="[CAMPAIGN]", required=False)
@json_option
@pass_runtime
def list_campaigns(runtime: Runtime, name: str | None, as_json: bool) -> None:
    """A summary of CAMPAIGN (default: every promo campaign): codes, uses, customers,
    points granted against the budget."""
    services = runtime.services()
    if name is not None:
        _campaign(runtime, name)
    names = [name] if name else [p.name for p in runtime.settings.program.promo]
    summaries = [catalog.summary(services.db, services.ledger.program, n) for n in names]
    if as_json:
        echo_json([s.as_json() for s in summaries])
        return
    if not summaries:
        click.echo(translator(runtime.settings.program.language)._(
            "no promo campaigns configured (%(table)s)", table="[[program.promo]]"))
    for s in summaries:
        budget = f" of {s.budget}" if s.budget is not None else ""
        click.echo(f"{s.campaign}: {s.grants}, {s.window}; {s.codes} code(s) generated, "
                   f"{s.codes_used} used; {s.uses} use(s) by {s.customers} customer(s); "
                   f"{s.points_granted}{budget} points granted")
