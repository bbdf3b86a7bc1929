"""Sync cursors: how far each reconcile got, never past the moment that sync started."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from connector.crm.models import SyncCursor
from connector.db import Database, utcnow


def load(db: Database, crm: str, portal: str, name: str) -> str | None:
    with db.transaction(write=False) as session:
        return session.scalar(select(SyncCursor.value).where(
            SyncCursor.crm == crm, SyncCursor.portal == portal, SyncCursor.name == name))


def save(db: Database, crm: str, portal: str, name: str, value: str) -> None:
    with db.transaction() as session:
        row = session.scalar(select(SyncCursor).where(
            SyncCursor.crm == crm, SyncCursor.portal == portal, SyncCursor.name == name)
            .with_for_update())
        if row is None:
            session.add(SyncCursor(crm=crm, portal=portal, name=name, value=value,
                                   updated_at=utcnow()))
        else:
            row.value = value
            row.updated_at = utcnow()


def capped(seen: datetime | None, started: datetime) -> datetime:
    """The cursor to store: the newest change seen, but never past the sync's start, so
    anything modified while the sync ran is read again next time."""
    return min(seen, started) if seen is not None else started
