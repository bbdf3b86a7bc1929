"""The database going away for a few seconds: claimed inbox items are given back as soon as it
answers, requests are answered 503 with Retry-After (logged once, with a count), and the CLI
says in one line that the database is unreachable and why.

Real outages run on PostgreSQL through a proxy this test cuts (tests/outage.py); the shared
server itself is never stopped."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from connector.config import DatabaseSettings, InboxSettings, Settings
from connector.db import Database, is_unavailable
from connector.inbox import Inbox, InboxItem
from connector.ports import free_port
from connector.worker import Outcome, Worker
from tests.conftest import POSTGRES_URL, TEST_SECRET_KEY, Clock, fresh_services, make_settings
from tests.outage import Proxy, proxy_for
from tests.test_bitrix24_receiver import FORM, MEMBER, TOKEN, event_body
from tests.test_event_receivers import AMO_BODY
from tests.test_inbox import make_inbox, put
from webhooks import create_app

needs_postgres = pytest.mark.skipif(POSTGRES_URL is None,
                                    reason="set LOYALTY_TEST_DATABASE_URL for real outages")
AMO_SECRET = "OutageSecret0123456789"


def gone() -> OperationalError:
    return OperationalError("SELECT 1", None, Exception(
        "server closed the connection unexpectedly\n\tThis probably means the server "
        "terminated abnormally"))


class DatabaseGoesAway:
    """A processor whose ledger write finds the database gone (after applying one event)."""

    def __init__(self, db: Database | None = None, proxy: Proxy | None = None) -> None:
        self.db, self.proxy = db, proxy
        self.seen: list[int] = []

    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        self.seen += [item.id for item in items]
        if self.proxy is not None and self.db is not None:
            self.proxy.cut()
            with self.db.transaction() as session:  # raises: the connection is gone
                session.execute(text("SELECT 1"))
        raise gone()


class Done:
    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        return {item.id: Outcome.done() for item in items}


# -- 6: claims are given back once the database answers -----------------------------------
def test_claims_are_given_back_as_soon_as_the_database_answers(
        db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = make_inbox(db, clock)
    ids = [put(inbox, n) for n in range(6)]
    down_for = {"calls": 2}  # two releases find it away, the third works
    real_release, failed = inbox.release, []

    def fail(item_id: int, error: str) -> str:
        failed.append(item_id)  # an outage is not the item's failed attempt
        raise gone()

    def release(item_ids: list[int], error: str) -> int:
        if down_for["calls"] > 0:
            down_for["calls"] -= 1
            raise gone()
        return real_release(item_ids, error)

    monkeypatch.setattr(inbox, "fail", fail)
    monkeypatch.setattr(inbox, "release", release)
    waits: list[float] = []
    worker = Worker(inbox, {"bitrix24": DatabaseGoesAway()}, sleep=waits.append)
    assert worker.drain_once() == {"released": 6}
    assert waits == [0.5, 1.0]  # tried again soon, then a little later
    assert failed == []
    for item_id in ids:
        item = inbox.get(item_id)
        assert item is not None and item.status == "pending" and item.attempts == 0
        assert item.next_attempt_at == clock.now  # due again now, not in 15 minutes
        assert item.last_error is not None and "server closed the connection" in item.last_error
    assert Worker(inbox, {"bitrix24": Done()}).drain() == {"done": 6}


def test_items_settled_before_the_outage_are_not_given_back(db: Database,
                                                             clock: Clock) -> None:
    # A claim holding two groups (one per CRM): each group is settled in one transaction.
    inbox = make_inbox(db, clock)
    first = put(inbox, 1)
    second = inbox.put(source="amocrm", kind="leads", dedup_key="amo:2", body=b"x").id
    real_settle, calls = inbox.settle, []

    def settle(outcomes: list[tuple[int, str, str | None]], **kwargs: Any) -> dict[int, str]:
        calls.append(outcomes)
        if len(calls) > 1:
            raise gone()  # the database left between the first group and the second
        return real_settle(outcomes, **kwargs)

    inbox.settle = settle  # type: ignore[method-assign]
    assert Worker(inbox, {"bitrix24": Done(), "amocrm": Done()},
                  sleep=lambda _: None).drain_once() == {"done": 1, "released": 1}
    assert inbox.get(first).status == "done"  # type: ignore[union-attr]
    assert inbox.get(second).status == "pending"  # type: ignore[union-attr]


def test_release_leaves_items_another_worker_holds_alone(db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock, lease_seconds=60)
    item_id = put(inbox, 1)
    [claimed] = inbox.claim()
    clock.advance(seconds=61)  # our lease ran out; another worker claims it
    [again] = inbox.claim()
    assert claimed.id == again.id == item_id
    clock.advance(seconds=61)
    assert inbox.release([item_id], "late") == 0  # expired leases are not ours to give back
    assert inbox.get(item_id).status == "processing"  # type: ignore[union-attr]


def test_an_error_that_is_not_an_outage_is_still_a_failed_attempt(db: Database,
                                                                    clock: Clock) -> None:
    class Broken:
        def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
            raise ValueError("a bug")

    inbox = make_inbox(db, clock)
    item_id = put(inbox, 1)
    assert Worker(inbox, {"bitrix24": Broken()}).drain_once() == {"failed": 1}
    item = inbox.get(item_id)
    assert item is not None and item.attempts == 1 and item.status == "pending"
    assert item.next_attempt_at > clock.now


@pytest.fixture
def outage() -> Iterator[tuple[Proxy, str]]:
    assert POSTGRES_URL is not None
    with proxy_for(POSTGRES_URL) as proxy:
        yield proxy, proxy.url_for(POSTGRES_URL)


def select_one(db: Database) -> int:
    with db.transaction() as session:
        return session.scalar(text("SELECT 1"))


@needs_postgres
def test_an_idle_connection_is_pinged_and_replaced_before_it_is_used(
        outage: tuple[Proxy, str], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, url = outage
    db = Database(DatabaseSettings(url=url, pool_size=1))
    try:
        assert select_one(db) == 1
        proxy.cut()  # the server went away and came back while the connection sat idle
        proxy.restore()
        monkeypatch.setattr("connector.db.PING_AFTER_IDLE_S", 0.0)  # it sat long enough
        assert select_one(db) == 1  # the ping found it dead: a new connection did the work
    finally:
        db.dispose()


@needs_postgres
def test_a_connection_back_from_work_just_now_is_not_pinged_its_failure_is_an_outage(
        outage: tuple[Proxy, str]) -> None:
    proxy, url = outage
    db = Database(DatabaseSettings(url=url, pool_size=1))
    try:
        assert select_one(db) == 1
        proxy.cut()
        proxy.restore()
        with pytest.raises(OperationalError) as failed:  # no round trip spent on a ping
            select_one(db)
        assert is_unavailable(failed.value)  # answered as an outage: retried, given back
        assert select_one(db) == 1  # and the pool's connections were replaced
    finally:
        db.dispose()


def _wrapped(orig: Exception) -> OperationalError:
    return OperationalError("UPDATE contact_mirror ...", None, orig)


@pytest.mark.parametrize(("error", "away"), [
    (_wrapped(psycopg.OperationalError("server closed the connection unexpectedly")), True),
    (_wrapped(psycopg.errors.AdminShutdown("terminating connection")), True),
    (_wrapped(psycopg.errors.ConnectionFailure("connection failure")), True),
    (psycopg.OperationalError("connection refused"), True),  # a raw connection's, unwrapped
    (_wrapped(sqlite3.OperationalError("unable to open database file")), True),
    (_wrapped(psycopg.errors.DeadlockDetected("deadlock detected")), False),
    (_wrapped(psycopg.errors.QueryCanceled("canceling statement due to timeout")), False),
    (_wrapped(psycopg.errors.LockNotAvailable("could not obtain lock")), False),
    (_wrapped(sqlite3.OperationalError("no such table: referral_events")), False),
    (_wrapped(sqlite3.OperationalError("database is locked")), False),
    (psycopg.errors.DeadlockDetected("deadlock detected"), False),
], ids=["closed", "shutdown", "class-08", "raw-refused", "sqlite-file", "deadlock",
        "statement-timeout", "lock-timeout", "no-table", "sqlite-locked", "raw-deadlock"])
def test_only_a_database_that_is_away_counts_as_an_outage(error: Exception, away: bool) -> None:
    """An outage gives claims back without spending an attempt; a deadlock or a missing table
    is the work's own failure, retried with backoff until it is parked as dead."""
    assert is_unavailable(error) is away


