"""Reconcile: read deals changed since the stored cursor (DATE_MODIFY) and feed them through
the same mapping and ledger path as events, so the ledger converges even if every event were
lost. Lists use the documented fast method (order by ID, filter >ID, start=-1)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from connector import mirror
from connector.crm import cursors
from connector.crm.bitrix24 import Bitrix24Client
from connector.ledger.views import AccountRef
from connector.reports import ReconcileReport
from connector.services import Services
from connector.triggers import from_results, record
from mappings import bitrix24 as b24

CURSOR = "deals.date_modify"
# Exact-second semantics of the DATE_MODIFY filter are not documented: re-read a margin.
OVERLAP = timedelta(minutes=2)


def changed_filter(services: Services, *, full: bool) -> dict[str, str]:
    """The crm.deal.list filter for deals changed since the cursor (all deals when full)."""
    since = None if full else cursors.load(services.db, "bitrix24",
                                           services.settings.bitrix24.portal_key, CURSOR)
    if not since:
        return {}
    return {">=DATE_MODIFY": (datetime.fromisoformat(since) - OVERLAP).isoformat()}


def count_changed(client: Bitrix24Client, filter_: dict[str, str]) -> int:
    """How many deals a reconcile will read (one call, for a progress bar)."""
    page = client.call("crm.deal.list", {"filter": filter_, "select": ["ID"], "start": 0})
    return page.total or len(page.result or [])


def reconcile(services: Services, client: Bitrix24Client, *, full: bool = False,
              progress: Callable[[int], None] | None = None) -> ReconcileReport:
    settings = services.settings.bitrix24
    portal = settings.portal_key
    db = services.db
    started = services.ledger.clock()
    report = ReconcileReport()
    calls_before = client.calls
    filter_ = changed_filter(services, full=full)
    newest: datetime | None = None
    for deal in client.list_all("crm.deal.list", filter=filter_, select=b24.DEAL_SELECT):
        report.deals += 1
        state = b24.purchase_state(deal, portal=portal, categories=settings.deal_categories)
        ref = AccountRef("bitrix24", portal, state.contact_id) if state.contact_id else None
        results = services.ledger.settle_purchase(
            ref, state.source, state.amount, category=state.category,
            occurred_at=state.occurred_at, source_data=state.raw, actor="bitrix24-sync",
            comment=f"deal {deal.get('ID')} (reconcile)")
        report.changed += bool(results)
        report.without_contact += state.contact_id is None
        if results and not full:
            # A full sync imports history: marketing is not told of every old purchase.
            record(db, from_results(results, deal_id=str(deal.get("ID"))))
        if results and ref is not None and state.amount is not None:
            mirror.remember_deal(db, results[-1].account_id, str(deal.get("ID")))
        modified = b24.parse_datetime(deal.get("DATE_MODIFY"))
        if modified is not None and (newest is None or modified > newest):
            newest = modified
        if progress is not None:
            progress(1)
    report.cursor = cursors.capped(newest, started).isoformat()
    cursors.save(db, "bitrix24", portal, CURSOR, report.cursor)
    report.calls = client.calls - calls_before
    return report
