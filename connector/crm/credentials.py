"""OAuth credentials per CRM portal, kept in the database.

A refresh happens under the credential row's lock (SELECT ... FOR UPDATE on PostgreSQL, the
write lock on SQLite): the first process refreshes and commits the new pair before anyone uses
it; the others find a newer token than the one that failed and use that instead. amoCRM refresh
tokens are single-use, so two processes must never both spend one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.crm.models import Credential
from connector.db import Database, utcnow
from connector.errors import CRMAuthError


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    endpoint: str | None = None
    member_id: str | None = None
    application_token: str | None = None

    def expiring(self, now: datetime, margin: timedelta = timedelta(seconds=60)) -> bool:
        return self.expires_at is not None and self.expires_at - margin <= now

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return f"Tokens(expires_at={self.expires_at!r}, endpoint={self.endpoint!r})"


Refresher = Callable[[str], Tokens]


class CredentialStore:
    def __init__(self, db: Database, crm: str, portal: str,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.crm = crm
        self.portal = portal
        self.clock = clock

    def _row(self, session: Session, *, lock: bool = False) -> Credential | None:
        query = select(Credential).where(Credential.crm == self.crm,
                                         Credential.portal == self.portal)
        return session.scalar(query.with_for_update() if lock else query)

    def load(self) -> Tokens | None:
        """The active tokens, or None when never installed; raises if revoked."""
        with self.db.transaction(write=False) as session:
            row = self._row(session)
            if row is None or row.access_token is None:
                return None
            if row.status == "revoked":
                raise CRMAuthError(f"{self.crm} {self.portal}: {row.last_error or 'revoked'}; "
                                   f"reinstall or re-authorize the integration",
                                   code="revoked")
            return _tokens(row)

    def save(self, tokens: Tokens, **extra: Any) -> None:
        with self.db.transaction() as session:
            row = self._row(session, lock=True)
            if row is None:
                row = Credential(crm=self.crm, portal=self.portal)
                session.add(row)
            _apply(row, tokens, self.clock())
            for name, value in extra.items():
                setattr(row, name, value)

    def application_token(self) -> str | None:
        with self.db.transaction(write=False) as session:
            row = self._row(session)
            return row.application_token if row else None

    def refresh(self, failed_access_token: str | None, refresher: Refresher) -> Tokens:
        """Refresh once across all processes; returns the tokens to use now."""
        with self.db.transaction() as session:
            row = self._row(session, lock=True)
            if row is None or row.refresh_token is None:
                raise CRMAuthError(f"{self.crm} {self.portal}: no refresh token stored; "
                                   "install or authorize the integration", code="no_token")
            if row.status == "revoked":
                raise CRMAuthError(f"{self.crm} {self.portal}: {row.last_error}", code="revoked")
            current = _tokens(row)
            if row.access_token != failed_access_token and not current.expiring(self.clock()):
                return current  # another process refreshed while we waited for the lock
            try:
                fresh = refresher(row.refresh_token)
            except CRMAuthError as exc:
                row.status = "revoked"
                row.last_error = exc.detail
                row.updated_at = self.clock()
                session.commit()
                raise
            _apply(row, fresh, self.clock())
            return fresh

    def revoke(self, reason: str) -> None:
        with self.db.transaction() as session:
            row = self._row(session, lock=True)
            if row is not None:
                row.status = "revoked"
                row.last_error = reason
                row.updated_at = self.clock()

    def status(self) -> tuple[str, str | None] | None:
        """(status, last error) for doctor and /healthz; None when never installed."""
        with self.db.transaction(write=False) as session:
            row = self._row(session)
            return (row.status, row.last_error) if row else None


def _tokens(row: Credential) -> Tokens:
    return Tokens(access_token=row.access_token or "", refresh_token=row.refresh_token,
                  expires_at=row.expires_at, endpoint=row.endpoint, member_id=row.member_id,
                  application_token=row.application_token)


def _apply(row: Credential, tokens: Tokens, now: datetime) -> None:
    row.access_token = tokens.access_token
    row.refresh_token = tokens.refresh_token or row.refresh_token
    row.expires_at = tokens.expires_at
    row.endpoint = tokens.endpoint or row.endpoint
    row.member_id = tokens.member_id or row.member_id
    row.application_token = tokens.application_token or row.application_token
    row.status = "active"
    row.last_error = None
    row.updated_at = now
