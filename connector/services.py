"""The long-lived objects one process needs, built once from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from connector.config import Settings
from connector.crm.budget import Budgets
from connector.crm.credentials import CredentialStore
from connector.crm.oauth_states import OAuthStates
from connector.db import Database, utcnow
from connector.inbox import Inbox
from connector.ledger.engine import Ledger
from connector.program import Program
from connector.sealing import Sealer, key_source

if TYPE_CHECKING:
    from connector.amocrm.connector import AmoCRMConnector
    from connector.bitrix24.connector import Bitrix24Connector
    from connector.card.links import CardLinks
    from connector.metrics import Metrics
    from connector.nps.answers import Answers
    from connector.rewards.catalogue import Catalogue
    from connector.rewards.claims import Claims
    from connector.worker import Processor


@dataclass
class Services:
    settings: Settings
    db: Database
    program: Program
    ledger: Ledger
    inbox: Inbox
    sealer: Sealer
    bitrix24_credentials: CredentialStore
    amocrm_credentials: CredentialStore
    budgets: Budgets

    @classmethod
    def build(cls, settings: Settings,
              clock: Callable[[], datetime] = utcnow) -> Services:
        db = Database(settings.database)
        sealer = Sealer(key_source(settings))  # refuses PostgreSQL without a key
        program = Program(settings.program)
        return cls(settings=settings, db=db, program=program,
                   ledger=Ledger(db, program, clock=clock),
                   inbox=Inbox(db, settings.inbox, clock=clock), sealer=sealer,
                   bitrix24_credentials=CredentialStore(
                       db, "bitrix24", settings.bitrix24.portal_key, sealer, clock=clock),
                   amocrm_credentials=CredentialStore(
                       db, "amocrm", settings.amocrm.portal_key, sealer, clock=clock),
                   budgets=Budgets(settings.limits, db))

    def migrate(self) -> None:
        """Make the key on first start (SQLite), then apply the migrations, which seal any
        token still stored in clear."""
        self.sealer.ensure_key()
        self.db.upgrade(sealer=self.sealer)

    @cached_property
    def metrics(self) -> Metrics:
        """This process's counters and the values read from the database, for GET /metrics."""
        from connector.metrics import Metrics

        return Metrics(self.db, clock=self.inbox.clock, program=self.settings.program)

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
    def rewards(self) -> Catalogue:
        """The rewards catalogue, [[program.rewards]] brought into the database on first use."""
        from connector.rewards.catalogue import Catalogue

        return Catalogue(self.db, self.settings.program, clock=self.ledger.clock)

    @cached_property
    def claims(self) -> Claims:
        """Claiming rewards for points, handing them over, cancelling."""
        from connector.rewards.claims import Claims

        return Claims(self.db, self.program, self.rewards, clock=self.ledger.clock)

    @cached_property
    def nps(self) -> Answers:
        """NPS answers from every channel, and the bonus for answering ([program.nps])."""
        from connector.nps.answers import Answers

        return Answers(self.db, self.ledger, self.settings.program.nps,
                       self.settings.program.zone, clock=self.ledger.clock)

    @cached_property
    def bitrix24(self) -> Bitrix24Connector | None:
        """The Bitrix24 connection when enabled: one client per process, its limiter drawing
        on the portal's budget shared by every process ([limits])."""
        if not self.settings.bitrix24.enabled:
            return None
        from connector.bitrix24.connector import Bitrix24Connector

        return Bitrix24Connector(self)

    @cached_property
    def amocrm(self) -> AmoCRMConnector | None:
        """The amoCRM connection when enabled: one client per process, its limiter drawing
        on the account's budget shared by every process ([limits])."""
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
            try:
                self.budgets.close()
            finally:
                self.db.dispose()
