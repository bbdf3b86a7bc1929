"""Many processes on one database: workers share the inbox, one scheduler leads.

Run on SQLite and, with LOYALTY_TEST_DATABASE_URL, on PostgreSQL (FOR UPDATE SKIP LOCKED,
advisory lock).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from decimal import Decimal as D
from pathlib import Path

import pytest
from sqlalchemy import func, select

from connector import job_runs
from connector.config import Settings, load_settings
from connector.inbox import InboxEvent, InboxItem
from connector.leader import LeaderLock
from connector.ledger.models import Entry
from connector.ledger.views import AccountRef
from connector.sandbox import FakeBitrix24Portal
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from connector.sandbox.faults import RequestLog
from connector.scheduler import LeaderScheduler
from connector.services import Services
from connector.worker import Outcome, Worker
from tests.conftest import fresh_services, make_settings
from tests.test_scheduler import REPO, command

pytestmark = pytest.mark.storage
EVENTS = 300
PORTAL = "acme.bitrix24.ru"
FORM = "application/x-www-form-urlencoded"
REDIS_URL = os.environ.get("LOYALTY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class CountingProcessor:
    """Accrues one purchase per event and counts how often each event reached it."""

    def __init__(self, services: Services, seen: Counter[int], lock: threading.Lock) -> None:
        self.services, self.seen, self.lock = services, seen, lock

    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        for item in items:
            with self.lock:
                self.seen[item.id] += 1
            self.services.ledger.accrue(AccountRef("bitrix24", "acme", str(item.id % 17)),
                                        D(100), key=f"event:{item.id}")
        time.sleep(0.01)  # let the other workers claim in between
        return {item.id: Outcome.done() for item in items}


def test_three_workers_drain_one_inbox_exactly_once(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, inbox={"batch_size": 7})
    first = fresh_services(settings)
    for n in range(EVENTS):
        first.inbox.put(source="test", kind="event", dedup_key=f"e{n}", body=b"{}")
    seen: Counter[int] = Counter()
    lock = threading.Lock()
    # Three workers, each with its own connection pool, as three processes would have.
    workers = [first, Services.build(settings), Services.build(settings)]
    counts: list[dict[str, int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(workers))

    def drain(services: Services) -> None:
        try:
            barrier.wait()
            worker = Worker(services.inbox, {"test": CountingProcessor(services, seen, lock)})
            counts.append(worker.drain())
        except BaseException as exc:  # reported below, with the thread's own error
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(s,)) for s in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert errors == []
        assert len(seen) == EVENTS and set(seen.values()) == {1}  # each event exactly once
        assert sum(c.get("done", 0) for c in counts) == EVENTS
        assert sum(1 for c in counts if c.get("done")) >= 2  # the work was really shared
        with first.db.transaction(write=False) as session:
            statuses = dict(session.execute(select(InboxEvent.status, func.count())
                                            .group_by(InboxEvent.status)).all())
            entries = session.scalar(select(func.count()).select_from(Entry))
        assert statuses == {"done": EVENTS}
        assert entries == EVENTS
        assert first.ledger.verify()[1] == []
    finally:
        for services in workers:
            services.close()


def test_only_one_leader_lock_at_a_time(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    one, two = fresh_services(settings), Services.build(settings)
    first, second = LeaderLock(one.db), LeaderLock(two.db)
    try:
        assert first.try_acquire() and first.still_held()
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire()
        assert not first.try_acquire()
    finally:
        first.release()
        second.release()
        one.close()
        two.close()


def test_a_standby_scheduler_starts_jobs_when_it_gets_the_lock(tmp_path: Path,
                                                               database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, scheduler={"leader_poll_seconds": 0.1})
    services = fresh_services(settings)
    holder = LeaderLock(Services.build(settings).db)
    assert holder.try_acquire()
    standby = LeaderScheduler(services)
    try:
        standby.step()
        assert not standby.leading
        holder.release()
        standby.step()
        assert standby.leading and standby.scheduler is not None
        assert "expire_points" in {job.id for job in standby.scheduler.get_jobs()}
    finally:
        standby.stop()
        standby._step_down()
        standby.lock.release()
        holder.db.dispose()
        services.close()


# -- real processes ------------------------------------------------------------------------
def _config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "scheduler.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n'
                    "[scheduler]\nleader_poll_seconds = 0.3\n", encoding="utf-8")
    return path


def _start(config: Path, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([*command(), "--config", str(config), "scheduler"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)


def _runners(settings: Settings) -> set[str]:
    services = Services.build(settings)
    try:
        return {run.last_runner.rsplit(":", 1)[1] for run in
                job_runs.all_runs(services.db).values() if run.last_runner}
    finally:
        services.close()


def _wait_for(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {check}")


def test_two_scheduler_processes_one_runs_jobs_and_the_other_takes_over(
        tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    fresh_services(settings).close()  # migrated and, on PostgreSQL, emptied
    config = _config(tmp_path, database_url)
    first = _start(config, tmp_path)
    second: subprocess.Popen[str] | None = None
    try:
        _wait_for(lambda: _runners(settings) == {str(first.pid)})
        second = _start(config, tmp_path)
        time.sleep(3)  # ten of the standby's attempts to take the lock
        assert second.poll() is None
        assert _runners(settings) == {str(first.pid)}  # the standby ran nothing
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        _wait_for(lambda: str(second.pid) in _runners(settings))
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
    assert second is not None and second.returncode == 0



# -- one CRM budget for every process ------------------------------------------------------
B24_RATE, B24_BURST = 2.0, 4  # a small portal and account, so a few seconds show any
AMO_RATE, AMO_BURST = 2.0, 3  # excess
RUN_SECONDS = 8.0  # of requests at the limits' pace, after the processes' first request
MAX_SECONDS = 90.0


def _crm_config(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
                account: FakeAmoCRM, limits: str) -> Path:
    path = tmp_path / "crm.toml"
    path.write_text(
        f'[database]\nurl = "{database_url}"\n'
        "[inbox]\nbatch_size = 1\npoll_seconds = 0.2\n"  # a call per event: many calls
        f"[limits]\n{limits}\n"
        f'[bitrix24]\nenabled = true\nwebhook_url = "{portal.webhook_url}"\n'
        f'portal = "{PORTAL}"\napplication_token = "{portal.application_token}"\n'
        f"requests_per_second = {B24_RATE}\nburst = {B24_BURST}\n"
        f'[amocrm]\nenabled = true\nbase_url = "{account.base_url}"\n'
        'long_lived_token = "long-lived-token"\nwebhook_secret = "ScaleOutSecret0123456789"\n'
        "write_batch = 1\n"
        f"requests_per_second = {account.rate}\nburst = {account.burst}\n",
        encoding="utf-8")
    return path


def _over_the_limit(log: RequestLog, rate: float, burst: int) -> dict[float, int]:
    """Windows (1, 10, 60 s) holding more requests than the CRM's bucket lets through."""
    allowed = {w: burst + int(rate * w) for w in (1.0, 10.0, 60.0)}
    return {w: log.max_in_window(w) for w in allowed if log.max_in_window(w) > allowed[w]}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["database", "redis"])
