"""Fire marketing's automation triggers (`crm.automation.trigger.execute`), once each.

Triggers exist on deals, not contacts, so a trigger runs on the deal that caused it, else on
the contact's most recent deal. A contact with no deal cannot run a trigger: the event is
recorded as skipped with that reason, and (if `bitrix24.comment_when_no_deal`) a timeline
comment on the contact tells the manager what happened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from connector import mirror
from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from connector.crm.models import TriggerEvent
from connector.errors import FatalCRMError
from connector.ledger.models import Account
from connector.services import Services
from connector.triggers import NAMES

log = logging.getLogger(__name__)
DEAL = 2  # OWNER_TYPE_ID of deals (crm.enum.ownertype)


@dataclass
class TriggerReport:
    sent: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Due:
    id: int
    account_id: int
    contact_id: str
    code: str
    deal_id: str | None


class Bitrix24Automation:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.bitrix24
        self.portal = self.settings.portal_key

    def due(self, limit: int) -> list[Due]:
        with self.services.db.transaction(write=False) as session:
            rows = session.execute(
                select(TriggerEvent.id, TriggerEvent.account_id, Account.contact_id,
                       TriggerEvent.code, TriggerEvent.deal_id)
                .join(Account, Account.id == TriggerEvent.account_id)
                .where(TriggerEvent.status == "pending", Account.crm == "bitrix24",
                       Account.portal == self.portal)
                .order_by(TriggerEvent.id).limit(limit))
            return [Due(*row) for row in rows]

    def flush(self, *, limit: int = 1000) -> TriggerReport:
        report = TriggerReport()
        due = self.due(limit)
        if not due:
            return report
        if self.settings.webhook_url is not None:
            # crm.automation.trigger.execute needs an application context: an inbound
            # webhook cannot run triggers, so they are recorded as skipped, not retried.
            for item in due:
                self._mark(item.id, "skipped", "automation triggers need an app setup "
                                               "(bitrix24.client_id), not a webhook")
            report.skipped += len(due)
            return report
        known = mirror.latest_deals(self.services.db, [d.account_id for d in due])
        owners = {d.id: d.deal_id or known.get(d.account_id) for d in due}
        owners.update(self._latest_deals([d for d in due if owners[d.id] is None]))
        ready = [d for d in due if owners.get(d.id)]
        for item in (d for d in due if not owners.get(d.id)):
            self._mark(item.id, "skipped", "the contact has no deal to run the trigger on")
            report.skipped += 1
            if self.settings.comment_when_no_deal:
                self._comment(item)
        for start in range(0, len(ready), BATCH_LIMIT):
            chunk = ready[start:start + BATCH_LIMIT]
            try:
                result = self.client.batch({f"t{d.id}": ("crm.automation.trigger.execute", {
                    "CODE": d.code, "OWNER_TYPE_ID": DEAL, "OWNER_ID": owners[d.id]})
                    for d in chunk})
            except FatalCRMError as exc:
                # Maybe executed, maybe not: repeating could mail customers twice.
                for item in chunk:
                    self._mark(item.id, "failed", f"outcome unknown, not repeated: {exc.detail}")
                report.failed += len(chunk)
                continue
            for item in chunk:
                error = result.errors.get(f"t{item.id}")
                if error is None:
                    self._mark(item.id, "sent", None)
                    report.sent += 1
                else:
                    self._mark(item.id, "failed", str(error.get("error_description") or error))
                    report.failed += 1
        return report

    def _latest_deals(self, items: list[Due]) -> dict[int, str]:
        """Most recent deal per contact, 50 lookups per batch call."""
        found: dict[int, str] = {}
        contacts = list(dict.fromkeys(item.contact_id for item in items))
        for start in range(0, len(contacts), BATCH_LIMIT):
            chunk = contacts[start:start + BATCH_LIMIT]
            result = self.client.batch({f"c{contact}": ("crm.deal.list", {
                "filter": {"CONTACT_ID": contact}, "order": {"ID": "DESC"},
                "select": ["ID"], "start": -1}) for contact in chunk})
            for item in items:
                deals = result.results.get(f"c{item.contact_id}")
                if isinstance(deals, list) and deals:
                    found[item.id] = str(deals[0]["ID"])
        return found

    def _comment(self, item: Due) -> None:
        text = f"{NAMES.get(item.code, item.code)}: no deal to run the automation trigger on."
        try:
            self.client.call("crm.timeline.comment.add", {"fields": {
                "ENTITY_ID": item.contact_id, "ENTITY_TYPE": "contact", "COMMENT": text}})
        except FatalCRMError as exc:
            log.warning("timeline comment for contact %s failed: %s", item.contact_id, exc)

    def _mark(self, trigger_id: int, status: str, error: str | None) -> None:
        with self.services.db.transaction() as session:
            row = session.get(TriggerEvent, trigger_id)
            if row is not None:
                row.status = status
                row.attempts += 1
                row.last_error = error
                if status == "sent":
                    row.sent_at = self.services.ledger.clock()