@needs_postgres
def test_a_real_outage_gives_the_claims_back_when_postgres_answers(
        outage: tuple[Proxy, str], clock: Clock) -> None:
    proxy, url = outage
    direct = fresh_services(make_settings(Path("."), POSTGRES_URL))
    db = Database(make_settings(Path("."), url).database)
    inbox = Inbox(db, InboxSettings(), clock=clock)
    ids = [inbox.put(source="bitrix24", kind="E", dedup_key=f"k{n}", body=b"x").id
           for n in range(6)]
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # a few seconds of outage, then PostgreSQL answers again
            proxy.restore()

    try:
        worker = Worker(inbox, {"bitrix24": DatabaseGoesAway(db, proxy)}, sleep=wait)
        assert worker.drain_once() == {"released": 6}
        assert len(waits) == 3
        assert {i.id: (i.status, i.attempts) for i in direct.inbox.list()} == {
            item_id: ("pending", 0) for item_id in ids}
        assert Worker(inbox, {"bitrix24": Done()}).drain() == {"done": 6}
    finally:
        inbox.close()
        db.dispose()
        direct.close()


# -- 7: 503 with Retry-After, logged once --------------------------------------------------
def web_settings(tmp_path: Path, url: str) -> Settings:
    return make_settings(
        tmp_path, url,
        server={"admin_token": "outage-admin-token"},
        bitrix24={"enabled": True, "webhook_url": "https://acme.bitrix24.ru/rest/1/hook0001/",
                  "application_token": TOKEN, "member_id": MEMBER},
        amocrm={"enabled": True, "base_url": "https://acme.amocrm.ru",
                "long_lived_token": "long-lived", "webhook_secret": AMO_SECRET})


