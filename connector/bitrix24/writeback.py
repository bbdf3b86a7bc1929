"""Write balances, tiers and expiry into contact user fields: only what changed, coalesced per
contact (a thousand accruals are one write), 50 `crm.contact.update` per `batch` call."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import closing
from datetime import datetime, timedelta

from connector import mirror
from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from connector.ledger.views import AccountView
from connector.mirror import Dirty
from connector.reports import WritebackReport
from connector.rewards.perks import perks_text
from connector.services import Services
from mappings import bitrix24 as b24

log = logging.getLogger(__name__)
# What crm.contact.update answers, with an empty error code, for a contact it can never take
# (crm-contact-update.md, crm-contact-get.md): "Contact is not found" / "Not found" for one
# deleted or never there, "ID is not defined or invalid." for an id that is no CRM id.
REFUSED_FOR_GOOD = ("not found", "id is not defined or invalid")


def refused_for_good(error: dict[str, str]) -> bool:
    description = str(error.get("error_description", "")).lower()
    return not error.get("error") and any(text in description for text in REFUSED_FOR_GOOD)


class Bitrix24Writeback:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.bitrix24
        self.portal = self.settings.portal_key

    def wanted(self, account_ids: list[int], now: datetime,
               known: Mapping[int, AccountView] | None = None) -> dict[int, dict[str, str]]:
        card_urls = self.services.cards.urls(account_ids)
        return mirror.wanted(
            self.services.db, self.services.program, account_ids, now,
            known=known, render=lambda view, expiring: b24.contact_values(
                self.settings.fields, balance=view.balance, available=view.available,
                tier=view.tier,
                discount=view.discount_percent, expiring_points=view.next_expiry_points,
                expiring_date=expiring,
                segment=self.services.settings.rfm.label(view.segment), card=view.card_number,
                card_url=card_urls.get(view.id), referral_code=view.referral_code,
                perks=perks_text(self.services.settings.program, view.tier)))

    def flush(self, *, limit: int = 5000) -> WritebackReport:
        """Write the dirty contacts a batch at a time; each batch's contacts are claimed, so
        other workers flushing at once write other contacts (mirror.claimed_batches)."""
        report = WritebackReport()
        calls_before = self.client.calls
        settled: set[int] = set()  # marked written or refused: no claim left to release
        batches = mirror.claimed_batches(
            self.services.db, "bitrix24", self.portal, size=BATCH_LIMIT, limit=limit,
            clock=self.services.ledger.clock,
            changes=lambda dirty: self._changes(dirty, report, settled),
            hold=timedelta(seconds=self.services.settings.inbox.lease_seconds),
            settled=settled, program=self.services.program)
        with closing(batches):
            for batch in batches:
                self._send(batch, report, settled)
        report.calls = self.client.calls - calls_before
        return report

    def _changes(self, dirty: list[Dirty], report: WritebackReport, settled: set[int]
                 ) -> list[tuple[Dirty, dict[str, str]]]:
        report.accounts += len(dirty)
        now = self.services.ledger.clock()
        wanted = self.wanted([d.account_id for d in dirty], now,
                             known={d.account_id: d.view for d in dirty if d.view is not None})
        to_send: list[tuple[Dirty, dict[str, str]]] = []
        unchanged: list[tuple[Dirty, dict[str, str]]] = []
        for item in dirty:
            changes = b24.changed_values(wanted[item.account_id], item.written)
            (to_send if changes else unchanged).append((item, changes))
        report.unchanged += len(unchanged)
        mirror.mark_all_written(self.services.db, unchanged, now, settled=settled)
        return to_send

    def _send(self, batch: list[tuple[Dirty, dict[str, str]]], report: WritebackReport,
              settled: set[int]) -> None:
        result = self.client.batch({
            f"c{item.account_id}": ("crm.contact.update", {
                "id": item.contact_id, "fields": changes,
                "params": {"REGISTER_SONET_EVENT": "N"}})
            for item, changes in batch})
        now = self.services.ledger.clock()
        written = [(item, changes) for item, changes in batch
                   if f"c{item.account_id}" not in result.errors]
        mirror.mark_all_written(self.services.db, written, now, settled=settled)
        report.contacts_written += len(written)
        for item, _ in batch:
            error = result.errors.get(f"c{item.account_id}")
            if error is None:
                continue
            if refused_for_good(error):
                # Once: it stays refused, and unsent, until the contact changes.
                detail = f"{error.get('error_description')}"
                log.warning("crm.contact.update %s refused for good: %s; not sent again "
                            "until the contact changes", item.contact_id, detail)
                mirror.refuse(self.services.db, item, detail, now, settled=settled)
                report.refused += 1
            else:
                log.warning("crm.contact.update %s failed: %s", item.contact_id, error)
                report.failed += 1
