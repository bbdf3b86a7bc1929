"""Durable inbox of received CRM events: stored before they are acknowledged, drained later.

Statuses: pending -> processing -> done | skipped, or back to pending with a later
`next_attempt_at` after a failure, and `dead` after `max_attempts`. Only done and skipped ones
are ever deleted, `inbox.retention_days` after processing (connector.inbox_retention).
An item deferred on its CRM's credentials (revoked, not authorized) waits without spending an
attempt, and is woken as soon as the credentials are valid again (`wake_deferred`).
"""

from __future__ import annotations

import random
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    case,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from connector.config import InboxSettings
from connector.db import Database, utcnow
from connector.inbox_writer import InboxWriter
from connector.schema import Base, BigId, UTCDateTime
from connector.wakeup import Doorbell

STATUSES = ("pending", "processing", "done", "skipped", "dead")
# What `put` writes; the rest of a row is filled in by processing.
RECEIVED_COLUMNS = ("source", "kind", "portal", "dedup_key", "content_type", "body",
                    "received_at", "status", "attempts", "next_attempt_at")


class InboxEvent(Base):
    __tablename__ = "inbox_events"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES!r}", name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_inbox_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    portal: Mapped[str | None] = mapped_column(String(255))
    dedup_key: Mapped[str] = mapped_column(String(255), unique=True)
    content_type: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by `defer`, cleared by the next claim: what `wake_deferred` may make due early.
    deferred: Mapped[bool] = mapped_column(Boolean, server_default=false())


@dataclass(frozen=True)
class Stored:
    id: int
    duplicate: bool


@dataclass(frozen=True)
class InboxItem:
    id: int
    source: str
    kind: str
    portal: str | None
    dedup_key: str
    content_type: str | None
    body: bytes
    received_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None

    @classmethod
    def of(cls, row: InboxEvent) -> InboxItem:
        return cls(row.id, row.source, row.kind, row.portal, row.dedup_key, row.content_type,
                   row.body, row.received_at, row.status, row.attempts, row.next_attempt_at,
                   row.last_error)


@dataclass
class _Pending:
    """An event waiting for its write turn, then what became of it."""

    values: dict[str, Any]
    outcome: Stored | BaseException | None = None


