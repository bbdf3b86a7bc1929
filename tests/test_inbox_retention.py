"""Inbox retention: processed events go after `inbox.retention_days`, in batches; events still
to process, or waiting for an operator, stay whatever their age. SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from connector.db import Database
from connector.inbox import InboxEvent
from connector.inbox_retention import delete_processed
from connector.job_runs import JobRun
from connector.ledger.models import Entry
from connector.ledger.views import AccountRef
from connector.money import from_minor
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.scheduler import find_job, jobs, run_job
from connector.services import Services
from tests.conftest import Clock, fresh_services, make_settings
from tests.test_bitrix24_e2e import Harness, b24_settings, bind_events
from tests.test_inbox import make_inbox, put


def statuses(db: Database) -> dict[int, str]:
    with db.transaction(write=False) as session:
        return {id_: status for id_, status in session.execute(
            select(InboxEvent.id, InboxEvent.status))}


def test_old_processed_events_go_in_batches_the_rest_stays(db: Database, clock: Clock) -> None:
    inbox = make_inbox(db, clock, max_attempts=1)
    done = [put(inbox, n) for n in range(5)]
    skipped, dropped, dead, leased, waiting = (put(inbox, n) for n in range(5, 10))
    assert {i.id for i in inbox.claim(8)} == {*done, skipped, dropped, dead}
    for item_id in done:
        inbox.complete(item_id)
    inbox.complete(skipped, skipped_reason="deal has no contact")
    inbox.fail(dropped, "portal answered 400")
    inbox.drop(dropped, reason="a test deal")
    inbox.fail(dead, "portal answered 400")
    clock.advance(days=40)
    assert [i.id for i in inbox.claim(1)] == [leased]  # received 40 days ago, at it now
    recent = put(inbox, 10)
    assert [i.id for i in inbox.claim(2)] == [waiting, recent]
    inbox.complete(recent)  # processed today
    inbox.release([waiting], "database away")  # pending again, received 40 days ago
    before = statuses(db)
    assert before[dead] == "dead" and before[leased] == "processing"

    assert delete_processed(db, before=clock() - timedelta(days=30),
                            batch=2) == 7
    after = statuses(db)
    assert after == {dead: "dead", leased: "processing", waiting: "pending", recent: "done"}
    assert delete_processed(db, before=clock() - timedelta(days=30)) == 0  # nothing more
    # 31 days on, today's event goes too; the others stay whatever their age.
    assert delete_processed(db, before=clock.advance(days=31) - timedelta(days=30)) == 1
    assert set(statuses(db)) == {dead, leased, waiting}


def test_the_scheduled_job_keeps_the_configured_days(tmp_path: Path, database_url: str,
                                                     clock: Clock) -> None:
    """Each run: an event processed 10 days ago, then the job under `retention_days`."""
    def run(days: int, n: int) -> tuple[dict[str, int], bool]:
        settings = make_settings(tmp_path, database_url, inbox={"retention_days": days})
        services: Services = fresh_services(settings, clock=clock)
        try:
            event = put(services.inbox, n)
            services.inbox.claim(1)
            services.inbox.complete(event)
            clock.advance(days=10)
            job = find_job(settings, "inbox_retention")
            assert job is not None and job.interval_seconds == 86400
            result = run_job(services, job)
            with services.db.transaction(write=False) as session:
                recorded = session.get(JobRun, "inbox_retention")
                assert recorded is not None and recorded.last_status == "ok"
                assert recorded.last_result == result
            return result, event in statuses(services.db)
        finally:
            services.close()

    assert run(7, 1) == ({"deleted": 1}, False)
    assert run(0, 2) == ({"deleted": 0}, True)  # 0: kept forever
    assert run(30, 3) == ({"deleted": 0}, True)
    assert "inbox_retention" in [job.id for job in jobs(make_settings(tmp_path))]


def test_events_an_erasure_skipped_go_too(services: Services, clock: Clock) -> None:
    """`account erase` skips the waiting events about the contact (their bodies gone): they are
    processed as far as retention goes, not kept forever for want of a processing time."""
    from connector.privacy.erase import erase
    from tests.test_privacy import contact_event, store_event

    ref = AccountRef("bitrix24", "acme.bitrix24.ru", "101")
    services.ledger.adjust(ref, Decimal("10"), key="seed", reason="an account to erase")
    waiting = store_event(services, "bitrix24", "ONCRMCONTACTUPDATE", contact_event("101"), "c1")
    other = store_event(services, "bitrix24", "ONCRMCONTACTUPDATE", contact_event("102"), "c2")
    erase(services.db, ref, reason="GDPR", by="dpo", clock=services.ledger.clock)
    assert statuses(services.db) == {waiting: "skipped", other: "pending"}
    clock.advance(days=10)
    # One an erasure skipped before it recorded a processing time: counted from its receipt.
    earlier = store_event(services, "bitrix24", "ONCRMCONTACTUPDATE", b"", "c3")
    with services.db.transaction() as session:
        session.execute(update(InboxEvent).where(InboxEvent.id == earlier)
                        .values(status="skipped", processed_at=None))
    clock.advance(days=21)
    assert delete_processed(services.db, before=clock() - timedelta(days=30)) == 1
    assert statuses(services.db) == {earlier: "skipped", other: "pending"}
    clock.advance(days=10)
    assert delete_processed(services.db, before=clock() - timedelta(days=30)) == 1
    assert statuses(services.db) == {other: "pending"}


@pytest.fixture
def h(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
      clock: Clock) -> Iterator[Harness]:
    services = fresh_services(b24_settings(tmp_path, database_url, bind_events(portal)),
                              clock=clock)
    harness = Harness(portal, services, time, clock)
    harness.connector.installer.install()
    yield harness
    services.close()


def test_an_event_delivered_again_after_retention_counts_once(h: Harness) -> None:
    """Its inbox row (and dedup key) gone, a re-sent deal event or robot call is stored and
    processed again: the ledger's keys (per deal, per robot run) keep the amounts."""
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.won(anna, "1000.00")
    h.process()  # the contact's and the deal's events: welcome bonus and the accrual
    h.services.ledger.adjust(h.ref(anna), Decimal("400"), key="seed", reason="test funds")
    sent = [h.portal.event_body("ONCRMDEALUPDATE", deal),
            h.portal.robot_body("loyalty_accrue", f"DEAL_{deal}", {"bonus": "review"}),
            h.portal.robot_body("loyalty_redeem", f"DEAL_{deal}", {"amount": "300"})]
    for body, content_type in sent:
        assert h.post("/bitrix24/robots" if b"event_token" in body else "/bitrix24/events",
                      body, content_type) == 200
    h.process()
    balance, entries = h.balance(anna), entry_count(h.services)
    assert [e["return_values"].get("message") for e in h.portal.bizproc_events] == ["ok"] * 2
    assert balance == Decimal("100.00") + Decimal("400") + Decimal("50.00") - Decimal("300") \
        + accrued(h.services, h.ref(anna))

    h.clock.advance(days=40)
    assert delete_processed(h.services.db, before=h.clock() - timedelta(days=30)) >= 3
    assert not statuses(h.services.db)
    for body, content_type in sent:  # the CRM delivers all three again
        h.post("/bitrix24/robots" if b"event_token" in body else "/bitrix24/events",
               body, content_type)
    h.process()
    again = {item.kind: item.status for item in h.services.inbox.list()}
    # Stored anew and processed: the robots' answers were given once (their tokens used).
    assert {kind: again.get(kind) for kind in ("ONCRMDEALUPDATE", "robot:loyalty_accrue",
                                               "robot:loyalty_redeem")} == {
        "ONCRMDEALUPDATE": "done", "robot:loyalty_accrue": "skipped",
        "robot:loyalty_redeem": "skipped"}
    assert (h.balance(anna), entry_count(h.services)) == (balance, entries)


