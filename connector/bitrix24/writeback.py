"""Write balances, tiers and expiry into contact user fields: only what changed, coalesced per
contact (a thousand accruals are one write), 50 `crm.contact.update` per `batch` call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from connector.bitrix24.fetch import is_not_found
from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from connector.crm.models import ContactMirror
from connector.ledger import queries
from connector.ledger.models import Account
from connector.services import Services
from mappings import bitrix24 as b24

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dirty:
    account_id: int
    contact_id: str
    version: int
    written: dict[str, Any]


@dataclass
class WritebackReport:
    accounts: int = 0
    contacts_written: int = 0
    unchanged: int = 0
    failed: int = 0
    calls: int = 0


class Bitrix24Writeback:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.bitrix24
        self.portal = self.settings.portal_key

    def dirty(self, limit: int) -> list[Dirty]:
        """Accounts changed since they were last written."""
        with self.services.db.transaction(write=False) as session:
            rows = session.execute(
                select(Account.id, Account.contact_id, Account.version, ContactMirror.values)
                .outerjoin(ContactMirror, ContactMirror.account_id == Account.id)
                .where(Account.crm == "bitrix24", Account.portal == self.portal,
                       Account.version > func.coalesce(ContactMirror.written_version, 0))
                .order_by(Account.id).limit(limit))
            return [Dirty(a, c, v, dict(w or {})) for a, c, v, w in rows]

    def wanted(self, account_ids: list[int], now: datetime) -> dict[int, dict[str, str]]:
        program = self.services.program
        values = {}
        with self.services.db.transaction(write=False) as session:
            for account in session.scalars(select(Account).where(Account.id.in_(account_ids))):
                view = queries.account_view(session, program, account, now)
                expiring = view.next_expiry_at.astimezone(program.zone).date() \
                    if view.next_expiry_at else None
                values[account.id] = b24.contact_values(
                    self.settings.fields, balance=view.balance, tier=view.tier,
                    discount=view.discount_percent, expiring_points=view.next_expiry_points,
                    expiring_date=expiring, segment=None, card=view.card_number)
        return values

    def flush(self, *, limit: int = 5000) -> WritebackReport:
        report = WritebackReport()
        calls_before = self.client.calls
        dirty = self.dirty(limit)
        report.accounts = len(dirty)
        wanted = self.wanted([d.account_id for d in dirty], self.services.ledger.clock())
        to_send: list[tuple[Dirty, dict[str, str]]] = []
        for item in dirty:
            changes = b24.changed_values(wanted[item.account_id], item.written)
            if changes:
                to_send.append((item, changes))
            else:
                self._written(item, {})
                report.unchanged += 1
        for start in range(0, len(to_send), BATCH_LIMIT):
            chunk = to_send[start:start + BATCH_LIMIT]
            result = self.client.batch({
                f"c{item.account_id}": ("crm.contact.update", {
                    "id": item.contact_id, "fields": changes,
                    "params": {"REGISTER_SONET_EVENT": "N"}})
                for item, changes in chunk})
            for item, changes in chunk:
                error = result.errors.get(f"c{item.account_id}")
                if error is None:
                    self._written(item, changes)
                    report.contacts_written += 1
                elif is_not_found(error):
                    self._written(item, {})  # the contact is gone; nothing to show
                    report.failed += 1
                else:
                    log.warning("crm.contact.update %s failed: %s", item.contact_id, error)
                    report.failed += 1
        report.calls = self.client.calls - calls_before
        return report

    def _written(self, item: Dirty, changes: dict[str, str]) -> None:
        with self.services.db.transaction() as session:
            row = session.get(ContactMirror, item.account_id, with_for_update=True)
            if row is None:
                row = ContactMirror(account_id=item.account_id, written_version=0, values={})
                session.add(row)
            row.values = {**(row.values or {}), **changes}
            row.written_version = max(row.written_version or 0, item.version)
            row.written_at = self.services.ledger.clock()