def test_requests_get_503_with_retry_after_and_one_log_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    services = fresh_services(web_settings(tmp_path, f"sqlite:///{tmp_path}/web.db"))
    app = create_app(services=services)
    client = app.test_client()
    real_put, real_account = services.inbox.put, services.ledger.account

    def down(*_args: object, **_kwargs: object) -> None:
        raise gone()

    monkeypatch.setattr(services.inbox, "put", down)
    monkeypatch.setattr(services.ledger, "account", down)
    answers = []
    caplog.clear()  # what the setting up logged (a new key file) is not the outage's
    with caplog.at_level(logging.WARNING):
        for n in range(60):
            answers.append(client.post("/bitrix24/events", data=event_body(entity=str(n + 1)),
                                       content_type=FORM))
            amo_body = AMO_BODY.replace("%5D=5&", f"%5D={n + 10}&")
            answers.append(client.post(f"/amocrm/webhooks/{AMO_SECRET}", data=amo_body,
                                       content_type=FORM))
        answers.append(client.get("/api/v1/accounts/bitrix24/acme.bitrix24.ru/1",
                                  headers={"Authorization": "Bearer outage-admin-token"}))
        for response in answers:
            assert response.status_code == 503, response.json
            assert response.headers["Retry-After"] == "5"
            assert response.json == {"error": "database_unavailable", "detail": (
                "the database does not answer; nothing was stored: send again later")}
        assert sum(services.inbox.depth().values()) == 0
        monkeypatch.setattr(services.inbox, "put", real_put)
        monkeypatch.setattr(services.ledger, "account", real_account)
        assert client.post("/bitrix24/events", data=event_body(),
                           content_type=FORM).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unavailable (server closed the connection "
                               "unexpectedly): answering 503 with Retry-After")
    assert lines[1].startswith("the database answers again: 121 request(s) were refused")
    assert "Traceback" not in caplog.text and TOKEN not in caplog.text


def test_a_long_outage_is_reminded_each_minute_with_a_count() -> None:
    from webhooks.outage import OutageLog

    now = [0.0]
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("webhooks.outage")
    logger.addHandler(handler)
    try:
        outages = OutageLog(clock=lambda: now[0])
        for second in range(150):
            now[0] = float(second)
            outages.refused(gone(), "POST", "/bitrix24/events")
        outages.answered()
        outages.answered()  # nothing more to say
    finally:
        logger.removeHandler(handler)
    assert len(records) == 4
    assert records[1].endswith("(and 59 like it in the last 60 s)")
    assert records[2].endswith("(and 59 like it in the last 60 s)")
    assert records[3] == ("the database answers again: 150 request(s) were refused with 503 "
                          "over 149 s")


