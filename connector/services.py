"""The long-lived objects one process needs, built once from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from connector.config import Settings
from connector.crm.credentials import CredentialStore
from connector.crm.oauth_states import OAuthStates
from connector.db import Database, utcnow
from connector.inbox import Inbox
from connector.ledger.engine import Ledger
from connector.program import Program

if TYPE_CHECKING:
    from connector.amocrm.connector import AmoCRMConnector
    from connector.bitrix24.connector import Bitrix24Connector
    from connector.card.links import CardLinks
    from connector.metrics import Metrics
    from connector.worker import Processor


@dataclass
class Services:
    settings: Settings
    db: Database
    program: Program
    ledger: Ledger
    inbox: Inbox
    bitrix24_credentials: CredentialStore
    amocrm_credentials: CredentialStore

    @classmethod
    def build(cls, settings: Settings,
              clock: Callable[[], datetime] = utcnow) -> Services:
        db = Database(settings.database)
        program = Program(settings.program)
        return cls(settings=settings, db=db, program=program,
                   ledger=Ledger(db, program, clock=clock),
                   inbox=Inbox(db, settings.inbox, clock=clock),
                   bitrix24_credentials=CredentialStore(
                       db, "bitrix24", settings.bitrix24.portal_key, clock=clock),
                   amocrm_credentials=CredentialStore(
                       db, "amocrm", settings.amocrm.portal_key, clock=clock))

    @cached_property
    def metrics(self) -> Metrics:
        """This process's counters and the values read from the database, for GET /metrics."""
        from connector.metrics import Metrics

        return Metrics(self.db, clock=self.inbox.clock)

    @cached_property
    def oauth_states(self) -> OAuthStates:
        """The OAuth authorizations this deployment started (their `state`)."""
        return OAuthStates(self.db, clock=self.inbox.clock)

    @cached_property
    def cards(self) -> CardLinks:
        """Each account's card page link: issued, rotated, found again from a token."""
        from connector.card.links import CardLinks

        return CardLinks(self.db, self.settings, clock=self.inbox.clock)

    @cached_property
    def bitrix24(self) -> Bitrix24Connector | None:
        """The Bitrix24 connection when enabled: one client (and rate limiter) per process."""
        if not self.settings.bitrix24.enabled:
            return None
        from connector.bitrix24.connector import Bitrix24Connector

        return Bitrix24Connector(self)

    @cached_property
    def amocrm(self) -> AmoCRMConnector | None:
        """The amoCRM connection when enabled: one client (and rate limiter) per process."""
        if not self.settings.amocrm.enabled:
            return None
        from connector.amocrm.connector import AmoCRMConnector

        return AmoCRMConnector(self)

    def processors(self) -> dict[str, Processor]:
        """Inbox processors by source, for the CRMs that are enabled."""
        found: dict[str, Processor] = {}
        if self.bitrix24:
            found["bitrix24"] = self.bitrix24.processor
        if self.amocrm:
            found["amocrm"] = self.amocrm.processor
        return found

    def flush_crms(self) -> dict[str, int]:
        """Write-back and automation triggers of every enabled CRM."""
        counts: dict[str, int] = {}
        for connector in (self.bitrix24, self.amocrm):
            if connector is not None:
                counts.update(connector.flush())
        return counts

    def close(self) -> None:
        try:
            self.inbox.close()
        finally:
            self.db.dispose()
