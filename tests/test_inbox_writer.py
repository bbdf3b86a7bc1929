"""The inbox's insert path (one held driver connection): rows as the ORM would store them,
a duplicate refused without losing the connection, a dead connection replaced, no secrets in
its errors."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError

from connector.config import InboxSettings
from connector.db import Database
from connector.inbox import RECEIVED_COLUMNS, Inbox, InboxEvent
from connector.inbox_writer import CHUNK
from tests.conftest import Clock

SECRET = "auth%5Bapplication_token%5D=s3cr3t-token-value"


@pytest.fixture
def inbox(db: Database, clock: Clock) -> Iterator[Inbox]:
    inbox = Inbox(db, InboxSettings(), clock=clock)
    yield inbox
    inbox.close()


def row(clock: Clock, key: str, body: bytes = b"event=X") -> dict[str, object]:
    now = clock()
    values = {"source": "bitrix24", "kind": "ONCRMDEALUPDATE", "portal": "acme.bitrix24.ru",
              "dedup_key": key, "content_type": "application/x-www-form-urlencoded",
              "body": body, "received_at": now, "status": "pending", "attempts": 0,
              "next_attempt_at": now}
    assert set(values) == set(RECEIVED_COLUMNS)
    return values


def stored_keys(db: Database) -> set[str]:
    with db.transaction(write=False) as session:
        return set(session.scalars(select(InboxEvent.dedup_key)))


def checkouts(db: Database) -> list[object]:
    taken: list[object] = []
    event.listen(db.engine.pool, "checkout", lambda *_: taken.append(1))
    return taken


def test_rows_read_back_through_the_orm_as_written(db: Database, inbox: Inbox,
                                                   clock: Clock) -> None:
    clock.advance(seconds=0.123456)  # microseconds must survive the driver-level binding
    body = "event=ONCRMDEALUPDATE&data[FIELDS][TITLE]=Заказ №5\x00".encode()
    stored = inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key="k1", body=body,
                       content_type="application/x-www-form-urlencoded", portal="acme")
    item = inbox.get(stored.id)
    assert item is not None
    assert (item.body, item.kind, item.portal, item.status, item.attempts) == (
        body, "ONCRMDEALUPDATE", "acme", "pending", 0)
    assert item.received_at == clock() and item.received_at.tzinfo is not None
    assert item.next_attempt_at == clock()
    # Claimable like any other row: the due-time comparison sees the same stored format.
    assert [claimed.id for claimed in inbox.claim()] == [stored.id]


def test_a_group_gets_its_ids_in_order(inbox: Inbox, clock: Clock) -> None:
    count = 2 * CHUNK + 3  # more than one statement's worth, in one transaction
    ids = inbox._insert([row(clock, f"g{n}", body=str(n).encode()) for n in range(count)])
    assert len(set(ids)) == count
    bodies = [inbox.get(i).body for i in ids]  # type: ignore[union-attr]
    assert bodies == [str(n).encode() for n in range(count)]


def test_a_duplicate_stores_nothing_and_keeps_the_connection(db: Database, inbox: Inbox,
                                                            clock: Clock) -> None:
    inbox._insert([row(clock, "dup")])
    taken = checkouts(db)
    with pytest.raises(IntegrityError) as refused:
        inbox._insert([row(clock, "new-1"), row(clock, "dup", body=SECRET.encode())])
    inbox._insert([row(clock, "new-2")])
    assert taken == []  # the held connection served on: no reconnect
    assert SECRET not in str(refused.value) and "s3cr3t" not in str(refused.value)
    assert stored_keys(db) == {"dup", "new-2"}  # the refused group was rolled back whole


def test_a_lost_connection_is_replaced_once(db: Database, inbox: Inbox, clock: Clock) -> None:
    inbox._insert([row(clock, "first")])
    held = inbox._writer._connection
    assert held is not None
    if db.is_postgres:
        pid = held.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with db.engine.begin() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    else:
        held.dbapi_connection.close()  # type: ignore[union-attr]
    taken = checkouts(db)
    stored = inbox.put(source="amocrm", kind="webhook", dedup_key="after", body=b"x")
    assert len(taken) == 1  # one fresh connection, and the event stored on it
    assert not stored.duplicate and stored_keys(db) == {"first", "after"}


def test_rows_match_the_mapped_table(db: Database, inbox: Inbox, clock: Clock) -> None:
    stored = inbox.put(source="amocrm", kind="webhook", dedup_key="orm", body=b"b")
    with db.transaction(write=False) as session:
        loaded = session.get(InboxEvent, stored.id)
        assert loaded is not None
        assert (loaded.locked_until, loaded.last_error, loaded.processed_at) == (None,) * 3
        assert loaded.received_at == clock()


def test_a_put_is_committed_and_leaves_no_lock_behind(db: Database, inbox: Inbox) -> None:
    inbox.put(source="amocrm", kind="webhook", dedup_key="visible", body=b"x")
    # Seen from another connection: committed, not waiting in an open transaction.
    assert stored_keys(db) == {"visible"}
    if not db.is_postgres:
        other = sqlite3.connect(db.engine.url.database or "", timeout=0,
                                isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # fails at once if the write lock were held
            other.execute("ROLLBACK")
        finally:
            other.close()


def test_the_writers_connection_never_goes_back_to_the_pool(db: Database, clock: Clock) -> None:
    """Held apart from the pool (and in autocommit on PostgreSQL): a session after it must
    never be handed that connection, not even when an inbox is dropped without close()."""
    inbox = Inbox(db, InboxSettings(), clock=clock)
    inbox.put(source="amocrm", kind="webhook", dedup_key="held", body=b"x")
    assert db.engine.pool.checkedout() == 0  # not counted as the pool's
    held = inbox._writer._connection
    assert held is not None
    writer_connection = held.dbapi_connection
    del inbox, held
    gc.collect()
    with db.engine.connect() as connection:
        assert connection.connection.dbapi_connection is not writer_connection
        if db.is_postgres:
            assert connection.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]


def test_a_connection_that_cannot_be_cleaned_is_closed_not_left_open(
        inbox: Inbox, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox._insert([row(clock, "dup")])
    held = inbox._writer._connection
    assert held is not None
    driver = held.dbapi_connection

    def broken(_connection: object) -> bool:
        raise OSError("connection reset while rolling back")

    monkeypatch.setattr(inbox._writer, "_in_transaction", broken)
    with pytest.raises(IntegrityError):
        inbox._insert([row(clock, "dup")])
    assert inbox._writer._connection is None
    with pytest.raises(Exception, match="closed"):  # psycopg and sqlite3 both say so
        driver.execute("SELECT 1")  # type: ignore[union-attr]
