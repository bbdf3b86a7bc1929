"""Write balances, tiers and expiry into contact custom fields (by field code): only what
changed, coalesced per contact, `write_batch` contacts per PATCH /api/v4/contacts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

from connector import mirror
from connector.crm.amocrm import AmoCRMClient
from connector.errors import FatalCRMError
from connector.ledger.views import AccountView
from connector.mirror import Dirty
from connector.reports import WritebackReport
from connector.rewards.perks import perks_text
from connector.services import Services
from mappings import amocrm as amo

log = logging.getLogger(__name__)
Chunk = list[tuple[Dirty, dict[str, str]]]


def refused_ids(body: Any) -> dict[int, str]:
    """Which contacts of a refused PATCH amoCRM can never take, by their place in the sent
    list: a 400 lists `validation-errors` per item (`request_id` is its index), and an error
    on the item's `id` means no such contact (deleted, or never in this account)."""
    found: dict[int, str] = {}
    if not isinstance(body, dict) or not isinstance(body.get("validation-errors"), list):
        return found
    for entry in body["validation-errors"]:
        if not isinstance(entry, dict) or not str(entry.get("request_id", "")).isdigit():
            continue
        for error in entry.get("errors") or []:
            if isinstance(error, dict) and error.get("path") == "id":
                found[int(entry["request_id"])] = (f"{error.get('code', '')}: "
                                                   f"{error.get('detail', '')}".strip(": "))
    return found


class AmoCRMWriteback:
    def __init__(self, services: Services, client: AmoCRMClient) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.amocrm
        self.portal = self.settings.portal_key

    def wanted(self, account_ids: list[int], now: datetime,
               known: Mapping[int, AccountView] | None = None) -> dict[int, dict[str, str]]:
        card_urls = self.services.cards.urls(account_ids)
        return mirror.wanted(
            self.services.db, self.services.program, account_ids, now,
            known=known, render=lambda view, expiring: amo.contact_values(
                self.settings.fields, balance=view.balance, available=view.available,
                tier=view.tier,
                discount=view.discount_percent, expiring_points=view.next_expiry_points,
                expiring_date=expiring,
                segment=self.services.settings.rfm.label(view.segment), card=view.card_number,
                card_url=card_urls.get(view.id), zone=self.services.program.zone,
                referral_code=view.referral_code,
                perks=perks_text(self.services.settings.program, view.tier)))

    def flush(self, *, limit: int = 5000) -> WritebackReport:
        """Write the dirty contacts a PATCH at a time; each PATCH's contacts are claimed, so
        other workers flushing at once write other contacts (mirror.claimed_batches)."""
        report = WritebackReport()
        calls_before = self.client.calls
        now = self.services.ledger.clock()
        settled: set[int] = set()  # marked written or refused: no claim left to release
        batches = mirror.claimed_batches(
            self.services.db, "amocrm", self.portal, size=self.settings.write_batch,
            limit=limit, clock=self.services.ledger.clock,
            changes=lambda dirty: self._changes(dirty, now, report, settled),
            hold=timedelta(seconds=self.services.settings.inbox.lease_seconds),
            settled=settled, program=self.services.program)
        with closing(batches):
            for batch in batches:
                self._send(batch, now, report, settled)
        report.calls = self.client.calls - calls_before
        return report

    def _changes(self, dirty: list[Dirty], now: datetime, report: WritebackReport,
                 settled: set[int]) -> list[tuple[Dirty, dict[str, str]]]:
        report.accounts += len(dirty)
        wanted = self.wanted([d.account_id for d in dirty], now,
                             known={d.account_id: d.view for d in dirty if d.view is not None})
        to_send: list[tuple[Dirty, dict[str, str]]] = []
        unchanged: list[tuple[Dirty, dict[str, str]]] = []
        for item in dirty:
            changes = amo.changed_values(wanted[item.account_id], item.written)
            (to_send if changes else unchanged).append((item, changes))
        report.unchanged += len(unchanged)
        mirror.mark_all_written(self.services.db, unchanged, now, settled=settled)
        return to_send

    def _send(self, chunk: Chunk, now: datetime, report: WritebackReport,
              settled: set[int]) -> None:
        while chunk:
            try:
                self.client.request("PATCH", "/api/v4/contacts", json=[
                    {"id": int(item.contact_id),
                     "custom_fields_values": amo.custom_fields_values(changes)}
                    for item, changes in chunk])
            except FatalCRMError as exc:
                refused = refused_ids(exc.body)
                if not refused or not set(refused) <= set(range(len(chunk))):
                    # A refused batch (a missing field) is not sent again and again every
                    # few seconds: it waits for the account's next change.
                    log.warning("PATCH /api/v4/contacts refused %d contacts: %s",
                                len(chunk), exc)
                    mirror.mark_all_written(self.services.db, [(item, {}) for item, _ in chunk],
                                            now, settled=settled)
                    report.failed += len(chunk)
                    return
                # Contacts it can never take are recorded once and left out; the rest of
                # the batch (refused with them, as a whole) goes again at once.
                for index, error in refused.items():
                    item = chunk[index][0]
                    log.warning("PATCH /api/v4/contacts: contact %s refused for good: %s; "
                                "not sent again until the contact changes",
                                item.contact_id, error)
                    mirror.refuse(self.services.db, item, error, now, settled=settled)
                    report.refused += 1
                chunk = [pair for index, pair in enumerate(chunk) if index not in refused]
                continue
            mirror.mark_all_written(self.services.db, chunk, now, settled=settled)
            report.contacts_written += len(chunk)
            return
