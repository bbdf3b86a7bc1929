"""Reconcile: read leads changed since the stored cursor and settle them like webhooks do.

Filtering (`filter[updated_at]`) is a paid add-on on some accounts, so leads are paged
newest first by `order[updated_at]=desc` and the walk stops at the cursor."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from connector.amocrm.processor import AmoCRMProcessor
from connector.crm import cursors
from connector.reports import ReconcileReport
from connector.services import Services

CURSOR = "leads.updated_at"
OVERLAP = timedelta(minutes=2)


def reconcile(services: Services, processor: AmoCRMProcessor, *, full: bool = False,
              progress: Callable[[int], None] | None = None) -> ReconcileReport:
    client = processor.client
    portal = services.settings.amocrm.portal_key
    started = services.ledger.clock()
    report = ReconcileReport()
    calls_before = client.calls
    since = None if full else cursors.load(services.db, "amocrm", portal, CURSOR)
    stop_at = datetime.fromisoformat(since) - OVERLAP if since else None
    newest: datetime | None = None
    done = False
    for page in client.pages("/api/v4/leads", "leads",
                             {"with": processor.lead_with, "order[updated_at]": "desc"}):
        processor.load_elements(page)
        for lead in page:
            updated = datetime.fromtimestamp(int(lead.get("updated_at") or 0), UTC)
            if stop_at is not None and updated < stop_at:
                done = True
                break
            newest = max(newest or updated, updated)
            report.deals += 1
            # A full sync imports history: marketing is not told of every old purchase.
            written, no_contact = processor.settle(str(lead["id"]), lead, notify=not full)
            report.changed += written > 0
            report.without_contact += no_contact is not None
            if progress is not None:
                progress(1)
        if done:
            break
    report.cursor = cursors.capped(newest, started).isoformat()
    cursors.save(services.db, "amocrm", portal, CURSOR, report.cursor)
    report.calls = client.calls - calls_before
    return report
