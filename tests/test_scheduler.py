"""Scheduled jobs, and `loyalty-connector serve` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from connector.config import DatabaseSettings
from connector.db import Database
from connector.ledger.views import AccountRef
from connector.ports import free_port
from connector.scheduler import build_scheduler, expire_points, process_inbox, run_job
from connector.services import Services
from tests.conftest import Clock, make_settings

ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "101")
REPO = Path(__file__).resolve().parents[1]


def test_jobs_are_registered_with_their_configured_intervals(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, scheduler={"expiry_interval_minutes": 15},
                             inbox={"poll_seconds": 3}, rfm={"interval_minutes": 720})
    services = Services.build(settings)
    try:
        scheduler = build_scheduler(services)
        assert isinstance(scheduler, BackgroundScheduler)
        found = {job.id: job for job in scheduler.get_jobs()}
        # The inbox belongs to the workers, not to the one leading scheduler.
        assert set(found) == {"expire_points", "recalculate_tiers", "birthday_bonuses",
                              "anniversary_bonuses", "expiry_warnings", "release_pending",
                              "rfm_segments", "inbox_retention"}
        hourly = ("birthday_bonuses", "anniversary_bonuses", "expiry_warnings",
                  "release_pending")
        assert all(found[name].trigger.interval == timedelta(hours=1) for name in hourly)
        assert found["recalculate_tiers"].trigger.interval == timedelta(days=1)
        assert found["inbox_retention"].trigger.interval == timedelta(days=1)
        assert found["rfm_segments"].trigger.interval == timedelta(hours=12)
        job = found["expire_points"]
        assert (job.func, job.args[0], job.args[1].func) == (run_job, services, expire_points)
        assert isinstance(job.trigger, IntervalTrigger)
        assert job.trigger.interval == timedelta(minutes=15)
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 900)
        inbox = build_scheduler(services, roles=("worker",)).get_jobs()
        assert [(j.id, j.args[1].func, j.trigger.interval) for j in inbox] == [
            ("process_inbox", process_inbox, timedelta(seconds=3))]
        assert isinstance(build_scheduler(services, blocking=True), BlockingScheduler)
    finally:
        services.close()


def test_disabled_scheduler_has_no_jobs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, scheduler={"enabled": False})
    services = Services.build(settings)
    try:
        assert build_scheduler(services).get_jobs() == []
    finally:
        services.close()


def test_expire_points_expires_lots_past_their_date(tmp_path: Path, clock: Clock) -> None:
    settings = make_settings(tmp_path, program={"points_lifetime_days": 30})
    services = Services.build(settings, clock=clock)
    try:
        services.db.upgrade()
        services.ledger.accrue(ANNA, D("1000"), key="deal:1")            # +30, lot 1
        clock.advance(days=10)
        services.ledger.grant_bonus(ANNA, "review", key="b", points=D("5"))  # +5, lot 2
        clock.advance(days=19)
        assert expire_points(services) == 0                              # day 29: none due
        clock.advance(days=1)
        assert expire_points(services) == 1                              # day 30: lot 1
        assert services.ledger.account(ANNA).balance == D("5.00")
        assert expire_points(services) == 0                              # nothing twice
        clock.advance(days=10)
        assert expire_points(services) == 1
        assert services.ledger.account(ANNA).balance == D("0.00")
        assert services.ledger.verify() == (1, [])
    finally:
        services.close()


# -- the service as a process --------------------------------------------------------------
def command() -> list[str]:
    script = Path(sys.executable).with_name("loyalty-connector")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from connector.cli import main; main()"]


def healthz(url: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def test_serve_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    # An editable install made before a package had its __init__.py maps it as a namespace
    # package outside the repository; the path makes the test independent of that.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    port = free_port()
    config = tmp_path / "serve.toml"
    config.write_text(f'[server]\nport = {port}\n[database]\nurl = "sqlite:///{tmp_path}/s.db"\n'
                      "[scheduler]\nexpiry_interval_minutes = 1\n", encoding="utf-8")
    process = subprocess.Popen([*command(), "--config", str(config), "serve"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert healthz(f"http://127.0.0.1:{port}/healthz", timeout_s=20) == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    # program.language's default, Russian
    assert stdout.splitlines() == [f"принимает запросы на http://127.0.0.1:{port}",
                                   "остановлено"]
    database = Database(DatabaseSettings(url=f"sqlite:///{tmp_path}/s.db"))
    try:  # serve migrated the database before listening
        assert database.current_revision() == database.head_revision()
    finally:
        database.dispose()


def test_each_enabled_crm_gets_its_reconcile_job(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, bitrix24={"enabled": True, "sync_interval_minutes": 5,
                            "webhook_url": "https://acme.bitrix24.ru/rest/1/secret0000001/"},
        amocrm={"enabled": True, "base_url": "https://example.amocrm.ru",
                "long_lived_token": "t" * 40, "webhook_secret": "S" * 20,
                "sync_interval_minutes": 7})
    services = Services.build(settings)
    try:
        jobs = {job.id: job for job in build_scheduler(services).get_jobs()}
        assert {"reconcile_bitrix24", "reconcile_amocrm"} <= set(jobs)
        assert jobs["reconcile_bitrix24"].trigger.interval == timedelta(minutes=5)
        assert jobs["reconcile_amocrm"].trigger.interval == timedelta(minutes=7)
    finally:
        services.close()
