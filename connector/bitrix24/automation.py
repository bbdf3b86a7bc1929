"""Fire marketing's automation triggers, once each: an app's own triggers
(`crm.automation.trigger.execute`), or the portal's "Track incoming webhook" triggers by the
codes in `bitrix24.triggers` (`crm.automation.trigger`, which an inbound webhook may call).

Triggers exist on deals, not contacts, so a trigger runs on the deal that caused it, else on
the contact's most recent deal. A contact with no deal cannot run a trigger: the event is
recorded as skipped with that reason, and (if `bitrix24.comment_when_no_deal`) a timeline
comment on the contact tells the manager what happened.
"""

from __future__ import annotations

import logging
from typing import Any

from connector import mirror, triggers
from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from connector.errors import FatalCRMError
from connector.i18n import translator
from connector.reports import TriggerReport
from connector.services import Services
from connector.triggers import Due

log = logging.getLogger(__name__)
DEAL = 2  # OWNER_TYPE_ID of deals (crm.enum.ownertype)


class Bitrix24Automation:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.bitrix24
        self.portal = self.settings.portal_key

    def flush(self, *, limit: int = 1000) -> TriggerReport:
        report = TriggerReport()
        due = triggers.due(self.services.db, "bitrix24", self.portal, limit)
        if not due:
            return report
        codes = {name: trigger.code for name, trigger in self.settings.triggers.items()}
        if self.settings.webhook_url is not None:
            # An inbound webhook cannot run an app's triggers (crm.automation.trigger.execute
            # needs an application context); it fires the portal's own "Track incoming
            # webhook" triggers, by the codes the admin copied from them.
            unknown = [d for d in due if d.code not in codes]
            self._mark_all([(item.id, "skipped", f"no portal trigger code for {item.code}: "
                             f"set [bitrix24.triggers.{item.code}] code") for item in unknown])
            report.skipped += len(unknown)
            due = [d for d in due if d.code in codes]
            if not due:
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
                result = self.client.batch({f"t{d.id}": fire(d, owners[d.id], codes)
                                            for d in chunk})
            except FatalCRMError as exc:
                # Maybe executed, maybe not: repeating could mail customers twice.
                self._mark_all([(item.id, "failed", f"outcome unknown, not repeated: "
                                 f"{exc.detail}") for item in chunk])
                report.failed += len(chunk)
                continue
            marks: list[tuple[int, str, str | None]] = []
            for item in chunk:
                error = result.errors.get(f"t{item.id}")
                if error is None and result.results.get(f"t{item.id}") is False:
                    error = {"error_description": not_run(item, owners[item.id], codes)}
                if error is None:
                    marks.append((item.id, "sent", None))
                    report.sent += 1
                else:
                    marks.append((item.id, "failed",
                                  str(error.get("error_description") or error)))
                    report.failed += 1
            self._mark_all(marks)  # the chunk's outcomes, one transaction
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
        # A manager reads it on the contact's timeline: program.language.
        t = translator(self.services.settings.program.language)
        text = t._("%(trigger)s: no deal to run the automation trigger on.",
                   trigger=triggers.text(item.code, t))
        try:
            self.client.call("crm.timeline.comment.add", {"fields": {
                "ENTITY_ID": item.contact_id, "ENTITY_TYPE": "contact", "COMMENT": text}})
        except FatalCRMError as exc:
            log.warning("timeline comment for contact %s failed: %s", item.contact_id, exc)

    def _mark(self, trigger_id: int, status: str, error: str | None) -> None:
        self._mark_all([(trigger_id, status, error)])

    def _mark_all(self, marks: list[tuple[int, str, str | None]]) -> None:
        triggers.mark_all(self.services.db, marks, self.services.ledger.clock())


def fire(item: Due, deal_id: str, codes: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The call that fires one trigger on a deal: the portal's own trigger by its code when
    one is configured (crm-automation-trigger.md: `target` TYPENAME_ID and `code`), else the
    app's trigger registered under the transition's name."""
    if item.code in codes:
        return "crm.automation.trigger", {"target": f"DEAL_{deal_id}", "code": codes[item.code]}
    return "crm.automation.trigger.execute", {"CODE": item.code, "OWNER_TYPE_ID": DEAL,
                                              "OWNER_ID": deal_id}


def not_run(item: Due, deal_id: str, codes: dict[str, str]) -> str:
    code = codes.get(item.code, item.code)
    return (f"the portal ran no trigger with code {code} on deal {deal_id}: is a \"Track "
            "incoming webhook\" trigger with that code on a stage of the deal's funnel, and "
            "are its conditions met?")
