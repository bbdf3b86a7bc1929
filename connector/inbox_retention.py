"""Inbox retention: events processed (`done`, `skipped`, dropped ones too) are deleted
`inbox.retention_days` after they were processed; 0 keeps them forever.

Only those: `pending` and `processing` events are still to be processed, and `dead` ones wait
for an operator (`inbox retry`, `inbox drop`), so they are never touched. Nothing refers to
an inbox row: an entry keeps the record it came from itself (`entries.source_data`) and names
its deal or lead in `source`, and a CRM that delivers an event again months later is kept from
counting it twice by the ledger's idempotency keys, not by the inbox's dedup key.

Rows go in batches, each its own short transaction, so the worker storing and claiming
events (and SQLite's single writer) waits for one batch at most, never for the whole run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from connector.db import Database
from connector.inbox import InboxEvent

PROCESSED = ("done", "skipped")
# Events an erasure skipped before it recorded when have no processing time: from receipt.
processed_at = func.coalesce(InboxEvent.processed_at, InboxEvent.received_at)
BATCH = 1000


def delete_processed(db: Database, *, before: datetime, batch: int = BATCH) -> int:
    """Delete the events processed before `before`, oldest id first; returns how many."""
    deleted, after = 0, 0
    while True:
        with db.transaction() as session:
            ids = list(session.scalars(
                select(InboxEvent.id)
                .where(InboxEvent.id > after, InboxEvent.status.in_(PROCESSED),
                       processed_at < before)
                .order_by(InboxEvent.id).limit(batch)))
            if not ids:
                return deleted
            # The conditions again: `inbox retry` may have made one pending since the read.
            result = session.execute(
                delete(InboxEvent)
                .where(InboxEvent.id.in_(ids), InboxEvent.status.in_(PROCESSED),
                       processed_at < before)
                .execution_options(synchronize_session=False))
            deleted += result.rowcount  # type: ignore[attr-defined]
        if len(ids) < batch:
            return deleted
        after = ids[-1]


def cutoff(now: datetime, retention_days: int) -> datetime | None:
    """Events processed before this are deleted; None when they are kept forever."""
    return now - timedelta(days=retention_days) if retention_days > 0 else None
