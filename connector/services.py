"""The long-lived objects one process needs, built once from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from connector.config import Settings
from connector.crm.credentials import CredentialStore
from connector.db import Database, utcnow
from connector.inbox import Inbox
from connector.ledger.engine import Ledger
from connector.program import Program


@dataclass
class Services:
    settings: Settings
    db: Database
    program: Program
    ledger: Ledger
    inbox: Inbox
    bitrix24_credentials: CredentialStore

    @classmethod
    def build(cls, settings: Settings,
              clock: Callable[[], datetime] = utcnow) -> Services:
        db = Database(settings.database)
        program = Program(settings.program)
        return cls(settings=settings, db=db, program=program,
                   ledger=Ledger(db, program, clock=clock),
                   inbox=Inbox(db, settings.inbox, clock=clock),
                   bitrix24_credentials=CredentialStore(
                       db, "bitrix24", settings.bitrix24.portal_key, clock=clock))

    def close(self) -> None:
        self.db.dispose()
