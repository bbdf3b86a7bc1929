"""Reconcile: read deals changed since the stored cursor (DATE_MODIFY) and feed them through
the same mapping and ledger path as events, so the ledger converges even if every event were
lost. Deals are listed by the documented fast method (order by ID, filter >ID, start=-1),
50 pages chained in each request (Bitrix24Client.list_all)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from connector import mirror
from connector.bitrix24.fetch import Fetched, fetch_rows
from connector.crm import cursors
from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from connector.errors import RetriableCRMError
from connector.ledger.views import AccountRef
from connector.products import rules as products
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


def with_rows(services: Services, client: Bitrix24Client, deals: Iterator[dict[str, Any]]
              ) -> Iterator[tuple[dict[str, Any], Fetched]]:
    """Each listed deal with its product rows, read 50 deals to a batch, when product rules
    make rows matter."""
    program = services.settings.program
    if not products.needs_rows(program):
        for deal in deals:
            yield deal, Fetched()
        return
    page: list[dict[str, Any]] = []
    for deal in deals:
        page.append(deal)
        if len(page) == BATCH_LIMIT:
            yield from _page_rows(services, client, page)
            page = []
    yield from _page_rows(services, client, page)


def _page_rows(services: Services, client: Bitrix24Client, page: list[dict[str, Any]]
               ) -> Iterator[tuple[dict[str, Any], Fetched]]:
    if not page:
        return
    fetched = fetch_rows(client, [str(deal.get("ID")) for deal in page],
                         catalog=products.needs_catalog(services.settings.program))
    if fetched.failed:
        # Settling without the rows would earn on the amount; the run ends before its
        # cursor moves, and the next one reads these deals again.
        raise RetriableCRMError("; ".join(sorted(fetched.failed.values()))[:500])
    for deal in page:
        yield deal, fetched


def reconcile(services: Services, client: Bitrix24Client, *, full: bool = False,
              progress: Callable[[int], None] | None = None,
              on_total: Callable[[int], None] | None = None) -> ReconcileReport:
    """on_total learns how many deals the run reads, from the list's first page."""
    settings = services.settings.bitrix24
    portal = settings.portal_key
    db = services.db
    started = services.ledger.clock()
    report = ReconcileReport()
    calls_before = client.calls
    filter_ = changed_filter(services, full=full)
    newest: datetime | None = None
    deals = client.list_all("crm.deal.list", filter=filter_, select=b24.DEAL_SELECT,
                            on_total=on_total)
    for deal, fetched in with_rows(services, client, deals):
        report.deals += 1
        deal_id = str(deal.get("ID"))
        state = b24.purchase_state(deal, portal=portal, categories=settings.deal_categories,
                                   rows=fetched.product_rows(deal_id))
        ref = AccountRef("bitrix24", portal, state.contact_id) if state.contact_id else None
        results = services.ledger.settle_purchase(
            ref, state.source, state.amount, category=state.category,
            occurred_at=state.occurred_at, source_data=state.raw, actor="bitrix24-sync",
            comment=f"deal {deal.get('ID')} (reconcile)", rows=state.rows)
        report.changed += bool(results)
        report.without_contact += state.contact_id is None
        if results and not full:
            # A full sync imports history: marketing is not told of every old purchase.
            record(db, from_results(results, deal_id=str(deal.get("ID"))),
                   program=services.program)
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
