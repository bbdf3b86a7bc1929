"""One Bitrix24 connection per process: the client (its limiter on the portal's shared budget)
and the flows on it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from connector.bitrix24.automation import Bitrix24Automation
from connector.bitrix24.install import Bitrix24Installer
from connector.bitrix24.processor import Bitrix24Processor
from connector.bitrix24.reconcile import reconcile
from connector.bitrix24.tab import Bitrix24Tab
from connector.bitrix24.writeback import Bitrix24Writeback
from connector.crm.bitrix24 import Bitrix24Client
from connector.reports import ReconcileReport
from connector.services import Services


class Bitrix24Connector:
    def __init__(self, services: Services, client: Bitrix24Client | None = None) -> None:
        self.services = services
        if client is None:
            settings = services.settings.bitrix24
            limiter = services.budgets.limiter(
                "bitrix24", settings.portal_key, rate=settings.requests_per_second,
                burst=settings.burst, on_wait=services.metrics.limiter_waited("bitrix24"))
            client = Bitrix24Client(settings, credentials=services.bitrix24_credentials,
                                    limiter=limiter, metrics=services.metrics)
        self.client = client

    @cached_property
    def processor(self) -> Bitrix24Processor:
        return Bitrix24Processor(self.services, self.client)

    @cached_property
    def writeback(self) -> Bitrix24Writeback:
        return Bitrix24Writeback(self.services, self.client)

    @cached_property
    def automation(self) -> Bitrix24Automation:
        return Bitrix24Automation(self.services, self.client)

    @cached_property
    def installer(self) -> Bitrix24Installer:
        return Bitrix24Installer(self.services, self.client)

    @cached_property
    def tab(self) -> Bitrix24Tab:
        """The CRM card tab (app setup only: TabRefused 404 otherwise)."""
        return Bitrix24Tab(self.services, self.client)

    def reconcile(self, *, full: bool = False,
                  progress: Callable[[int], None] | None = None,
                  on_total: Callable[[int], None] | None = None) -> ReconcileReport:
        return reconcile(self.services, self.client, full=full, progress=progress,
                         on_total=on_total)

    def flush(self) -> dict[str, int]:
        """Write-back, then triggers: what the worker's ledger changes owe the CRM."""
        written = self.writeback.flush()
        fired = self.automation.flush()
        refused = {"contacts_refused": written.refused} if written.refused else {}
        return {"contacts_written": written.contacts_written, "triggers_sent": fired.sent,
                "triggers_skipped": fired.skipped, "triggers_failed": fired.failed, **refused}
