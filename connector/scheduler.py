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

from connector import triggers
from connector.config import Settings
from connector.lifecycle import birthday_bonuses, expiry_warnings
from connector.services import Services
from connector.worker import Worker

log = logging.getLogger(__name__)


def expire_points(services: Services) -> int:
    """Expire every lot past its date; returns the expiry entries written (one per lot)."""
    count = services.ledger.expire_due()
    log.info("expire_points: %d lot(s) expired", count)
    return count


def recalculate_tiers(services: Services) -> int:
    """Tiers by rolling spend; downgrades happen here. Marketing hears of each move once."""
    changes = services.ledger.recalculate_tiers()
    triggers.record(services.db, triggers.from_tier_changes(changes, services.program))
    log.info("recalculate_tiers: %d account(s) changed tier", len(changes))
    return len(changes)


def process_inbox(services: Services) -> dict[str, int]:
    """Turn received events into ledger entries, then write what changed back to the CRMs."""
    counts = Worker(services.inbox, services.processors()).drain(max_rounds=100)
    counts.update(services.flush_crms())
    if any(counts.values()):
        log.info("process_inbox: %s", counts)
    return counts


def _reconcile(services: Services, crm: str) -> int:
    connector = services.bitrix24 if crm == "bitrix24" else services.amocrm
    if connector is None:
        return 0
    report = connector.reconcile()
    log.info("reconcile_%s: %d read, %d changed, %d call(s)", crm, report.deals,
             report.changed, report.calls)
    return report.changed


def reconcile_bitrix24(services: Services) -> int:
    """Pull deals changed since the last sync, in case events were lost."""
    return _reconcile(services, "bitrix24")


def reconcile_amocrm(services: Services) -> int:
    """Pull leads changed since the last sync, in case webhooks were lost."""
    return _reconcile(services, "amocrm")


@dataclass(frozen=True)
class Job:
    id: str
    func: Callable[[Services], object]
    interval_seconds: float


def jobs(settings: Settings) -> list[Job]:
    found = [Job("process_inbox", process_inbox, settings.inbox.poll_seconds),
             Job("expire_points", expire_points,
                 settings.scheduler.expiry_interval_minutes * 60),
             Job("recalculate_tiers", recalculate_tiers,
                 settings.scheduler.tiers_interval_minutes * 60),
             # Hourly: a birthday starts at local midnight; the key makes repeats no-ops.
             Job("birthday_bonuses", birthday_bonuses, 3600),
             Job("expiry_warnings", expiry_warnings, 3600)]
    if settings.bitrix24.enabled:
        found.append(Job("reconcile_bitrix24", reconcile_bitrix24,
                         settings.bitrix24.sync_interval_minutes * 60))
    if settings.amocrm.enabled:
        found.append(Job("reconcile_amocrm", reconcile_amocrm,
                         settings.amocrm.sync_interval_minutes * 60))
    return found


def build_scheduler(services: Services, *, blocking: bool = False) -> BaseScheduler:
    """A scheduler with every job registered, not yet started; none when disabled."""
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(
        timezone=UTC)
    if not services.settings.scheduler.enabled:
        return scheduler
    for job in jobs(services.settings):
        seconds = job.interval_seconds
        scheduler.add_job(
            job.func, "interval", args=[services], id=job.id, name=job.id,
            seconds=seconds,
            replace_existing=True,
            # After a pause (sleep, a long run) one catch-up run is enough, never a burst.
            coalesce=True, max_instances=1,
            # A run late by up to one interval still happens; later, the next one is due.
            misfire_grace_time=max(int(seconds), 1),
        )
    return scheduler
