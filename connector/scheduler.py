"""Periodic jobs on APScheduler 3.

Each job is a plain module-level function of the Services, so it runs the same from the
scheduler, a test or a shell, and adding one (inbox drain, CRM reconcile) is one line in
`jobs()`. Jobs live in memory only: a persistent job store shared by several processes runs
jobs twice or loses them, and re-registering at start with fixed ids is all we need.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from connector.config import SchedulerSettings
from connector.services import Services

log = logging.getLogger(__name__)


def expire_points(services: Services) -> int:
    """Expire every lot past its date; returns the expiry entries written (one per lot)."""
    count = services.ledger.expire_due()
    log.info("expire_points: %d lot(s) expired", count)
    return count


@dataclass(frozen=True)
class Job:
    id: str
    func: Callable[[Services], object]
    interval_minutes: int


def jobs(settings: SchedulerSettings) -> list[Job]:
    return [Job("expire_points", expire_points, settings.expiry_interval_minutes)]


def build_scheduler(services: Services, *, blocking: bool = False) -> BaseScheduler:
    """A scheduler with every job registered, not yet started; none when disabled."""
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(
        timezone=UTC)
    settings = services.settings.scheduler
    if not settings.enabled:
        return scheduler
    for job in jobs(settings):
        seconds = job.interval_minutes * 60
        scheduler.add_job(
            job.func, "interval", args=[services], id=job.id, name=job.id,
            minutes=job.interval_minutes,
            replace_existing=True,
            # After a pause (sleep, a long run) one catch-up run is enough, never a burst.
            coalesce=True, max_instances=1,
            # A run late by up to one interval still happens; later, the next one is due.
            misfire_grace_time=seconds,
        )
    return scheduler