def entry_count(services: Services) -> int:
    with services.db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(Entry)) or 0


def accrued(services: Services, ref: AccountRef) -> Decimal:
    with services.db.transaction(write=False) as session:
        return sum((from_minor(e.amount) for e in session.scalars(
            select(Entry).where(Entry.kind == "accrual"))), Decimal("0"))


def test_an_event_retried_is_kept_even_when_retried_during_the_run(
        db: Database, clock: Clock) -> None:
    """`inbox retry` reopens a done event (its old processed_at stays): it is not deleted, not
    even when the retry commits between the run's read of the batch and its delete (possible
    on PostgreSQL; SQLite's writer holds its lock from the read)."""
    inbox = make_inbox(db, clock)
    reopened, raced, gone = (put(inbox, n) for n in range(3))
    inbox.claim(3)
    for item_id in (reopened, raced, gone):
        inbox.complete(item_id)
    clock.advance(days=40)
    inbox.retry(reopened)

    def retry_before_the_delete(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM INBOX_EVENTS") and \
                db.is_postgres:
            retrying = threading.Thread(target=inbox.retry, args=(raced,))
            retrying.start()
            retrying.join(timeout=10)
            assert not retrying.is_alive()

    if not db.is_postgres:
        inbox.retry(raced)
    event.listen(db.engine, "before_cursor_execute", retry_before_the_delete)
    try:
        assert delete_processed(db, before=clock() - timedelta(days=30)) == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", retry_before_the_delete)
    assert statuses(db) == {reopened: "pending", raced: "pending"}