def test_two_workers_and_a_sync_keep_to_one_budget(tmp_path: Path, database_url: str,
                                                   backend: str) -> None:
    """Real processes: two `worker`s draining Bitrix24 and amoCRM events and a
    `sync amocrm --full`, for a bounded time, against one fake portal and one fake account
    that enforce their limits: no window over either limit, no 429 or 503."""
    limits = 'backend = "database"'
    if backend == "redis":
        prefix = _redis_prefix_or_skip()
        limits = f'backend = "redis"\nredis_url = "{REDIS_URL}"\nredis_prefix = "{prefix}"'
    with FakeBitrix24Portal(requests_per_second=B24_RATE, burst=B24_BURST) as portal, \
            FakeAmoCRM(rate=AMO_RATE, burst=AMO_BURST) as account:
        config = _crm_config(tmp_path, database_url, portal, account, limits)
        settings = load_settings(config)
        services = fresh_services(settings)
        try:
            contacts = [portal.add_contact(NAME=f"Client {n}") for n in range(20)]
            for lead in range(1, 601):  # the sync reads them all, page by page
                account.put_contact(lead)
                account.put_lead(lead, contact=lead, price=1000 + lead)
            for n in range(1, 61):  # the two CRMs' events in turn
                deal = portal.add_deal(contact_ids=[contacts[n % 20]], STAGE_ID="WON",
                                       OPPORTUNITY=f"{1000 + n}.00")
                body, kind = portal.event_body("ONCRMDEALUPDATE", deal)
                services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE",
                                   dedup_key=f"b{n}", body=body, content_type=kind,
                                   portal=portal.domain)
                services.inbox.put(source="amocrm", kind="webhook", dedup_key=f"a{n}",
                                   body=webhook_body("leads", "status", [{
                                       "id": str(n), "status_id": "142",
                                       "old_status_id": "20067736", "pipeline_id": "3104455",
                                       "price": "0"}]),
                                   content_type=FORM, portal=settings.amocrm.portal_key)
        finally:
            services.close()
        processes = [_run(config, tmp_path, "worker"), _run(config, tmp_path, "worker"),
                     _run(config, tmp_path, "sync", "amocrm", "--full")]
        # Enough requests that the budget surely held some back (the processes start slowly
        # on a busy machine, so the clock starts at the fakes' first request).
        wanted = (B24_BURST + B24_RATE * RUN_SECONDS, AMO_BURST + AMO_RATE * RUN_SECONDS)
        deadline = time.monotonic() + MAX_SECONDS
        try:
            while time.monotonic() < deadline and (len(portal.request_log) < wanted[0]
                                                   or len(account.request_log) < wanted[1]):
                time.sleep(0.2)
        finally:
            errors = [_stop(process) for process in processes]
        assert all("Traceback" not in e for e in errors), errors
        assert len(portal.request_log) >= wanted[0] and len(account.request_log) >= wanted[1]
        assert (portal.limit_errors, account.state.too_many) == (0, 0)
        assert _over_the_limit(portal.request_log, B24_RATE, B24_BURST) == {}
        assert _over_the_limit(account.request_log, account.rate, account.burst) == {}


def _redis_prefix_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    return f"loyalty-test-budget:{os.getpid()}:{time.monotonic_ns()}:"


def _run(config: Path, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([*command(), "--config", str(config), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, errors = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, errors = process.communicate()
    return errors
