"""`demo`: the service against a simulated CRM, with a short story, in under a minute."""

from __future__ import annotations

import signal
import threading

import click

from connector.cli.base import cli
from connector.cli.service import _on_signals
from connector.i18n import LANGUAGES


def _until_stopped() -> None:
    # SIGINT / SIGTERM end the wait (as SystemExit from serve's handlers, or Ctrl-C).
    threading.Event().wait()


@cli.command()
@click.option("--crm", type=click.Choice(["bitrix24", "amocrm"]), default="bitrix24",
              show_default=True, help="which CRM to simulate")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="the service's port (default: a free one)")
@click.option("--no-wait", is_flag=True, help="exit after the story instead of staying up")
@click.option("--language", type=click.Choice(LANGUAGES), default="ru", show_default=True,
              help="the story's language and the demo's program.language")
def demo(crm: str, port: int | None, no_wait: bool, language: str) -> None:
    """Run the service on a temporary SQLite database against a simulated Bitrix24 portal
    (or amoCRM account), play a short story, then keep the dashboard and a card page open
    until Ctrl-C. Reads no config file and no LOYALTY_* variables; leaves nothing behind."""
    from connector.demo.run import run_demo

    _on_signals()
    try:
        status = run_demo(crm, port, wait=not no_wait, echo=click.echo,
                          echo_err=lambda line: click.echo(line, err=True),
                          until_stopped=_until_stopped, language=language)
    except SystemExit:
        status = 0  # stopped by a signal; run_demo has cleaned up on the way out
    signal.signal(signal.SIGINT, signal.default_int_handler)
    click.get_current_context().exit(status)
