"""The inbox worker: claims stored events in groups and hands each group to its CRM's
processor. Every item ends done, skipped with a reason, retried later, or parked as dead."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from connector.db import is_unavailable, outage_reason
from connector.errors import CRMAuthError, CRMError, RetriableCRMError
from connector.inbox import Inbox, InboxItem
from connector.logs import log_context

if TYPE_CHECKING:
    from connector.metrics import Metrics

log = logging.getLogger(__name__)
AUTH_RETRY_DELAY = timedelta(minutes=5)
# Giving claimed items back after the database went away: first try soon (a restart or a
# dropped connection heals in seconds), then less often.
RELEASE_FIRST_WAIT_S = 0.5
RELEASE_MAX_WAIT_S = 15.0


@dataclass(frozen=True)
class Outcome:
    status: Literal["done", "skipped", "retry", "defer"]
    detail: str | None = None

    @classmethod
    def done(cls) -> Outcome:
        return cls("done")

    @classmethod
    def skipped(cls, reason: str) -> Outcome:
        return cls("skipped", reason)

    @classmethod
    def retry(cls, error: str) -> Outcome:
        return cls("retry", error)


class Processor(Protocol):
    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        """An outcome for every item given (a missing one counts as a retry)."""


class Worker:
    def __init__(self, inbox: Inbox, processors: Mapping[str, Processor], *,
                 metrics: Metrics | None = None, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.inbox = inbox
        self.processors = processors
        self.metrics = metrics
        self.sleep = sleep
        self.monotonic = monotonic
        # Set when a CRM stayed unreachable through the client's own retries: the rest of the
        # pass would spend the same minutes on every group, so it waits for the next pass.
        self.crm_unreachable = False

    def drain_once(self, limit: int | None = None) -> dict[str, int]:
        """Claim one group of due items and process it; returns counts by outcome.

        If the database goes away meanwhile, the items not settled yet are given back as
        soon as it answers again ("released"), not left claimed for the whole lease."""
        counts: dict[str, int] = defaultdict(int)
        groups: dict[str, list[InboxItem]] = defaultdict(list)
        for item in self.inbox.claim(limit):
            groups[item.source].append(item)
        unsettled = [item.id for items in groups.values() for item in items]
        try:
            for source, items in groups.items():
                self._drain_group(source, items, counts, unsettled)
        except Exception as exc:
            if not unsettled or not is_unavailable(exc):
                raise
            counts["released"] += self._give_back(unsettled, exc)
        except (KeyboardInterrupt, SystemExit):
            # The process is stopping (SIGTERM/SIGINT in `worker`): what it has not settled
            # goes to the next worker now, not after the lease. Processing is at least once
            # either way; one attempt, as the stop must not wait on the database.
            if unsettled:
                try:
                    self.inbox.release(unsettled, "the worker stopped before settling it")
                except Exception:
                    log.warning("inbox items %s stay claimed until their lease ends",
                                unsettled, exc_info=True)
            raise
        return dict(counts)

    def _drain_group(self, source: str, items: list[InboxItem], counts: dict[str, int],
                     unsettled: list[int]) -> None:
        processor = self.processors.get(source)
        if processor is None:
            outcomes = {i.id: Outcome.retry(f"no processor for {source!r} is configured")
                        for i in items}
        else:
            with log_context(inbox_ids=[i.id for i in items]):
                outcomes = self._run(processor, items)
        for item in items:
            outcome = outcomes.get(item.id) or Outcome.retry("no outcome reported")
            with log_context(inbox_id=item.id):
                settled = self._settle(item, outcome)
            unsettled.remove(item.id)
            counts[settled] += 1
            if self.metrics is not None:
                self.metrics.inbox_item(source, settled)

    def _give_back(self, item_ids: list[int], exc: Exception) -> int:
        """Release the claims once the database answers, trying with growing pauses. After
        the lease there is no point: the items are offered again anyway."""
        reason = f"the database was unavailable: {outage_reason(exc)}"
        log.warning("%s; %d claimed inbox item(s) are given back when it answers",
                    reason, len(item_ids))
        give_up_at = self.monotonic() + self.inbox.lease.total_seconds()
        wait = RELEASE_FIRST_WAIT_S
        while True:
            try:
                released = self.inbox.release(item_ids, reason)
            except Exception as again:
                if not is_unavailable(again) or self.monotonic() + wait > give_up_at:
                    log.warning("inbox items %s stay claimed until their lease ends: %s",
                                item_ids, outage_reason(again))
                    return 0
                self.sleep(wait)
                wait = min(wait * 2, RELEASE_MAX_WAIT_S)
                continue
            log.warning("the database answers again: %d inbox item(s) given back", released)
            return released

    def drain(self, *, max_rounds: int = 1000, limit: int | None = None) -> dict[str, int]:
        """Process until nothing is due (or `max_rounds` groups)."""
        total: dict[str, int] = defaultdict(int)
        self.crm_unreachable = False
        for _ in range(max_rounds):
            counts = self.drain_once(limit)
            if not counts:
                break
            for key, value in counts.items():
                total[key] += value
            if self.crm_unreachable:
                log.warning("a CRM is unreachable: the inbox waits for the next pass")
                break
        return dict(total)

    def _run(self, processor: Processor, items: list[InboxItem]) -> dict[int, Outcome]:
        try:
            return processor.process(items)
        except CRMAuthError as exc:
            return {i.id: Outcome("defer", exc.detail) for i in items}
        except RetriableCRMError as exc:
            self.crm_unreachable = True
            return {i.id: Outcome.retry(exc.detail) for i in items}
        except CRMError as exc:
            return {i.id: Outcome.retry(exc.detail) for i in items}
        except Exception as exc:  # one bad group must not stop the worker; it is retried
            if is_unavailable(exc):
                raise  # not the items' fault: drain_once gives them back
            log.exception("processing %d inbox items failed", len(items))
            return {i.id: Outcome.retry(f"{type(exc).__name__}: {exc}") for i in items}

    def _settle(self, item: InboxItem, outcome: Outcome) -> str:
        if outcome.status == "done":
            self.inbox.complete(item.id)
            return "done"
        if outcome.status == "skipped":
            self.inbox.complete(item.id, skipped_reason=outcome.detail or "skipped")
            return "skipped"
        if outcome.status == "defer":
            self.inbox.defer(item.id, outcome.detail or "deferred", AUTH_RETRY_DELAY)
            return "deferred"
        status = self.inbox.fail(item.id, outcome.detail or "failed")
        log.warning("inbox item %d failed (%s): %s", item.id, status, outcome.detail)
        return "dead" if status == "dead" else "failed"
