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
                 monotonic: Callable[[], float] = time.monotonic,
                 write_back: Callable[[], object] | None = None,
                 reclaim_when_rung: bool = False) -> None:
        self.inbox = inbox
        self.processors = processors
        self.metrics = metrics
        self.sleep = sleep
        self.monotonic = monotonic
        # Writes what the ledger changed back to the CRMs. Called once a group that was all
        # that was due is processed, before its items are marked settled: the manager waits
        # for the contact's field, not for the inbox's bookkeeping. An item processed and
        # written back but not settled yet (a crash in between) is processed again, which
        # the ledger makes a no-op: at least once, as always.
        self.write_back = write_back
        # Whether the write-back ran after the last group processed (the pass's own
        # write-back afterwards would find nothing new), and what it raised.
        self.written_back = False
        self.write_back_error: Exception | None = None
        # Set when a CRM stayed unreachable through the client's own retries: the rest of the
        # pass would spend the same minutes on every group, so it waits for the next pass.
        self.crm_unreachable = False
        # Whether a ring of the inbox's doorbell during the pass makes the drain claim again
        # at once. Not when the worker's loop answers the bell (`inbox.wake`): it comes back
        # after gathering the rest of the burst. With no loop waiting on the bell (wake
        # off) nothing else would come for those events before the poll.
        self.reclaim_when_rung = reclaim_when_rung

    def drain_once(self, limit: int | None = None) -> dict[str, int]:
        """Claim one group of due items and process it; returns counts by outcome.

        If the database goes away meanwhile, the items not settled yet are given back as
        soon as it answers again ("released"), not left claimed for the whole lease."""
        counts: dict[str, int] = defaultdict(int)
        groups: dict[str, list[InboxItem]] = defaultdict(list)
        claimed = self.inbox.claim(limit)
        for item in claimed:
            groups[item.source].append(item)
        unsettled = [item.id for items in groups.values() for item in items]
        # Fewer than a claim takes: nothing else was due, so the write-back need not wait.
        last = len(claimed) < (limit or self.inbox.settings.batch_size)
        try:
            for source, items in groups.items():
                self._drain_group(source, items, counts, unsettled, last=last)
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
                     unsettled: list[int], *, last: bool) -> None:
        processor = self.processors.get(source)
        if processor is None:
            outcomes = {i.id: Outcome.retry(f"no processor for {source!r} is configured")
                        for i in items}
        else:
            with log_context(inbox_ids=[i.id for i in items]):
                outcomes = self._run(processor, items)
        self.written_back = False
        # Not when the CRM just proved unreachable: the write-back would wait out the same
        # retries with the group still claimed (the pass's own write-back comes after).
        if last and self.write_back is not None and self.write_back_error is None \
                and not self.crm_unreachable:
            self._write_back()
        final = {item.id: outcomes.get(item.id) or Outcome.retry("no outcome reported")
                 for item in items}
        # One transaction for the whole group: a commit per item was most of a pass's
        # bookkeeping for a small group.
        statuses = self.inbox.settle([(i, o.status, o.detail) for i, o in final.items()],
                                     defer_delay=AUTH_RETRY_DELAY)
        for item_id, outcome in final.items():
            settled = self._label(statuses[item_id])
            if settled in ("failed", "dead"):
                with log_context(inbox_id=item_id):
                    log.warning("inbox item %d failed (%s): %s", item_id, settled,
                                outcome.detail)
            unsettled.remove(item_id)
            counts[settled] += 1
            if self.metrics is not None:
                self.metrics.inbox_item(source, settled)

    def _write_back(self) -> None:
        assert self.write_back is not None
        try:
            self.write_back()
        except Exception as exc:
            if is_unavailable(exc):
                raise  # drain_once gives the group back
            # The items were processed all the same: they are settled, and the error is
            # the pass's to report (process_inbox raises it once the inbox is drained).
            self.write_back_error = exc
        self.written_back = True

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
        self.crm_unreachable = self.written_back = False
        self.write_back_error = None
        for _ in range(max_rounds):
            counts = self.drain_once(limit)
            if not counts:
                break
            for key, value in counts.items():
                total[key] += value
            if self.crm_unreachable:
                log.warning("a CRM is unreachable: the inbox waits for the next pass")
                break
            # A group smaller than a claim takes was all that was due: another claim would
            # come back empty (a transaction, before the write-back the manager is waiting
            # for). What was stored since rang the inbox's doorbell, and the worker's loop
            # comes back for it (after gathering the rest of the burst: WorkerLoop._wait);
            # with no loop answering the bell this pass claims it itself.
            if sum(counts.values()) < (limit or self.inbox.settings.batch_size) \
                    and not (self.reclaim_when_rung and self.inbox.stored.rung):
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

    @staticmethod
    def _label(status: str) -> str:
        """An item's status after settling, as the pass counts it."""
        return "failed" if status == "pending" else status
