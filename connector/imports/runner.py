"""An import from start to end: plan every row, then (with apply) write the accepted ones,
verify the accounts written, and write the changed contacts back to the CRM."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from connector.amocrm.connector import AmoCRMConnector
from connector.bitrix24.connector import Bitrix24Connector
from connector.errors import RetriableCRMError
from connector.i18n import N_
from connector.imports.matching import AmoCRMMatcher, Bitrix24Matcher, Matcher
from connector.imports.plan import Decision, Planner
from connector.imports.progress import Progress
from connector.imports.rows import RawRow
from connector.imports.writer import ApplyReport, Writer
from connector.services import Services


@dataclass
class ImportResult:
    decisions: list[Decision]
    applied: ApplyReport | None = None
    written_back: int | None = None  # contacts the CRM took; None: not written back here
    write_back_failed: str | None = None  # why the write-back stopped (the worker goes on)

    def counts(self) -> Counter[str]:
        return Counter(decision.action for decision in self.decisions)

    @property
    def refused(self) -> int:
        return self.counts()["refused"]

    def summary(self) -> dict[str, Any]:
        counts = self.counts()
        data: dict[str, Any] = {"rows": len(self.decisions),
                                **{action: counts[action] for action in
                                   ("open", "update", "unchanged", "refused")},
                                "applied": self.applied is not None}
        if self.applied is not None:
            data.update(self.applied.as_dict())
        if self.written_back is not None:
            data["contacts_written_back"] = self.written_back
        if self.write_back_failed is not None:
            data["write_back_failed"] = self.write_back_failed
        return data


def connector_of(services: Services, crm: str) -> Bitrix24Connector | AmoCRMConnector | None:
    return services.bitrix24 if crm == "bitrix24" else services.amocrm


def matcher_of(services: Services, crm: str) -> Matcher | None:
    connector = connector_of(services, crm)
    if isinstance(connector, Bitrix24Connector):
        return Bitrix24Matcher(connector.client)
    if isinstance(connector, AmoCRMConnector):
        return AmoCRMMatcher(connector.client)
    return None


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """An import builds a few objects per row (100,000 rows: rows, decisions, the INSERTs'
    parameters) and keeps them to the end, and none refers back to itself: the cyclic
    collector, run every 700 allocations, rescans them all each time to free nothing (about
    a third of the import's own CPU). Reference counting still frees everything as usual;
    the few cycles made meanwhile are collected when it is resumed. The switch is the
    process's: imports run in the CLI's own process (`import customers|bitrix24|amocrm`),
    never inside `serve`."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_import(services: Services, crm: str, portal: str, rows: Iterable[RawRow], *,
               source: str, apply: bool, write_back: bool = True,
               progress: Progress | None = None) -> ImportResult:
    with cyclic_gc_paused():
        return _run_import(services, crm, portal, rows, source=source, apply=apply,
                           write_back=write_back, progress=progress)


def _run_import(services: Services, crm: str, portal: str, rows: Iterable[RawRow], *,
                source: str, apply: bool, write_back: bool,
                progress: Progress | None) -> ImportResult:
    progress = progress or Progress()
    now = services.ledger.clock()
    planner = Planner(services.db, services.program, crm, portal,
                      matcher=matcher_of(services, crm), now=now, progress=progress)
    result = ImportResult(planner.plan(rows))
    if not apply:
        return result
    writer = Writer(services.db, services.program, crm, portal, now=now, source=source,
                    progress=progress)
    result.applied = writer.apply(result.decisions)
    connector = connector_of(services, crm)
    configured = (services.settings.bitrix24.portal_key if crm == "bitrix24"
                  else services.settings.amocrm.portal_key)
    if write_back and connector is not None and portal == configured:
        try:
            result.written_back = flush_all(connector, progress,
                                            len(result.applied.account_ids))
        except RetriableCRMError as exc:
            # What is written stays; the contacts stay dirty for the worker's write-back.
            progress.finish()
            result.write_back_failed = exc.detail
    return result


def flush_all(connector: Bitrix24Connector | AmoCRMConnector, progress: Progress,
              expected: int) -> int:
    """Write-back passes until no dirty contact is left or a pass gets nowhere (the CRM
    failing: the worker's write-back sends the rest later)."""
    progress.start(N_("writing back to the CRM"), expected)
    written = 0
    while True:
        report = connector.writeback.flush()
        done = report.contacts_written + report.unchanged + report.refused
        written += report.contacts_written
        progress.advance(done)
        if not report.accounts or not done:
            break
    progress.finish()
    return written
