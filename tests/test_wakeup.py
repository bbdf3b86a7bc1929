"""Waking the inbox worker: in-process after the inbox commit, by LISTEN/NOTIFY across
processes on PostgreSQL, and the poll as the fallback.

The poll interval is set to a minute where a wake is expected, so an event handled within a
few seconds can only have been handled because of the wake. These check behaviour, not speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text

from connector.config import Settings
from connector.inbox import InboxEvent
from connector.scheduler import WorkerLoop
from connector.services import Services
from connector.wakeup import Doorbell, Listener
from tests.conftest import fresh_services, make_settings
from tests.test_scheduler import REPO, command

# With no CRM configured every claimed event fails with this: proof that a pass claimed it.
UNPROCESSED = "no processor for 'bitrix24' is configured"
WAIT_S = 5.0
NEVER_S = 60.0


def _settings(tmp_path: Path, database_url: str, **inbox: Any) -> Settings:
    inbox.setdefault("poll_seconds", NEVER_S)
    return make_settings(tmp_path, database_url, inbox=inbox,
                         scheduler={"enabled": False})


def _put(services: Services, key: str) -> int:
    return services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key=key,
                              body=b"event_handler_id=1").id


def _claimed(services: Services, item_id: int) -> bool:
    item = services.inbox.get(item_id)
    assert item is not None
    return item.attempts > 0 and item.last_error == UNPROCESSED


def _within(seconds: float, check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@contextmanager
def _worker(services: Services) -> Iterator[WorkerLoop]:
    """A worker loop past its first pass (at start), so that what follows needs a wake."""
    first = _put(services, "first")
    loop = WorkerLoop(services).start()
    try:
        assert _within(WAIT_S, lambda: _claimed(services, first))
        yield loop
    finally:
        loop.stop(10)


def test_a_stored_event_wakes_the_worker_in_the_same_process(tmp_path: Path,
                                                             database_url: str) -> None:
    services = fresh_services(_settings(tmp_path, database_url))
    try:
        with _worker(services):
            second = _put(services, "second")
            assert _within(WAIT_S, lambda: _claimed(services, second))
    finally:
        services.close()


def test_without_wake_the_worker_waits_for_its_poll(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(_settings(tmp_path, database_url, wake=False))
    try:
        with _worker(services):
            second = _put(services, "second")
            time.sleep(1.0)
            assert not _claimed(services, second)
    finally:
        services.close()


def test_without_wake_a_pass_still_takes_what_was_stored_while_it_ran(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`wake = false`: no loop answers the doorbell, so the pass itself claims again what
    was stored (and rang) while it ran, as it always did, rather than leaving it a poll."""
    services = fresh_services(_settings(tmp_path, database_url, wake=False))
    claim = services.inbox.claim
    later: list[int] = []

    def busy(*args: Any, **kwargs: Any) -> Any:
        items = claim(*args, **kwargs)
        if items and not later:  # the pass's first group: an event arrives meanwhile
            later.append(_put(services, "during"))
        return items

    monkeypatch.setattr(services.inbox, "claim", busy)
    first = _put(services, "first")
    loop = WorkerLoop(services).start()
    try:
        assert _within(WAIT_S, lambda: _claimed(services, first))
        assert _within(WAIT_S, lambda: bool(later) and _claimed(services, later[0]))
    finally:
        loop.stop(10)
        services.close()


def test_the_poll_finds_an_event_nobody_announced(tmp_path: Path, database_url: str) -> None:
    """Another process's insert on SQLite, or a NOTIFY lost: the next poll claims it."""
    services = fresh_services(_settings(tmp_path, database_url, poll_seconds=0.5))
    silent = Services.build(_settings(tmp_path, database_url, wake=False))
    try:
        with _worker(services):
            item_id = _put(silent, "silent")
            assert _within(WAIT_S, lambda: _claimed(services, item_id))
    finally:
        silent.close()
        services.close()


class _Waits(threading.Event):
    """A loop's stop event, recording the pauses it was asked for (its batch wait)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(timeout)
        return super().wait(timeout)


def test_a_ring_that_finds_the_worker_idle_is_answered_at_once(tmp_path: Path,
                                                               database_url: str) -> None:
    """The batch wait gathers a burst; a worker that was idle has none to gather, and the
    event it is woken for is claimed at once (the wait was time every lone event paid)."""
    services = fresh_services(_settings(tmp_path, database_url, batch_wait_ms=1000))
    try:
        loop = WorkerLoop(services)
        loop.stopped = waits = _Waits()
        loop.bell.clear()  # as before a pass; nothing rang while it ran
        threading.Timer(0.1, loop.bell.ring).start()
        loop._wait()
        assert waits.asked == []
    finally:
        services.close()


def test_a_ring_while_a_pass_ran_gathers_the_burst(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(_settings(tmp_path, database_url, batch_wait_ms=300))
    try:
        loop = WorkerLoop(services)
        loop.stopped = waits = _Waits()
        loop.bell.clear()
        loop.bell.ring()  # an event stored while the pass ran
        loop._wait()
        assert waits.asked == [0.3]
    finally:
        services.close()


def test_a_lone_event_after_idle_is_claimed_without_the_batch_wait(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    services = fresh_services(_settings(tmp_path, database_url, batch_wait_ms=1000))
    idle = threading.Event()
    bell_wait = services.inbox.stored.wait

    def waiting(timeout: float) -> bool:
        if not services.inbox.stored.rung:  # waiting with nothing rung: idle
            idle.set()
        return bell_wait(timeout)

    monkeypatch.setattr(services.inbox.stored, "wait", waiting)
    try:
        with _worker(services) as loop:
            assert idle.wait(WAIT_S)  # past any ring of its start (PostgreSQL's listener)
            waits = loop.stopped = _Waits()
            item_id = _put(services, "lone")
            assert _within(WAIT_S, lambda: _claimed(services, item_id))
            assert waits.asked == []
    finally:
        services.close()


def test_a_burst_is_claimed_as_one_batch(tmp_path: Path, database_url: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The first event of a burst may be claimed alone (the worker was idle); what arrives
    while that pass runs is gathered and claimed together."""
    services = fresh_services(_settings(tmp_path, database_url, batch_wait_ms=300))
    claims: list[int] = []
    claim = services.inbox.claim

    def counted(*args: Any, **kwargs: Any) -> Any:
        items = claim(*args, **kwargs)
        if items:
            claims.append(len(items))
            if len(claims) == 2:
                time.sleep(0.3)  # the burst's first pass, busy as with its CRM calls
        return items

    monkeypatch.setattr(services.inbox, "claim", counted)
    try:
        with _worker(services):
            ids = [_put(services, f"burst-{n}") for n in range(5)]
            assert _within(WAIT_S, lambda: all(_claimed(services, i) for i in ids))
    finally:
        services.close()
    burst = claims[1:]  # claims[0] is the worker's first pass ("first")
    assert sum(burst) == 5 and len(burst) <= 2  # not one claim per event


