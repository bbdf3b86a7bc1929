"""One amoCRM connection per process: the client (and its limiter) and the flows on it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from connector.amocrm.automation import AmoCRMAutomation
from connector.amocrm.install import AmoCRMInstaller
from connector.amocrm.processor import AmoCRMProcessor
from connector.amocrm.reconcile import reconcile
from connector.amocrm.writeback import AmoCRMWriteback
from connector.crm.amocrm import AmoCRMClient
from connector.reports import ReconcileReport
from connector.services import Services


class AmoCRMConnector:
    def __init__(self, services: Services, client: AmoCRMClient | None = None) -> None:
        self.services = services
        self.client = client or AmoCRMClient(services.settings.amocrm,
                                             credentials=services.amocrm_credentials,
                                             metrics=services.metrics)

    @cached_property
    def processor(self) -> AmoCRMProcessor:
        return AmoCRMProcessor(self.services, self.client)

    @cached_property
    def writeback(self) -> AmoCRMWriteback:
        return AmoCRMWriteback(self.services, self.client)

    @cached_property
    def installer(self) -> AmoCRMInstaller:
        return AmoCRMInstaller(self.services, self.client)

    def reconcile(self, *, full: bool = False,
                  progress: Callable[[int], None] | None = None) -> ReconcileReport:
        return reconcile(self.services, self.processor, full=full, progress=progress)

    @cached_property
    def automation(self) -> AmoCRMAutomation:
        return AmoCRMAutomation(self.services, self.client)

    def flush(self) -> dict[str, int]:
        """Write-back, then triggers: what the worker's ledger changes owe the account."""
        written = self.writeback.flush()
        fired = self.automation.flush()
        refused = {"amocrm_contacts_refused": written.refused} if written.refused else {}
        return {"amocrm_contacts_written": written.contacts_written,
                "amocrm_triggers_sent": fired.sent, "amocrm_triggers_failed": fired.failed,
                **refused}
