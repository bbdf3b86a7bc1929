"""`doctor`: what is wrong with this installation, one line per check, each with the fix."""

from __future__ import annotations

import click

from connector import doctor as checks
from connector.cli.base import Runtime, cli, echo_json, json_option, pass_runtime
from connector.config import resolve_config_path
from connector.errors import ConfigError
from connector.i18n import Translator, translator


@cli.command()
@json_option
@pass_runtime
@click.pass_context
def doctor(ctx: click.Context, runtime: Runtime, as_json: bool) -> None:
    """Check the config, database, each enabled CRM, the public URL and the inbox.

    Exit 1 when a check fails, 2 when the configuration cannot be read; warnings exit 0."""
    try:
        settings = runtime.settings
    except ConfigError as exc:
        # Unreadable settings name no language: English, the language of the problems.
        report(checks.config_errors(exc.problems), as_json=as_json, streamed=False,
               t=translator("en"))
        ctx.exit(2)
    t = translator(settings.program.language)
    found: list[checks.Check] = []
    for check in checks.run(settings, lambda: runtime.services(migrated=False, create=True),
                            config_file=resolve_config_path(runtime.config_path)):
        found.append(check)
        if not as_json:
            click.echo(check.line(t))  # as it comes: a CRM that times out takes seconds
    report(found, as_json=as_json, streamed=True, t=t)
    if checks.worst(found) == "fail":
        ctx.exit(1)


def report(found: list[checks.Check], *, as_json: bool, streamed: bool,
           t: Translator) -> None:
    status = checks.worst(found)
    if as_json:  # language-neutral, whatever program.language
        echo_json({"status": status, "checks": [check.as_json() for check in found]})
        return
    if not streamed:
        for check in found:
            click.echo(check.line(t))
    failures = sum(check.status == "fail" for check in found)
    warnings = sum(check.status == "warn" for check in found)
    click.echo(t._("%(count)s check(s): %(failures)s failed, %(warnings)s warning(s)",
                   count=len(found), failures=failures, warnings=warnings)
               if failures or warnings else
               t._("%(count)s check(s): all ok", count=len(found)))