# -- PostgreSQL: LISTEN/NOTIFY -------------------------------------------------------------
@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    return database_url


def test_an_insert_in_one_engine_rings_a_listener_on_another(tmp_path: Path,
                                                             postgres_url: str) -> None:
    storing = fresh_services(_settings(tmp_path, postgres_url))
    waiting = Services.build(_settings(tmp_path, postgres_url))
    bell, own = Doorbell(), Doorbell()
    listener = Listener(waiting.db.engine, bell).start()
    # A listener of the storing process skips what that process announced itself.
    itself = Listener(waiting.db.engine, own, own_sender=storing.inbox.sender).start()
    try:
        assert listener.listening.wait(WAIT_S) and itself.listening.wait(WAIT_S)
        bell.clear()
        own.clear()
        _put(storing, "announced")
        assert bell.wait(WAIT_S)
        assert not own.wait(0.5)
    finally:
        listener.stop()
        itself.stop()
        waiting.close()
        storing.close()


def test_a_silent_insert_rings_nobody(tmp_path: Path, postgres_url: str) -> None:
    silent = fresh_services(_settings(tmp_path, postgres_url, wake=False))
    bell = Doorbell()
    listener = Listener(silent.db.engine, bell).start()
    try:
        assert listener.listening.wait(WAIT_S)
        bell.clear()
        _put(silent, "silent")
        assert not bell.wait(0.5)
    finally:
        listener.stop()
        silent.close()


def test_a_listener_whose_connection_is_killed_listens_again(tmp_path: Path,
                                                             postgres_url: str) -> None:
    services = fresh_services(_settings(tmp_path, postgres_url))
    other = Services.build(_settings(tmp_path, postgres_url))
    bell = Doorbell()
    listener = Listener(other.db.engine, bell).start()
    try:
        assert listener.listening.wait(WAIT_S)
        killed = listener.backend_pid
        with services.db.engine.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
        # Reconnected: a new backend, and one ring for what may have been missed meanwhile.
        assert _within(WAIT_S, lambda: listener.listening.is_set()
                       and listener.backend_pid != killed)
        assert bell.wait(WAIT_S)
        _put(services, "after")
        assert bell.wait(WAIT_S)
    finally:
        listener.stop()
        other.close()
        services.close()


def _listening(services: Services) -> int:
    with services.db.engine.connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'LISTEN loyalty_inbox' AND pid <> pg_backend_pid()")).scalar_one()


def test_an_event_stored_by_another_process_wakes_a_worker_process(
        tmp_path: Path, postgres_url: str) -> None:
    services = fresh_services(_settings(tmp_path, postgres_url))
    config = tmp_path / "worker.toml"
    config.write_text(f'[database]\nurl = "{postgres_url}"\n'
                      f"[inbox]\npoll_seconds = {NEVER_S}\n[scheduler]\nenabled = false\n",
                      encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    before = _listening(services)
    worker = subprocess.Popen([*command(), "--config", str(config), "worker"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert _within(30.0, lambda: _listening(services) > before)
        # The worker's first pass, and the one its listener asks for on connecting, go by.
        first = _put(services, "first")
        assert _within(WAIT_S, lambda: _claimed(services, first))
        time.sleep(0.5)
        item_id = _put(services, "from-web")
        assert _within(WAIT_S, lambda: _claimed(services, item_id))
        # Rows inserted with no NOTIFY at all wait for the poll: a minute here.
        with services.db.transaction() as session:
            now = services.inbox.clock()
            session.execute(insert(InboxEvent).values(
                source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key="unannounced",
                body=b"", received_at=now, status="pending", attempts=0,
                next_attempt_at=now))
        time.sleep(1.0)
        unannounced = services.inbox.list(source="bitrix24", limit=1)[0]
        assert unannounced.dedup_key == "unannounced" and unannounced.attempts == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _, errors = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, errors = worker.communicate()
        services.close()
    assert worker.returncode == 0, errors


def test_the_package_requires_a_psycopg_whose_notifies_takes_a_timeout() -> None:
    # The listener calls connection.notifies(timeout=...): psycopg 3.1 has no such argument
    # (TypeError, taken for a lost connection, forever), and before 3.2.4 a notification
    # arriving between two notifies() calls could be lost.
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    psycopg = next(Requirement(line) for line in project["dependencies"]
                   if line.startswith("psycopg"))
    assert not psycopg.specifier.contains("3.2.3") and psycopg.specifier.contains("3.2.4")
