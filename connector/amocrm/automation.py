"""Marketing triggers in amoCRM, as configured per transition (`amocrm.triggers`): a tag on
the contact (and its latest lead), a Salesbot run, a note, a task. Each transition once."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from connector import mirror, triggers
from connector.crm.amocrm import AmoCRMClient
from connector.errors import CRMError, FatalCRMError
from connector.i18n import translator
from connector.reports import TriggerReport
from connector.rewards import notify
from connector.services import Services
from connector.triggers import Due

log = logging.getLogger(__name__)
SALESBOT_BATCH = 100  # tasks per POST /api/v2/salesbot/run
CONTACT = 1  # Salesbot entity_type of a contact
FOLLOW_UP = 1  # task_type_id of the built-in "Follow-up" task type
TASK_HOURS = 24  # a task is due this long after the transition is sent


class AmoCRMAutomation:
    def __init__(self, services: Services, client: AmoCRMClient) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.amocrm
        self.portal = self.settings.portal_key

    def flush(self, *, limit: int = 1000) -> TriggerReport:
        report = TriggerReport()
        due = triggers.due(self.services.db, "amocrm", self.portal, limit)
        if not due:
            return report
        leads = mirror.latest_deals(self.services.db, [d.account_id for d in due])
        tags: dict[str, list[dict[str, Any]]] = defaultdict(list)  # path -> PATCH items
        bots: list[dict[str, Any]] = []
        notes: list[dict[str, Any]] = []
        tasks: list[dict[str, Any]] = []
        # Notes and tasks are read by the account's managers: program.language.
        t = translator(self.services.settings.program.language)
        told = notify.texts(self.services.db, due, t)
        due_by = int(self.services.ledger.clock().timestamp()) + TASK_HOURS * 3600
        sent: list[Due] = []
        for item in due:
            action = self.settings.triggers.get(item.code)
            if action is None:
                self._mark(item, "skipped", "no action configured in amocrm.triggers")
                report.skipped += 1
                continue
            if action.tag:
                tag = [{"name": action.tag}]
                tags["/api/v4/contacts"].append({"id": int(item.contact_id),
                                                 "tags_to_add": tag})
                lead = item.deal_id or leads.get(item.account_id)
                if action.lead_tag and lead:
                    tags["/api/v4/leads"].append({"id": int(lead), "tags_to_add": tag})
            if action.salesbot_id:
                bots.append({"bot_id": action.salesbot_id, "entity_id": int(item.contact_id),
                             "entity_type": CONTACT})
            text = told.get(item.id) or triggers.text(item.code, t)
            if action.note:
                notes.append({"entity_id": int(item.contact_id), "note_type": "common",
                              "params": {"text": text}})
            if action.task:
                tasks.append({"task_type_id": FOLLOW_UP, "text": text,
                              "complete_till": due_by, "entity_id": int(item.contact_id),
                              "entity_type": "contacts"})
            sent.append(item)
        # Tags are a PATCH and safe to repeat; a Salesbot run, a note or a task is not. Once
        # one of those went out, a later failure marks the group failed instead of sending
        # it again.
        posted = False
        try:
            size = self.settings.write_batch
            for path, items in tags.items():
                for start in range(0, len(items), size):
                    self.client.request("PATCH", path, json=items[start:start + size])
            for start in range(0, len(bots), SALESBOT_BATCH):
                self.client.request("POST", "/api/v2/salesbot/run",
                                    json=bots[start:start + SALESBOT_BATCH])
                posted = True
            for start in range(0, len(notes), size):
                self.client.request("POST", "/api/v4/contacts/notes",
                                    json=notes[start:start + size])
                posted = True
            for start in range(0, len(tasks), size):
                self.client.request("POST", "/api/v4/tasks", json=tasks[start:start + size])
                posted = True
        except CRMError as exc:
            if not isinstance(exc, FatalCRMError) and not posted:
                raise  # nothing that messages a customer went out: the next flush retries
            # Refused as a whole (a deleted contact, a bot that is gone), or partly sent:
            # never repeated, so no customer hears twice.
            log.warning("amocrm triggers %s: %s", "refused" if not posted else "partly sent",
                        exc)
            detail = exc.detail if not posted else f"partly sent, not repeated: {exc.detail}"
            for item in sent:
                self._mark(item, "failed", detail)
            report.failed += len(sent)
            return report
        for item in sent:
            self._mark(item, "sent", None)
        report.sent += len(sent)
        return report

    def _mark(self, item: Due, status: str, error: str | None) -> None:
        triggers.mark(self.services.db, item.id, status, error, self.services.ledger.clock())
