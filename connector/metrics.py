"""What GET /metrics reports, in one registry per process (tests build many apps).

Two sources, chosen by who the number belongs to:

- counters of this process: HTTP requests, CRM calls, rate-limiter waits, inbox items this
  process settled. They start at zero with the process, as Prometheus expects.
- values read from the database at scrape time: inbox depth and age, points by entry kind,
  job runs, the liability (connector.economics.gauges).
  They are what every process did, so no process could count them alone. The read is cached
  for `max_age` seconds so that many scrapers cost one query set.

A database value is one small scrape function `(session, now) -> metric families`; to add one,
write the function and list it in `database_scrapes()`.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from connector.config import ProgramSettings
from connector.db import Database, utcnow
from connector.economics.gauges import Liability
from connector.errors import (
    CRMAuthError,
    CRMError,
    FatalCRMError,
    RetriableCRMError,
    SkippableRecordError,
)
from connector.inbox import InboxEvent
from connector.job_runs import JobRun
from connector.ledger.models import ENTRY_KINDS, Entry
from connector.money import SCALE

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
SETTLED_AFTER = timedelta(minutes=2)
RESCAN_AFTER = timedelta(hours=1)
UNSETTLED = ("pending", "processing", "dead")
UNMATCHED = "unmatched"  # requests no URL rule matched (404, 405): one label, not one per path
_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")

# The signs the entries table allows each kind (Entry's amount_sign_by_kind constraint).
CREDIT_KINDS = frozenset({"accrual", "bonus", "reversal", "adjustment"})
DEBIT_KINDS = frozenset({"redemption", "expiry", "reversal", "adjustment"})

Scrape = Callable[[Session, datetime], Iterable[Metric]]
Sums = dict[str, tuple[int, int, int]]  # kind -> (credited, debited, entries) in minor units
P = ParamSpec("P")
R = TypeVar("R")


# -- values from the database --------------------------------------------------------------
def inbox_depth(session: Session, now: datetime) -> Iterator[Metric]:
    # Done and skipped items pile up forever and counting them costs a scan of the inbox;
    # how many get settled is loyalty_inbox_items_processed_total.
    depth = GaugeMetricFamily(
        "loyalty_inbox_items", "Inbox items waiting or parked, by status: pending, processing, "
        "dead (all processes)", labels=["status"])
    counts = dict.fromkeys(UNSETTLED, 0)
    rows = session.execute(select(InboxEvent.status, func.count())
                           .where(InboxEvent.status.in_(UNSETTLED)).group_by(InboxEvent.status))
    counts.update({status: count for status, count in rows})
    for status, count in counts.items():
        depth.add_metric([status], count)
    yield depth
    oldest = session.scalar(select(func.min(InboxEvent.received_at))
                            .where(InboxEvent.status.in_(("pending", "processing"))))
    yield GaugeMetricFamily(
        "loyalty_inbox_oldest_pending_age_seconds",
        "Seconds since the oldest item not yet settled (pending or processing) was received; "
        "0 when there is none",
        value=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)


class LedgerPoints:
    """Points credited and debited by entry kind: the sums of the entries table, read
    incrementally so that a scrape costs the entries written since the last one, not the
    ledger's size.

    Entries are append-only, so the sums up to an id never change once no transaction can
    still insert below it. Ids come from a sequence, and on PostgreSQL a transaction may commit
    a lower id after a higher one is visible; so only rows older than SETTLED_AFTER (a ledger
    transaction lasts milliseconds) are folded into the running sums, and each scrape adds the
    rows after them. The whole table is read at the first scrape and every RESCAN_AFTER, which
    would also pick up a row a stalled transaction committed below the line.
    """

    __name__ = "ledger_points"

    def __init__(self) -> None:
        self.settled_id = 0
        self.settled: Sums = {}
        self.scanned_at: datetime | None = None

    def __call__(self, session: Session, now: datetime) -> Iterator[Metric]:
        if self.scanned_at is None or now - self.scanned_at >= RESCAN_AFTER:
            self.settled_id, self.settled, self.scanned_at = 0, {}, now
        # Every range has both bounds: SQLite then walks the primary key over that range
        # instead of the whole (kind, occurred_at) index.
        top = session.scalar(select(func.max(Entry.id))) or 0
        first_fresh = session.scalar(select(func.min(Entry.id)).where(
            Entry.id > self.settled_id, Entry.id <= top,
            Entry.created_at >= now - SETTLED_AFTER))
        settle_to = top if first_fresh is None else first_fresh - 1
        settled = _plus(self.settled, _sums(session, self.settled_id, settle_to))
        fresh = _sums(session, settle_to, top)
        self.settled, self.settled_id = settled, max(settle_to, self.settled_id)
        yield from _points_families(_plus(settled, fresh))


def _sums(session: Session, after_id: int, up_to_id: int) -> Sums:
    """Sums by kind of the entries with after_id < id <= up_to_id."""
    if up_to_id <= after_id:
        return {}
    rows = session.execute(
        select(Entry.kind,
               func.sum(case((Entry.amount > 0, Entry.amount), else_=0)),
               func.sum(case((Entry.amount < 0, -Entry.amount), else_=0)),
               func.count())
        .where(Entry.id > after_id, Entry.id <= up_to_id).group_by(Entry.kind))
    return {kind: (int(plus or 0), int(minus or 0), count)
            for kind, plus, minus, count in rows}


def _plus(base: Sums, more: Sums) -> Sums:
    total = dict(base)
    for kind, (plus, minus, count) in more.items():
        was = total.get(kind, (0, 0, 0))
        total[kind] = (was[0] + plus, was[1] + minus, was[2] + count)
    return total


def _points_families(sums: Sums) -> Iterator[Metric]:
    # Sums split by sign only ever grow, so they are counters even for the kinds (reversal,
    # adjustment) whose entries go both ways.
    credited = CounterMetricFamily(
        "loyalty_points_credited", "Points added to balances, by entry kind (all processes)",
        labels=["kind"])
    debited = CounterMetricFamily(
        "loyalty_points_debited",
        "Points taken from balances, by entry kind, as a positive number (all processes)",
        labels=["kind"])
    entries = CounterMetricFamily("loyalty_ledger_entries", "Ledger entries by kind",
                                  labels=["kind"])
    for kind in ENTRY_KINDS:
        plus, minus, count = sums.get(kind, (0, 0, 0))
        if kind in CREDIT_KINDS:
            credited.add_metric([kind], plus / SCALE)
        if kind in DEBIT_KINDS:
            debited.add_metric([kind], minus / SCALE)
        entries.add_metric([kind], count)
    yield from (credited, debited, entries)


def job_runs(session: Session, now: datetime) -> Iterator[Metric]:
    """What the scheduled jobs did, whichever process ran them (the `job_runs` table)."""
    runs = CounterMetricFamily("loyalty_job_runs", "Runs of each scheduled job, by outcome",
                               labels=["job", "outcome"])
    duration = GaugeMetricFamily("loyalty_job_last_duration_seconds",
                                 "How long the last finished run of each job took",
                                 labels=["job"])
    last = GaugeMetricFamily("loyalty_job_last_run_timestamp_seconds",
                             "When the last run of each job started (Unix time)",
                             labels=["job"])
    ok = GaugeMetricFamily("loyalty_job_last_run_ok",
                           "1 when the last finished run of each job succeeded, else 0",
                           labels=["job"])
    counts = GaugeMetricFamily("loyalty_job_last_result",
                               "The counts the last successful run of each job reported",
                               labels=["job", "count"])
    for row in session.scalars(select(JobRun).order_by(JobRun.job_id)):
        runs.add_metric([row.job_id, "ok"], row.runs - row.failures)
        runs.add_metric([row.job_id, "failed"], row.failures)
        last.add_metric([row.job_id], row.last_started_at.timestamp())
        if row.last_duration_seconds is not None:
            duration.add_metric([row.job_id], row.last_duration_seconds)
        if row.last_status != "running":
            ok.add_metric([row.job_id], 1.0 if row.last_status == "ok" else 0.0)
        for name, value in (row.last_result or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                counts.add_metric([row.job_id, str(name)], value)
    yield from (runs, duration, last, ok, counts)


def database_scrapes(program: ProgramSettings | None = None) -> list[Scrape]:
    """The database reads of one Metrics object (LedgerPoints keeps state: one per process).
    With the program's settings, also the money view's liability gauges (they need its
    point_value and currency)."""
    scrapes: list[Scrape] = [inbox_depth, LedgerPoints(), job_runs]
    if program is not None:
        scrapes.append(Liability(program))
    return scrapes


class DatabaseCollector:
    """Runs the scrape functions, each in its own read transaction so one failing (a table
    not migrated yet) leaves the others reported; keeps the result for `max_age` seconds."""

    def __init__(self, db: Database, scrapes: Sequence[Scrape], *,
                 clock: Callable[[], datetime] = utcnow, max_age: float = CACHE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.scrapes = tuple(scrapes)
        self.clock = clock
        self.max_age = max_age
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._read_at: float | None = None

    def collect(self) -> Iterator[Metric]:
        # Concurrent scrapes wait for the one read in progress instead of repeating it.
        with self._lock:
            now = self.monotonic()
            if self._read_at is None or now - self._read_at >= self.max_age:
                self._cached = self._read()
                self._read_at = self.monotonic()
            cached = self._cached
        return iter(cached)

    def _read(self) -> list[Metric]:
        now = self.clock()
        found: list[Metric] = []
        failed = GaugeMetricFamily("loyalty_metrics_database_read_failed",
                                   "1 when the named database read failed on the last refresh",
                                   labels=["scrape"])
        seconds = GaugeMetricFamily("loyalty_metrics_database_read_seconds",
                                    "How long the named database read took on the last refresh",
                                    labels=["scrape"])
        for scrape in self.scrapes:
            name = getattr(scrape, "__name__", repr(scrape))
            started = time.perf_counter()
            try:
                with self.db.transaction(write=False) as session:
                    families = list(scrape(session, now))
            except Exception:  # reported as a metric; the other reads still count
                log.warning("metrics: reading %s from the database failed", name, exc_info=True)
                failed.add_metric([name], 1)
            else:
                found.extend(families)
                failed.add_metric([name], 0)
            seconds.add_metric([name], time.perf_counter() - started)
        return [*found, failed, seconds]


# -- this process's counters ---------------------------------------------------------------
class Metrics:
    """The counters one process keeps, plus the database collector, in its own registry."""

    def __init__(self, db: Database | None = None, *, clock: Callable[[], datetime] = utcnow,
                 scrapes: Sequence[Scrape] | None = None,
                 max_age: float = CACHE_SECONDS,
                 program: ProgramSettings | None = None) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "loyalty_http_requests", "HTTP requests answered, by URL rule and status",
            ["endpoint", "status"], registry=self.registry)
        self.http_seconds = Histogram(
            "loyalty_http_request_duration_seconds", "Time to answer an HTTP request, by URL rule",
            ["endpoint"], registry=self.registry)
        self.crm_calls = Counter(
            "loyalty_crm_calls", "HTTP calls to a CRM, by API method and result "
            "(ok, retriable, token_expired, auth, fatal, skippable, error)",
            ["crm", "method", "result"], registry=self.registry)
        self.limiter_waits = Counter(
            "loyalty_crm_limiter_waits", "CRM calls held back by the client's rate limiter",
            ["crm"], registry=self.registry)
        self.limiter_wait_seconds = Counter(
            "loyalty_crm_limiter_wait_seconds", "Seconds CRM calls waited for the rate limiter",
            ["crm"], registry=self.registry)
        self.inbox_settled = Counter(
            "loyalty_inbox_items_processed", "Inbox items this process settled, by outcome "
            "(done, skipped, deferred, failed, dead)",
            ["source", "outcome"], registry=self.registry)
        self._request_series: dict[tuple[str | None, int], tuple[Any, Any]] = {}
        self.database: DatabaseCollector | None = None
        if db is not None:
            self.database = DatabaseCollector(
                db, database_scrapes(program) if scrapes is None else scrapes, clock=clock,
                max_age=max_age)
            self.registry.register(self.database)

    def observe_request(self, endpoint: str | None, status: int, seconds: float) -> None:
        # Once per request: the labelled series are looked up once per (rule, status), a
        # finite set, rather than through labels() and its lock every time.
        series = self._request_series.get((endpoint, status))
        if series is None:
            label = endpoint or UNMATCHED
            series = (self.http_requests.labels(label, str(status)),
                      self.http_seconds.labels(label))
            self._request_series[(endpoint, status)] = series
        series[0].inc()
        series[1].observe(seconds)

    def crm_call(self, crm: str, method: str, result: str) -> None:
        self.crm_calls.labels(crm, method, result).inc()

    def limiter_waited(self, crm: str) -> Callable[[float], None]:
        """The callback a CRM client's limiter reports its waits to."""
        def waited(seconds: float) -> None:
            self.limiter_waits.labels(crm).inc()
            self.limiter_wait_seconds.labels(crm).inc(seconds)
        return waited

    def inbox_item(self, source: str, outcome: str) -> None:
        self.inbox_settled.labels(source, outcome).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of everything in the registry."""
        return generate_latest(self.registry)


# -- CRM calls -----------------------------------------------------------------------------
# Checked in order: the result a CRM call counts as, by what it raised.
CALL_RESULTS: tuple[tuple[type[CRMError], str], ...] = (
    (SkippableRecordError, "skippable"),
    (RetriableCRMError, "retriable"),
    (CRMAuthError, "auth"),
    (FatalCRMError, "fatal"),
    (CRMError, "fatal"),
)


def call_result(error: BaseException) -> str:
    for kind, result in CALL_RESULTS:
        if isinstance(error, kind):
            return result
    # A client's internal signals (an expired token to refresh) name their own result.
    return str(getattr(error, "call_result", "error"))


def rest_route(method: str, path: str, *_: Any) -> str:
    """`GET /api/v4/leads/{id}`: ids stripped so that every lead is one label value."""
    return f"{method.upper()} {_ID_SEGMENT.sub('/{id}', path)}"


def counted_call(crm: str, name: Callable[..., str]
                 ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count each call of a client's send method in `client.metrics`, labelled with
    `name(*args)` (the args after self) and the result."""
    def decorate(send: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(send)
        def counted(*args: P.args, **kwargs: P.kwargs) -> R:
            metrics: Metrics | None = getattr(args[0], "metrics", None)
            if metrics is None:
                return send(*args, **kwargs)
            result = "ok"
            try:
                return send(*args, **kwargs)
            except BaseException as exc:
                result = call_result(exc)
                raise
            finally:
                metrics.crm_call(crm, name(*args[1:]), result)
        return counted
    return decorate