class Inbox:

    def __init__(self, db: Database, settings: InboxSettings, clock=utcnow) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        # A claimed item whose worker died is offered again after this long.
        self.lease = timedelta(seconds=settings.lease_seconds)
        # Rung after new events are committed (or items made due now): a worker in this
        # process waits on it. Other processes hear of inserts by NOTIFY on PostgreSQL, with
        # this process's token as the payload so that its own listener can skip them.
        self.stored = Doorbell()
        self.sender = uuid.uuid4().hex
        self._writer = InboxWriter(db.engine, InboxEvent.__table__, RECEIVED_COLUMNS,
                                   key="dedup_key",
                                   notify_as=self.sender if settings.wake else None)
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def put(self, *, source: str, kind: str, dedup_key: str, body: bytes,
            content_type: str | None = None, portal: str | None = None) -> Stored:
        """Store a received event durably; a repeated dedup key stores nothing new.

        Concurrent calls share transactions (group commit): whoever takes the write turn
        inserts every event queued by then in one transaction, and each caller returns once
        its own event is committed. Under load that is one commit (SQLite's write lock, a
        PostgreSQL WAL flush) and one transaction's overhead for several events, and waiting
        callers block on a lock instead of sleeping in SQLite's busy handler while the write
        lock stands free."""
        now = self.clock()
        pending = _Pending({"source": source, "kind": kind, "portal": portal,
                            "dedup_key": dedup_key, "content_type": content_type,
                            "body": body, "received_at": now, "status": "pending",
                            "attempts": 0, "next_attempt_at": now})
        with self._queue_lock:
            self._queue.append(pending)
        with self._write_lock:
            if pending.outcome is None:  # no earlier turn took it
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._write(group)
                if any(isinstance(p.outcome, Stored) and not p.outcome.duplicate
                       for p in group):
                    self.stored.ring()
        if isinstance(pending.outcome, BaseException):
            raise pending.outcome
        assert pending.outcome is not None
        return pending.outcome

    def _write(self, group: list[_Pending]) -> None:
        try:
            if len(group) > 1:
                try:
                    ids = self._insert([p.values for p in group])
                except IntegrityError:
                    pass  # a repeated key: one by one below, so only its caller hears of it
                except Exception as exc:
                    for p in group:
                        p.outcome = exc
                    return
                else:
                    for p, new_id in zip(group, ids, strict=True):
                        p.outcome = Stored(new_id, duplicate=False)
                    return
            for p in group:
                try:
                    p.outcome = self._put_one(p.values)
                except Exception as exc:
                    p.outcome = exc
        finally:
            for p in group:  # interrupted: nobody may wait for a turn that already passed
                if p.outcome is None:
                    p.outcome = RuntimeError("the inbox write was interrupted")

    def _put_one(self, values: dict[str, Any]) -> Stored:
        try:
            return Stored(self._insert([values])[0], duplicate=False)
        except IntegrityError:
            with self.db.transaction(write=False) as session:
                existing = session.scalar(
                    select(InboxEvent.id).where(InboxEvent.dedup_key == values["dedup_key"]))
            if existing is None:
                raise
            return Stored(existing, duplicate=True)

    def _insert(self, rows: list[dict[str, Any]]) -> list[int]:
        return self._writer.insert(rows)

    def close(self) -> None:
        # After a write in progress (a request still answering at shutdown), never under it.
        with self._write_lock:
            self._writer.close()

    def claim(self, limit: int | None = None, *, source: str | None = None) -> list[InboxItem]:
        """Lease due items to this worker; concurrent workers never get the same item."""
        now = self.clock()
        limit = limit or self.settings.batch_size
        # Not durable: a claim lost with the database server is an item offered again.
        with self.db.transaction(durable=False) as session:
            query = (
                select(InboxEvent)
                .where(or_(
                    (InboxEvent.status == "pending") & (InboxEvent.next_attempt_at <= now),
                    (InboxEvent.status == "processing") & (InboxEvent.locked_until < now),
                ))
                .order_by(InboxEvent.id)
                .limit(limit)
            )
            if source is not None:
                query = query.where(InboxEvent.source == source)
            if self.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            rows = list(session.scalars(query))
            for row in rows:
                row.status = "processing"
                row.deferred = False
                row.attempts += 1
                row.locked_until = now + self.lease
            return [InboxItem.of(row) for row in rows]

    def complete(self, item_id: int, *, skipped_reason: str | None = None) -> None:
        values: dict[str, Any] = {"status": "skipped" if skipped_reason else "done",
                                  "processed_at": self.clock(), "locked_until": None,
                                  "last_error": skipped_reason}
        self._set(item_id, **values)

    def settle(self, outcomes: list[tuple[int, str, str | None]], *,
               defer_delay: timedelta) -> dict[int, str]:
        """What became of a group's items, in one transaction: (id, "done" | "skipped" |
        "defer" | "retry", detail) each, as complete, defer and fail would record them one
        by one. Returns each item's status: done, skipped, deferred, pending (to retry) or
        dead. A group settled together costs one commit, not one per item."""
        now = self.clock()
        statuses: dict[int, str] = {}
        done = [item_id for item_id, status, _ in outcomes if status == "done"]
        # Not durable: an outcome lost with the database server is an item processed again
        # (at least once, as after a worker's crash).
        with self.db.transaction(durable=False) as session:
            if done:
                result = session.execute(
                    update(InboxEvent).where(InboxEvent.id.in_(done))
                    .values(status="done", processed_at=now, locked_until=None,
                            last_error=None)
                    .execution_options(synchronize_session=False))
                if result.rowcount != len(done):
                    raise KeyError(done)
                statuses.update(dict.fromkeys(done, "done"))
            for item_id, status, detail in outcomes:
                if status == "done":
                    continue
                row = session.get(InboxEvent, item_id)
                if row is None:
                    raise KeyError(item_id)
                row.locked_until = None
                if status == "skipped":
                    row.status, row.processed_at = "skipped", now
                    row.last_error = detail or "skipped"
                elif status == "defer":
                    self._defer(row, detail or "deferred", defer_delay)
                else:
                    self._fail(row, detail or "failed")
                statuses[item_id] = "deferred" if status == "defer" else row.status
        return statuses

    def fail(self, item_id: int, error: str) -> str:
        """Record a failed attempt: retry later with backoff, or park as dead. Returns status."""
        with self.db.transaction() as session:
            row = session.get(InboxEvent, item_id)
            if row is None:
                raise KeyError(item_id)
            self._fail(row, error)
            return row.status

    def _fail(self, row: InboxEvent, error: str) -> None:
        row.last_error = error[:4000]
        row.locked_until = None
        if row.attempts >= self.settings.max_attempts:
            row.status = "dead"
        else:
            row.status = "pending"
            row.next_attempt_at = self.clock() + self.backoff(row.attempts)

    def backoff(self, attempts: int) -> timedelta:
        base = self.settings.retry_base_seconds * 2 ** max(attempts - 1, 0)
        capped = min(base, self.settings.retry_max_seconds)
        return timedelta(seconds=random.uniform(capped / 2, capped))

    def defer(self, item_id: int, error: str, delay: timedelta) -> None:
        """Put an item back without spending an attempt: the cause is outside the item (the
        CRM's credentials are revoked, the CRM is down for everyone) and will be fixed."""
        with self.db.transaction() as session:
            row = session.get(InboxEvent, item_id)
            if row is None:
                raise KeyError(item_id)
            self._defer(row, error, delay)

    def _defer(self, row: InboxEvent, error: str, delay: timedelta) -> None:
        row.status = "pending"
        row.attempts = max(row.attempts - 1, 0)
        row.locked_until = None
        row.last_error = error[:4000]
        row.next_attempt_at = self.clock() + delay
        row.deferred = True

    def wake_deferred(self, source: str, portal: str | None) -> int:
        """Make the items deferred on this CRM portal's credentials due now: call it once the
        credentials are valid again, or they wait out their delay. Returns how many woke."""
        with self.db.transaction() as session:
            result = session.execute(
                update(InboxEvent)
                .where(InboxEvent.status == "pending", InboxEvent.deferred.is_(True),
                       InboxEvent.source == source, InboxEvent.portal == portal)
                .values(next_attempt_at=self.clock()))
            woken: int = result.rowcount
        if woken:
            self.stored.ring()
        return woken

    def release(self, item_ids: list[int], error: str) -> int:
        """Give claimed items back at once, without spending an attempt: their processing
        failed because the database was away, not because of them. Only items still under a
        lease (ours: nobody else can hold a leased item) are touched. Returns how many."""
        now = self.clock()
        with self.db.transaction() as session:
            result = session.execute(
                update(InboxEvent)
                .where(InboxEvent.id.in_(item_ids), InboxEvent.status == "processing",
                       InboxEvent.locked_until > now)
                .values(status="pending", locked_until=None, next_attempt_at=now,
                        attempts=case((InboxEvent.attempts > 0, InboxEvent.attempts - 1),
                                      else_=0),
                        last_error=error[:4000])
                .execution_options(synchronize_session=False))
            return result.rowcount

    def retry(self, item_id: int) -> None:
        """Offer a dead or failed item again now (after its cause was fixed)."""
        self._set(item_id, status="pending", next_attempt_at=self.clock(), attempts=0)
        self.stored.ring()

    def retry_dead(self) -> list[int]:
        """Offer every dead item again now; returns their ids."""
        with self.db.transaction() as session:
            ids = list(session.scalars(select(InboxEvent.id).where(InboxEvent.status == "dead")
                                       .order_by(InboxEvent.id)))
            if ids:
                session.execute(update(InboxEvent).where(InboxEvent.id.in_(ids))
                                .values(status="pending", next_attempt_at=self.clock(),
                                        attempts=0))
        if ids:
            self.stored.ring()
        return ids

    def drop(self, item_id: int, reason: str) -> None:
        """Give up on an item; it stays, as skipped, with the reason and the error it had."""
        with self.db.transaction() as session:
            row = session.get(InboxEvent, item_id)
            if row is None:
                raise KeyError(item_id)
            was = f"; last error: {row.last_error}" if row.last_error else ""
            row.status = "skipped"
            row.processed_at = self.clock()
            row.locked_until = None
            row.last_error = f"dropped by admin: {reason}{was}"[:4000]

    def get(self, item_id: int) -> InboxItem | None:
        with self.db.transaction(write=False) as session:
            row = session.get(InboxEvent, item_id)
            return InboxItem.of(row) if row else None

    def list(self, status: str | None = None, limit: int = 100, *,
             source: str | None = None) -> list[InboxItem]:
        """Newest first."""
        with self.db.transaction(write=False) as session:
            query = select(InboxEvent).order_by(InboxEvent.id.desc()).limit(limit)
            if status:
                query = query.where(InboxEvent.status == status)
            if source:
                query = query.where(InboxEvent.source == source)
            return [InboxItem.of(row) for row in session.scalars(query)]

    def oldest_pending(self) -> tuple[datetime | None, datetime | None]:
        """When the oldest pending item was received, and since when the longest-waiting
        one has been due (a due item that stays pending means no worker is draining)."""
        with self.db.transaction(write=False) as session:
            received, due = session.execute(
                select(func.min(InboxEvent.received_at), func.min(InboxEvent.next_attempt_at))
                .where(InboxEvent.status == "pending")).one()
            return received, due

    def lapsed_claims(self, now: datetime) -> int:
        """Items still `processing` after their lease ended: their worker went away."""
        with self.db.transaction(write=False) as session:
            return session.scalar(
                select(func.count()).select_from(InboxEvent)
                .where(InboxEvent.status == "processing", InboxEvent.locked_until < now)) or 0

    def depth(self) -> dict[str, int]:
        with self.db.transaction(write=False) as session:
            rows = session.execute(
                select(InboxEvent.status, func.count()).group_by(InboxEvent.status))
            counts = {status: 0 for status in STATUSES}
            counts.update({status: count for status, count in rows})
            return counts

    def _set(self, item_id: int, **values: Any) -> None:
        with self.db.transaction() as session:
            result = session.execute(
                update(InboxEvent).where(InboxEvent.id == item_id).values(**values))
            if result.rowcount == 0:
                raise KeyError(item_id)
