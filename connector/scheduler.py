"""Periodic jobs on APScheduler 3, run by exactly one scheduler at a time.

Each job is a plain module-level function of the Services, so it runs the same from the
scheduler, `run-job`, a test or a shell. Every run is recorded in `job_runs` (counts, duration,
error) for `jobs` and /metrics. Jobs live in memory only: a persistent job store shared by
several processes runs jobs twice or loses them, and re-registering at start with fixed ids is
all we need. The inbox job belongs to the workers (every `serve` and `worker` process runs it);
the others to the one scheduler holding the leader lock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from connector import inbox_retention, job_runs, triggers
from connector.config import Settings
from connector.db import is_unavailable, outage_reason, utcnow
from connector.leader import LeaderLock
from connector.lifecycle import (
    anniversary_bonuses,
    birthday_bonuses,
    expiry_warnings,
    release_pending,
)
from connector.logs import log_context, redact
from connector.rfm import update_segments
from connector.services import Services
from connector.wakeup import Listener
from connector.worker import Worker

log = logging.getLogger(__name__)


def expire_points(services: Services) -> int:
    """Expire every lot past its date; returns the expiry entries written (one per lot)."""
    return services.ledger.expire_due()


def recalculate_tiers(services: Services) -> int:
    """Tiers by rolling spend; downgrades happen here. Marketing hears of each move once."""
    changes = services.ledger.recalculate_tiers()
    triggers.record(services.db, triggers.from_tier_changes(changes, services.program),
                    program=services.program)
    return len(changes)


def rfm_segments(services: Services) -> dict[str, int]:
    """Recompute RFM scores and segments; changed segments are written back to the CRM."""
    report = update_segments(services.db, services.ledger.clock(),
                             services.settings.rfm.active_days)
    return {"scored": report.scored, "changed": report.changed, **report.sizes}


def process_inbox(services: Services) -> dict[str, int]:
    """Turn received events into ledger entries, then write what changed back to the CRMs."""
    flushed: dict[str, int] = defaultdict(int)

    def write_back() -> None:
        for key, value in services.flush_crms().items():
            flushed[key] += value

    # The worker writes back as soon as the last group is processed, before settling it.
    # With the wake-up off no loop answers the inbox's doorbell: what rang during the pass
    # is claimed in it, or it would wait a whole poll.
    worker = Worker(services.inbox, services.processors(), metrics=services.metrics,
                    write_back=write_back,
                    reclaim_when_rung=not services.settings.inbox.wake)
    counts = worker.drain(max_rounds=100)
    if worker.write_back_error is not None:
        raise worker.write_back_error
    if not worker.written_back:  # also when no event came: the API's changes, a reconcile's
        write_back()
    counts.update(flushed)
    if any(counts.values()):
        log.info("process_inbox: %s", counts)
    return counts


def prune_inbox(services: Services) -> dict[str, int]:
    """Delete processed inbox events older than inbox.retention_days (0: keep them)."""
    before = inbox_retention.cutoff(services.inbox.clock(), services.settings.inbox.retention_days)
    return {"deleted": 0 if before is None else
            inbox_retention.delete_processed(services.db, before=before)}


def _reconcile(services: Services, crm: str) -> dict[str, int]:
    connector = services.bitrix24 if crm == "bitrix24" else services.amocrm
    if connector is None:
        return {}
    report = connector.reconcile()
    return {"read": report.deals, "changed": report.changed, "calls": report.calls,
            **connector.flush()}


def reconcile_bitrix24(services: Services) -> dict[str, int]:
    """Pull deals changed since the last sync, in case events were lost."""
    return _reconcile(services, "bitrix24")


def reconcile_amocrm(services: Services) -> dict[str, int]:
    """Pull leads changed since the last sync, in case webhooks were lost."""
    return _reconcile(services, "amocrm")


Role = Literal["worker", "scheduler"]


@dataclass(frozen=True)
class Job:
    id: str
    func: Callable[[Services], object]
    interval_seconds: float
    role: Role = "scheduler"

    @property
    def description(self) -> str:
        return (self.func.__doc__ or "").strip().splitlines()[0]


def jobs(settings: Settings) -> list[Job]:
    hourly = 3600.0
    found = [Job("process_inbox", process_inbox, settings.inbox.poll_seconds, "worker"),
             Job("expire_points", expire_points,
                 settings.scheduler.expiry_interval_minutes * 60),
             Job("recalculate_tiers", recalculate_tiers,
                 settings.scheduler.tiers_interval_minutes * 60),
             # Hourly: a birthday starts at local midnight; the key makes repeats no-ops.
             Job("birthday_bonuses", birthday_bonuses, hourly),
             Job("anniversary_bonuses", anniversary_bonuses, hourly),
             Job("expiry_warnings", expiry_warnings, hourly),
             Job("release_pending", release_pending, hourly),
             Job("inbox_retention", prune_inbox, 24 * hourly)]
    if settings.rfm.enabled:
        found.append(Job("rfm_segments", rfm_segments, settings.rfm.interval_minutes * 60))
    if settings.bitrix24.enabled:
        found.append(Job("reconcile_bitrix24", reconcile_bitrix24,
                         settings.bitrix24.sync_interval_minutes * 60))
    if settings.amocrm.enabled:
        found.append(Job("reconcile_amocrm", reconcile_amocrm,
                         settings.amocrm.sync_interval_minutes * 60))
    return found


def find_job(settings: Settings, job_id: str) -> Job | None:
    return next((job for job in jobs(settings) if job.id == job_id), None)


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _as_counts(result: object) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    return {"count": result} if isinstance(result, int) else {}


def run_job(services: Services, job: Job) -> dict[str, Any]:
    """Run one job now and record what it did; an error is logged and recorded, then
    re-raised (the next run starts afresh: every job is idempotent)."""
    # The inbox runs every few seconds in every worker: record only passes that did
    # something, and no "running" mark per pass.
    every_pass = job.role != "worker"
    runner, started_at, started = runner_name(), utcnow(), time.monotonic()
    if every_pass:
        job_runs.started(services.db, job.id, started_at, runner)
    try:
        with log_context(job=job.id):
            result = _as_counts(job.func(services))
    except Exception as exc:
        seconds = time.monotonic() - started
        if is_unavailable(exc):
            # Nowhere to record the run, and a traceback per pass would say nothing more.
            log.warning("job %s stopped after %.1f s: the database was unavailable (%s)",
                        job.id, seconds, outage_reason(exc), extra={"job": job.id})
            raise
        log.exception("job %s failed after %.1f s", job.id, seconds, extra={"job": job.id})
        job_runs.finished(services.db, job.id, started_at=started_at, at=utcnow(),
                          seconds=seconds, runner=runner,
                          error=redact(f"{type(exc).__name__}: {exc}")[:2000])
        raise
    seconds = time.monotonic() - started
    if every_pass or any(result.values()):
        job_runs.finished(services.db, job.id, started_at=started_at, at=utcnow(),
                          seconds=seconds, runner=runner, result=result)
    if every_pass:
        log.info("job %s done in %.1f s: %s", job.id, seconds, result, extra={"job": job.id})
    return result


def build_scheduler(services: Services, *, roles: tuple[Role, ...] = ("scheduler",),
                    blocking: bool = False) -> BaseScheduler:
    """A scheduler with the jobs of `roles` registered, not yet started; none when disabled."""
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(
        timezone=UTC)
    if not services.settings.scheduler.enabled:
        return scheduler
    # A new leader runs everything once at start: it may take over from one that died
    # mid-interval, and every job is idempotent.
    start = datetime.now(UTC)
    for job in jobs(services.settings):
        if job.role not in roles:
            continue
        seconds = job.interval_seconds
        first = {"next_run_time": start} if job.role == "scheduler" else {}
        scheduler.add_job(
            run_job, "interval", args=[services, job], id=job.id, name=job.id,
            seconds=seconds, **first,
            replace_existing=True,
            # After a pause (sleep, a long run) one catch-up run is enough, never a burst.
            coalesce=True, max_instances=1,
            # A run late by up to one interval still happens; later, the next one is due.
            misfire_grace_time=max(int(seconds), 1),
        )
    return scheduler


class Background:
    """A loop that runs in the foreground (`run`) or on a daemon thread (`start`) until
    `stop`."""

    thread_name = "background"

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> Any:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)


class LeaderScheduler(Background):
    """Runs the scheduler's jobs only while holding the leader lock. A standby tries to take
    the lock every `scheduler.leader_poll_seconds`; a leader that loses it (its database
    connection broke) stops its jobs and goes back to standby."""

    thread_name = "scheduler-leader"

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.lock = LeaderLock(services.db)
        self.poll = services.settings.scheduler.leader_poll_seconds
        self.scheduler: BaseScheduler | None = None

    @property
    def leading(self) -> bool:
        return self.scheduler is not None

    def run(self) -> None:
        """Until stop(): lead when possible. Blocks; see start() for a thread."""
        log.info("scheduler standing by for the leader lock (%s)", runner_name())
        try:
            while not self.stopped.is_set():
                self.step()
                self.stopped.wait(self.poll)
        finally:
            self._step_down()
            self.lock.release()

    def step(self) -> None:
        if self.leading:
            if not self.lock.still_held():
                log.warning("scheduler lost the leader lock; jobs stopped")
                self._step_down()
            return
        try:
            acquired = self.lock.try_acquire()
        except Exception as exc:  # the database is down: stay standby, try again
            log.warning("scheduler cannot reach the database: %s", type(exc).__name__)
            return
        if acquired:
            self.scheduler = build_scheduler(self.services)
            self.scheduler.start()
            log.info("scheduler is the leader (%s): %d job(s)", runner_name(),
                     len(self.scheduler.get_jobs()))

    def _step_down(self) -> None:
        if self.scheduler is not None:
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            self.scheduler = None


class WorkerLoop(Background):
    """The inbox job in a loop: every `serve` and `worker` process runs one; several share
    the inbox safely (claims skip rows another worker holds).

    Between passes it waits for the inbox's doorbell, rung when events are stored in this
    process (`serve`) or, on PostgreSQL, announced by NOTIFY from any process (a LISTEN on a
    connection of its own); `inbox.poll_seconds` bounds the wait, so what no ring announced
    (SQLite across processes, a notification lost, a retry coming due) is still found. A
    ring that finds the worker idle is answered at once: a lone event is claimed as soon as it
    is stored. One that came while a pass ran means a burst is under way: the worker waits
    `inbox.batch_wait_ms` more, so the rest of it is claimed as one batch."""

    thread_name = "inbox-worker"

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.job = find_job(services.settings, "process_inbox")
        settings = services.settings.inbox
        self.wake = settings.wake
        self.batch_wait = settings.batch_wait_ms / 1000
        self.bell = services.inbox.stored
        self.listener: Listener | None = None
        if self.wake and services.db.is_postgres:
            self.listener = Listener(services.db.engine, self.bell,
                                     own_sender=services.inbox.sender,
                                     max_pause=settings.poll_seconds)

    def run(self, *, once: bool = False) -> dict[str, Any]:
        assert self.job is not None
        counts: dict[str, Any] = {}
        if self.listener is not None and not once:
            self.listener.start()
        try:
            while not self.stopped.is_set():
                # This pass's claim sees every event announced so far.
                self.bell.clear()
                try:
                    counts = run_job(self.services, self.job)
                except Exception:  # logged and recorded by run_job; the next pass retries
                    counts = {}
                if once:
                    break
                self._wait()
        finally:
            if self.listener is not None:
                self.listener.stop()
        return counts

    def _wait(self) -> None:
        assert self.job is not None
        if not self.wake:
            self.stopped.wait(self.job.interval_seconds)
            return
        if not self.bell.rung:
            # Idle: the first ring is claimed at once. Waiting here after a ring (as the
            # worker did) made every lone event pay the batch wait before its CRM call.
            self.bell.wait(self.job.interval_seconds)
        elif self.batch_wait > 0:
            # Rung while the pass ran (the pass's claim did not see it): more events are
            # arriving, gather them into one claim. The next pass clears the ring.
            self.stopped.wait(self.batch_wait)

    def stop(self, timeout: float = 30.0) -> None:
        self.stopped.set()
        self.bell.ring()  # out of its wait now
        super().stop(timeout)
