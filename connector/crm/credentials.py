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
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.crm.models import Credential
from connector.db import Database, utcnow
from connector.errors import CRMAuthError, SealError
from connector.sealing import Sealer


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
    def __init__(self, db: Database, crm: str, portal: str, sealer: Sealer,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.crm = crm
        self.portal = portal
        self.sealer = sealer
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
            return _tokens(row, self._opened(row))

    def save(self, tokens: Tokens, **extra: Any) -> None:
        with self.db.transaction() as session:
            row = self._row(session, lock=True)
            if row is None:
                row = Credential(crm=self.crm, portal=self.portal)
                session.add(row)
            _apply(row, tokens, self.clock(), self.sealer)
            for name, value in extra.items():
                setattr(row, name, value)

    def application_token(self) -> str | None:
        with self.db.transaction(write=False) as session:
            row = self._row(session)
            # Asked per received event when no token is configured: open this one alone.
            return self._open(row.application_token) if row else None

    def refresh(self, failed_access_token: str | None, refresher: Refresher) -> Tokens:
        """Refresh once across all processes; returns the tokens to use now."""
        with self.db.transaction() as session:
            row = self._row(session, lock=True)
            if row is None or row.refresh_token is None:
                raise CRMAuthError(f"{self.crm} {self.portal}: no refresh token stored; "
                                   "install or authorize the integration", code="no_token")
            if row.status == "revoked":
                raise CRMAuthError(f"{self.crm} {self.portal}: {row.last_error}", code="revoked")
            opened = self._opened(row)
            current = _tokens(row, opened)
            if current.access_token != failed_access_token \
                    and not current.expiring(self.clock()):
                return current  # another process refreshed while we waited for the lock
            try:
                fresh = refresher(opened.refresh_token or "")
            except CRMAuthError as exc:
                row.status = "revoked"
                row.last_error = exc.detail
                row.updated_at = self.clock()
                session.commit()
                raise
            _apply(row, fresh, self.clock(), self.sealer)
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

    def _opened(self, row: Credential) -> Opened:
        return Opened(*(self._open(getattr(row, column)) for column in Opened._fields))

    def _open(self, sealed: str | None) -> str | None:
        """A token in clear; CRMAuthError when the key at hand cannot open it (the CRM calls
        stop and received events wait, as with revoked credentials)."""
        try:
            return self.sealer.open(sealed)
        except SealError as exc:
            raise CRMAuthError(f"{self.crm} {self.portal}: stored tokens cannot be read: {exc}; "
                               "restore the key (see README, Security), or re-authorize the "
                               "integration", code="unreadable") from None


class Opened(NamedTuple):
    """The sealed columns of a Credential row, opened."""

    access_token: str | None
    refresh_token: str | None
    application_token: str | None


def _tokens(row: Credential, opened: Opened) -> Tokens:
    return Tokens(access_token=opened.access_token or "", refresh_token=opened.refresh_token,
                  expires_at=row.expires_at, endpoint=row.endpoint, member_id=row.member_id,
                  application_token=opened.application_token)


def _apply(row: Credential, tokens: Tokens, now: datetime, sealer: Sealer) -> None:
    # A token left as it was stays sealed as it was: it is not opened to be written back.
    row.access_token = sealer.seal(tokens.access_token)
    row.refresh_token = sealer.seal(tokens.refresh_token) or row.refresh_token
    row.expires_at = tokens.expires_at
    row.endpoint = tokens.endpoint or row.endpoint
    row.member_id = tokens.member_id or row.member_id
    row.application_token = sealer.seal(tokens.application_token) or row.application_token
    row.status = "active"
    row.last_error = None
    row.updated_at = now
