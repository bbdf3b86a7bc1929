"""The account behind a card page, read in one transaction."""

from __future__ import annotations

from datetime import datetime

from connector.db import Database
from connector.ledger import queries
from connector.ledger.models import Account
from connector.ledger.views import AccountView, EntryView
from connector.program import Program


def read(db: Database, program: Program, account_id: int, now: datetime, *,
         entries: int) -> tuple[AccountView, list[EntryView]] | None:
    with db.transaction(write=False) as session:
        account = session.get(Account, account_id)
        if account is None:
            return None
        view = queries.account_view(session, program, account, now)
        return view, queries.history(session, account, limit=entries) if entries else []
