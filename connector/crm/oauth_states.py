"""The `state` of each OAuth authorization the connector starts: issued with the link, taken
back once by the callback.

Only a SHA-256 of the state is stored (it is 256 random bits, so a plain hash is enough to make
a leaked row useless). Taking a state back is one DELETE: of two callbacks carrying the same
state, on SQLite or PostgreSQL, exactly one deletes the row and passes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete

from connector.crm.models import OAuthState
from connector.db import Database, utcnow

# Long enough to open the printed link, sign in to the CRM and allow access; short enough
# that a link found later in a terminal's scrollback or a shared screen is worthless.
LIFETIME = timedelta(minutes=30)


class OAuthStates:
    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    def issue(self, crm: str, portal: str) -> str:
        """A fresh state for one authorization of this portal; expired ones are removed."""
        state = secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.transaction() as session:
            session.execute(delete(OAuthState).where(OAuthState.expires_at <= now))
            session.add(OAuthState(crm=crm, portal=portal, state_hash=_hash(state),
                                   created_at=now, expires_at=now + LIFETIME))
        return state

    def consume(self, crm: str, portal: str, state: str) -> bool:
        """True once for a state issued for this portal and not expired; False otherwise
        (unknown, expired, already used, or issued for another CRM or portal)."""
        with self.db.transaction() as session:
            result = session.execute(delete(OAuthState).where(
                OAuthState.state_hash == _hash(state), OAuthState.crm == crm,
                OAuthState.portal == portal, OAuthState.expires_at > self.clock()))
            return result.rowcount == 1


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()
