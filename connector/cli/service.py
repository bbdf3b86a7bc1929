"""Running the service and migrating its database."""

from __future__ import annotations

import logging
import signal
from typing import NoReturn

import click

from connector.cli.base import Runtime, cli, fail, pass_runtime


# -- the service ---------------------------------------------------------------------------
def _stop(_signum: int, _frame: object) -> NoReturn:
    # waitress's loop ends on SystemExit; SIGINT too, even where a shell left it ignored.
    raise SystemExit(0)


@cli.command()
@pass_runtime
def serve(runtime: Runtime) -> None:
    """Migrate the database, start the scheduler and serve HTTP until SIGINT/SIGTERM."""
    # The one place the core reaches up to the web tier: imported here so that every other
    # command runs without loading Flask and the HTTP server.
    from waitress import create_server

    from connector.scheduler import build_scheduler
    from webhooks import create_app

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = runtime.services(migrated=False)
    services.db.upgrade()
    # Every /healthz opens a migration context, which would log two lines per probe.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    # The inbox job runs every few seconds; its own log line says when it did something.
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
    config = runtime.settings.server
    try:
        server = create_server(create_app(services=services), host=config.host,
                               port=config.port, threads=config.threads)
    except OSError as exc:
        fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
    scheduler = build_scheduler(services)
    if runtime.settings.scheduler.enabled:
        scheduler.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    click.echo(f"listening on http://{server.effective_host}:{server.effective_port}")
    try:
        server.run()
    finally:
        if scheduler.running:
            scheduler.shutdown()
        server.close()
        click.echo("stopped")


# -- the database --------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@pass_runtime
def db_upgrade(runtime: Runtime) -> None:
    """Apply every pending migration."""
    database = runtime.services(migrated=False).db
    database.upgrade()
    click.echo(f"database at revision {database.current_revision()} (head)")


@db.command("current")
@pass_runtime
def db_current(runtime: Runtime) -> None:
    """Show the schema revision; exit 1 when it is behind."""
    database = runtime.services(migrated=False).db
    current, head = database.current_revision(), database.head_revision()
    if current == head:
        click.echo(f"database at revision {current} (head)")
        return
    click.echo(f"database at revision {current or 'nothing'}, head is {head}")
    database.check()
