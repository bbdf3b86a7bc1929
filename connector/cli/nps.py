"""NPS answers from the command line: record one, report the NPS of a period."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import click

from connector.cli.base import (
    ACTOR,
    Runtime,
    account_arguments,
    cli,
    echo_json,
    json_option,
    ledger_key,
    pass_runtime,
)
from connector.cli.ledger import _period
from connector.i18n import N_, translator
from connector.ledger.views import AccountRef
from connector.stats import nps_in_period, nps_rows

FUTURE_SLACK = timedelta(minutes=5)  # the API's allowance for clocks apart
# The JSON keeps promoter / passive / detractor; the line says them in the program's language.
CATEGORY_NAMES = {"promoter": N_("promoter"), "passive": N_("passive"),
                  "detractor": N_("detractor")}


@cli.group()
def nps() -> None:
    """NPS: 0-10 "would you recommend us" answers and the score they give."""


@nps.command("record")
@account_arguments
@click.argument("score")
@click.option("--key", help="idempotency key: repeating it records nothing more "
                            "(default: a new one, so each run is a new answer)")
@click.option("--at", "moment", type=click.DateTime(["%Y-%m-%d %H:%M", "%Y-%m-%d"]),
              help="when it was answered, program time zone (default: now)")
@json_option
@pass_runtime
def nps_record(runtime: Runtime, ref: AccountRef, score: str, key: str | None,
               moment: datetime | None, as_json: bool) -> None:
    """Record SCORE (a whole number 0-10) for the customer; the bonus for answering is
    granted at most once per [program.nps] period."""
    services = runtime.services()
    occurred_at = moment.replace(tzinfo=runtime.settings.program.zone) if moment else None
    # As the API: a future answer would stand as the customer's latest until then, and
    # earn the bonus of a period not begun.
    if occurred_at is not None and occurred_at > services.ledger.clock() + FUTURE_SLACK:
        t = translator(runtime.settings.program.language)
        raise click.BadParameter(t._("must not be in the future"), param_hint="--at")
    recorded = services.nps.record(
        ref, score, source="cli", source_key=ledger_key(key or f"cli-nps:{uuid.uuid4()}"),
        occurred_at=occurred_at, raw={"score": score, "at": moment.isoformat() if moment
                                      else None}, actor=ACTOR)
    if as_json:
        echo_json(recorded.as_json())
        return
    t = translator(runtime.settings.program.language)
    line = t._("recorded %(score)s (%(category)s) for %(ref)s", score=recorded.score,
               category=CATEGORY_NAMES[recorded.category].render(t), ref=str(ref))
    if recorded.duplicate:
        line = t._("already recorded under this key: %(score)s for %(ref)s",
                   score=recorded.score, ref=str(ref))
    if recorded.bonus_entry_id:
        line += "; " + t._("bonus %(points)s",
                           points=t.ledger_points(recorded.bonus_points, signed=True))
    click.echo(line)


@nps.command("report")
@click.option("--days", type=click.IntRange(min=1), help="the last N days (default 30)")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="first day, program time zone")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="first day not included")
@json_option
@pass_runtime
def nps_report(runtime: Runtime, days: int | None, since: datetime | None,
               until: datetime | None, as_json: bool) -> None:
    """NPS for a period: each account's latest answer, overall, by tier, segment, month."""
    start, end = _period(runtime.settings, days, since, until)
    t = translator(runtime.settings.program.language)
    if end <= start:
        raise click.UsageError(t._("--until must be after --since"))
    services = runtime.services()
    with services.db.transaction(write=False) as session:
        figures = nps_in_period(session, services.program, start, end)
    if as_json:
        echo_json(figures.as_json())
        return
    rows = nps_rows(figures, t)
    width = max(14, *(len(label) + 1 for label, _ in rows))
    for label, value in rows:
        click.echo(f"{label:<{width}} {value}")
