"""Running the service, whole or in parts, its jobs, and migrating its database.

`serve` is web + inbox worker + scheduler in one process. For scale-out run `web` (many),
`worker` (many) and `scheduler` (any number: one leads, the others stand by) separately.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NoReturn

import click

from connector import job_runs
from connector.cli.base import Runtime, cli, echo_json, fail, json_option, pass_runtime
from connector.cli.output import local
from connector.i18n import translator
from connector.logs import Throttle, configure_logging
from connector.scheduler import (
    Background,
    LeaderScheduler,
    WorkerLoop,
    find_job,
    jobs,
    run_job,
)
from connector.services import Services


def _stop(_signum: int, _frame: object) -> NoReturn:
    # waitress's loop ends on SystemExit; SIGINT too, even where a shell left it ignored.
    raise SystemExit(0)


def _on_signals(loop: Background | None = None) -> None:
    """SIGINT/SIGTERM end the process. A foreground `loop` is asked to stop instead: it
    finishes its pass and returns. An exception raised from a handler can land anywhere,
    also in a garbage collector's callback, where Python prints it and carries on (seen: a
    worker that did not stop on SIGTERM). A second signal still ends it at once."""
    def stop_loop(signum: int, frame: object) -> None:
        assert loop is not None
        if loop.stopped.is_set():
            _stop(signum, frame)
        loop.stop(timeout=0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop if loop is None else stop_loop)


def service_logging() -> None:
    configure_logging()
    # Every /healthz opens a migration context, which would log two lines per probe.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    # The jobs log their own line when they did something; APScheduler's per-run lines
    # would drown it.
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.WARNING)
    # waitress warns on every request that waits for a free thread: under load, a line per
    # request (and the formatting of each) where one a minute says the same.
    logging.getLogger("waitress.queue").addFilter(Throttle(60))


@contextmanager
def _http(runtime: Runtime, services: Services) -> Iterator[Any]:
    # The one place the core reaches up to the web tier: imported here so that every other
    # command runs without loading Flask and the HTTP server.
    from waitress import create_server

    from webhooks import create_app

    config = runtime.settings.server
    try:
        server = create_server(create_app(services=services), host=config.host,
                               port=config.port, threads=config.threads)
    except OSError as exc:
        fail(translator(runtime.settings.program.language)._(
            "cannot listen on %(address)s: %(reason)s", address=f"{config.host}:{config.port}",
            reason=exc.strerror or exc))
    click.echo(translator(runtime.settings.program.language)._(
        "listening on %(url)s", url=f"http://{server.effective_host}:{server.effective_port}"))
    try:
        yield server
    finally:
        server.close()


@cli.command()
@pass_runtime
def serve(runtime: Runtime) -> None:
    """Migrate the database, then run web + inbox worker + scheduler until SIGINT/SIGTERM."""
    service_logging()
    services = runtime.services(migrated=False, create=True)
    services.migrate()
    worker = WorkerLoop(services).start()
    leader = LeaderScheduler(services).start() if runtime.settings.scheduler.enabled else None
    _on_signals()
    try:
        with _http(runtime, services) as server:
            server.run()
    finally:
        if leader is not None:
            leader.stop()
        worker.stop()
        click.echo(translator(runtime.settings.program.language)._("stopped"))


@cli.command()
@pass_runtime
def web(runtime: Runtime) -> None:
    """Only the HTTP side: receivers, robots, API (run `db upgrade` first). Runs no jobs:
    with gunicorn, serve `webhooks:create_app()` and keep jobs to `worker`/`scheduler`."""
    service_logging()
    services = runtime.services()
    _on_signals()
    try:
        with _http(runtime, services) as server:
            server.run()
    finally:
        click.echo(translator(runtime.settings.program.language)._("stopped"))


@cli.command()
@click.option("--once", is_flag=True, help="drain what is due now and exit")
@pass_runtime
def worker(runtime: Runtime, once: bool) -> None:
    """Process the inbox and write back to the CRMs (run as many as needed)."""
    services = runtime.services()
    loop = WorkerLoop(services)
    if once:
        counts = loop.run(once=True)
        click.echo(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing due")
        return
    service_logging()
    _on_signals(loop)
    try:
        loop.run()
    finally:
        click.echo(translator(runtime.settings.program.language)._("stopped"))


@cli.command()
@pass_runtime
def scheduler(runtime: Runtime) -> None:
    """Run the scheduled jobs; several may run, one leads and the others stand by."""
    if not runtime.settings.scheduler.enabled:
        fail(translator(runtime.settings.program.language)._(
            "the scheduler is disabled: set %(setting)s", setting="scheduler.enabled = true"))
    service_logging()
    leader = LeaderScheduler(runtime.services())
    _on_signals(leader)
    try:
        leader.run()
    finally:
        click.echo(translator(runtime.settings.program.language)._("stopped"))


# -- jobs ----------------------------------------------------------------------------------
@cli.command("jobs")
@json_option
@pass_runtime
def list_jobs(runtime: Runtime, as_json: bool) -> None:
    """List the jobs: how often, when next, what the last run did."""
    runs = job_runs.all_runs(runtime.services().db)
    settings = runtime.settings
    rows = []
    for job in jobs(settings):
        run = runs.get(job.id)
        next_run = None
        if run is not None and job.role == "scheduler":
            next_run = run.last_started_at + timedelta(seconds=job.interval_seconds)
        rows.append((job, run, next_run))
    if as_json:
        echo_json([{
            "id": job.id, "role": job.role, "every_seconds": job.interval_seconds,
            "description": job.description,
            "next_run": next_run.isoformat() if next_run else None,
            "last_started": run.last_started_at.isoformat() if run else None,
            "last_status": run.last_status if run else None,
            "last_seconds": run.last_duration_seconds if run else None,
            "last_result": run.last_result if run else None,
            "last_error": run.last_error if run else None,
            "runs": run.runs if run else 0, "failures": run.failures if run else 0,
        } for job, run, next_run in rows])
        return
    for job, run, next_run in rows:
        if run is None:
            last = "never run"
        else:
            last = f"{run.last_status} {local(run.last_started_at, settings)}"
            if run.last_status == "failed":
                last += f": {run.last_error}"
            elif run.last_result:
                last += " " + ", ".join(f"{k} {v}" for k, v in run.last_result.items())
        if job.role == "worker":
            upcoming = "each worker pass"
        elif next_run is None:
            upcoming = "at scheduler start"
        else:
            upcoming = local(next_run, settings)
        click.echo(f"{job.id:<20} every {_every(job.interval_seconds):<6} "
                   f"next {upcoming:<19} last: {last}")


def _every(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@cli.command("run-job")
@click.argument("name")
@json_option
@pass_runtime
def run_job_now(runtime: Runtime, name: str, as_json: bool) -> None:
    """Run the job NAME now (see `jobs`); safe beside a running scheduler."""
    job = find_job(runtime.settings, name)
    if job is None:
        known = ", ".join(j.id for j in jobs(runtime.settings))
        fail(f"no job named {name!r} (known: {known})")
    try:
        result = run_job(runtime.services(), job)
    except Exception as exc:  # run_job logged and recorded it
        fail(f"{name} failed: {type(exc).__name__}: {exc}")
    if as_json:
        echo_json({"job": name, "result": result})
    else:
        click.echo(f"{name}: " + (", ".join(f"{k} {v}" for k, v in result.items())
                                  or "nothing to do"))


# -- the database --------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@pass_runtime
def db_upgrade(runtime: Runtime) -> None:
    """Apply every pending migration."""
    services = runtime.services(migrated=False, create=True)
    services.migrate()
    database = services.db
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