@needs_postgres
def test_a_real_outage_never_answers_200_for_an_event_not_stored(
        outage: tuple[Proxy, str], tmp_path: Path) -> None:
    proxy, url = outage
    direct = fresh_services(web_settings(tmp_path, POSTGRES_URL))  # type: ignore[arg-type]
    services = fresh_services(web_settings(tmp_path, url))
    app: Flask = create_app(services=services)
    client = app.test_client()
    try:
        assert client.post("/bitrix24/events", data=event_body(entity="1"),
                           content_type=FORM).status_code == 200
        proxy.cut()
        statuses = [client.post("/bitrix24/events", data=event_body(entity=str(n + 1)),
                                content_type=FORM) for n in range(2, 12)]
        assert {r.status_code for r in statuses} == {503}
        assert all(r.headers["Retry-After"] == "5" for r in statuses)
        proxy.restore()
        answers = [client.post("/bitrix24/events", data=event_body(entity=str(n + 1)),
                               content_type=FORM) for n in range(12, 15)]
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert sum(direct.inbox.depth().values()) == 4  # every 200, nothing else
    finally:
        services.close()
        direct.close()


@needs_postgres
def test_after_a_restart_the_first_api_request_answers_503_and_the_next_is_served(
        outage: tuple[Proxy, str], tmp_path: Path) -> None:
    """No ping for a connection back from work within PING_AFTER_IDLE_S: the request that
    finds the server restarted fails, as an outage (503 with Retry-After, not 500), and the
    pool is replaced for the next one."""
    proxy, url = outage
    services = fresh_services(web_settings(tmp_path, url))
    client = create_app(services=services).test_client()
    auth = {"Authorization": "Bearer outage-admin-token"}
    path = "/api/v1/accounts/bitrix24/acme.bitrix24.ru/1"
    body = {"crm": "bitrix24", "portal": "acme.bitrix24.ru", "contact_id": "1"}
    try:
        assert client.post("/api/v1/adjust", headers={**auth, "Idempotency-Key": "fund"},
                           json={**body, "points": "10", "reason": "test"}).status_code == 201
        assert client.get(path, headers=auth).status_code == 200
        for pay in ("pay:1", "pay:2"):
            proxy.cut()  # the server restarted while the pooled connection sat in the pool
            proxy.restore()
            first = client.post("/api/v1/redeem", headers={**auth, "Idempotency-Key": pay},
                                json={**body, "points": "1"})
            assert first.status_code == 503, first.json
            assert first.headers["Retry-After"] == "5"
            assert first.json["error"] == "database_unavailable"
            again = client.post("/api/v1/redeem", headers={**auth, "Idempotency-Key": pay},
                                json={**body, "points": "1"})
            assert again.status_code == 201, again.json  # nothing was stored the first time
        assert client.get(path, headers=auth).json["balance"] == "8.00"
    finally:
        services.close()


# -- 8: the CLI with an unreachable database -----------------------------------------------
@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve"], ["inbox", "list"]])
def test_an_unreachable_database_is_one_line_without_the_password(
        tmp_path: Path, command: list[str]) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "postgresql://loyalty:s3cret-pw@127.0.0.1:{port}/x"\n'
                      f'[server]\nport = {free_port()}\n', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", "from connector.cli import main; main()",
         "--config", str(config), *command],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "LOYALTY_SECRET_KEY": TEST_SECRET_KEY})  # PostgreSQL needs one
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: database postgresql+psycopg://loyalty:***@127.0.0.1:{port}/x "
                           "unreachable: connection failed: ")
    assert line.endswith("Connection refused")
    assert "s3cret-pw" not in done.stderr


def test_a_job_stopped_by_an_outage_logs_one_line_without_a_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from connector.scheduler import Job, run_job

    def needs_the_database(_services: object) -> None:
        raise gone()

    services = fresh_services(make_settings(tmp_path))
    caplog.clear()  # the new key file's line
    with caplog.at_level(logging.WARNING), pytest.raises(OperationalError):
        run_job(services, Job("process_inbox", needs_the_database, 2.0, "worker"))
    [record] = caplog.records
    assert record.exc_info is None
    assert record.getMessage().startswith("job process_inbox stopped after ")
    assert record.getMessage().endswith(
        "the database was unavailable (server closed the connection unexpectedly)")
