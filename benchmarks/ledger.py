"""Ledger throughput on a realistically sized book: accruals, balance reads and redemptions
per second with 100,000 accounts and 1,000,000 entries, on SQLite or PostgreSQL.

The database is wiped and migrated, then seeded with a consistent two-year history (accruals
from Bitrix24 deals, redemptions, bonuses and the expiries the hourly scheduler would have
written) straight into the tables, checked with Ledger.verify(), and then measured through
the real code paths (Ledger.accrue, Ledger.account, Ledger.redeem, settle_purchase), one
operation per transaction, single thread after a warm-up; on PostgreSQL also with 4 threads,
and with --processes N over N worker processes.

    .venv/bin/python benchmarks/ledger.py [--database-url URL] [--accounts 100000]
        [--entries 1000000] [--ops 2000] [--processes 4] [--seed 1] [--json]

Without --database-url a fresh SQLite file in a temporary directory is used. The target
database is emptied first: unless its name contains "bench", --allow-wipe is required.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy  # noqa: E402
from sqlalchemy import select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from benchmarks import ledger_workers  # noqa: E402
from benchmarks.ledger_floor import floors  # noqa: E402
from connector.config import load_settings  # noqa: E402
from connector.db import Database, normalise_url  # noqa: E402
from connector.ledger.engine import Ledger  # noqa: E402
from connector.ledger.models import Account  # noqa: E402
from connector.ledger.views import AccountRef  # noqa: E402
from connector.money import from_minor, to_minor  # noqa: E402
from connector.program import Program  # noqa: E402
from connector.referrals.codes import luhn_digit  # noqa: E402
from connector.schema import UTCDateTime  # noqa: E402
from mappings.bitrix24 import deal_source  # noqa: E402

CRM = "bitrix24"
PORTAL = "bench.bitrix24.ru"
ACTOR = "bitrix24"  # what connector.bitrix24.processor writes
HISTORY = timedelta(days=730)
CHUNK_ENTRIES = 20_000  # rows of entries per load transaction (plus their lots etc.)

ACCOUNT_COLUMNS = ("id", "crm", "portal", "contact_id", "card_number", "balance", "overdraft",
                   "tier", "tier_changed_at", "purchase_count", "purchase_total",
                   "first_purchase_at", "last_purchase_at", "birthday", "referred_by_id",
                   "version", "created_at", "updated_at", "tier_spend", "tier_spend_since",
                   "tier_spend_oldest")
ENTRY_COLUMNS = ("id", "account_id", "kind", "amount", "idempotency_key", "source",
                 "purchase_amount", "purchase_count", "purchase_at", "shortfall",
                 "balance_after", "comment", "actor", "details", "source_data",
                 "occurred_at", "created_at")
LOT_COLUMNS = ("id", "account_id", "entry_id", "amount", "remaining", "earned_at",
               "available_at", "expires_at")
ALLOCATION_COLUMNS = ("id", "entry_id", "lot_id", "amount")
TABLES = {"accounts": ACCOUNT_COLUMNS, "entries": ENTRY_COLUMNS, "lots": LOT_COLUMNS,
          "allocations": ALLOCATION_COLUMNS}
BONUSES = (("birthday", 300), ("review", 50), ("promo", 150))  # name, whole points


# -- seeding ------------------------------------------------------------------------------

def card_number(account_id: int) -> str:
    """A distinct Luhn-valid card per loaded account (live ones are drawn at random)."""
    body = f"{account_id:09d}"
    return body + luhn_digit(body)


@dataclass(slots=True)
class _Lot:
    id: int
    entry_id: int
    amount: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime | None


@dataclass
class SeedReport:
    accounts: int = 0
    entries: int = 0
    lots: int = 0
    allocations: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    generate_s: float = 0.0
    load_s: float = 0.0
    finish_s: float = 0.0


Rows = dict[str, list[tuple[Any, ...]]]
Sink = Callable[[Rows], None]


class _History:
    """One account replayed with the ledger's own rules: FIFO lots, tier upgrades on the
    rolling spend, the redemption cap, expiry by the hourly scheduler. Rows go straight
    into the seeder's buffers with final ids."""

    def __init__(self, seeder: Seeder, account_id: int, times: list[datetime]) -> None:
        self.s = seeder
        self.id = account_id
        self.contact = str(account_id)
        self.times = times
        self.balance = 0
        self.version = 1  # set on creation, then bumped by every entry (Postings._touch)
        self.tier_rank = 0
        self.tier_changed_at: datetime | None = None
        self.purchase_count = self.purchase_total = 0
        self.first_purchase: datetime | None = None
        self.last_purchase: datetime | None = None
        self.spends: list[tuple[datetime, int]] = []
        self.open_lots: list[_Lot] = []  # FIFO by (earned_at, id), like lots.debit
        self.lots: list[_Lot] = []
        self.updated = times[0] if times else seeder.now

    def _post(self, kind: str, amount: int, key: str, source: str | None, at: datetime, *,
              purchase: int | None = None, comment: str | None = None,
              actor: str | None = None, details: str | None = None,
              source_data: str | None = None) -> int:
        s, dt = self.s, self.s.dt
        self.balance += amount
        self.version += 1
        self.updated = at
        entry_id = s.next_entry
        s.next_entry += 1
        s.rows["entries"].append((
            entry_id, self.id, kind, amount, key, source, purchase, 1 if purchase else 0,
            dt(at) if purchase else None, 0, self.balance, comment, actor, details,
            source_data, dt(at), dt(at)))
        s.kinds[kind] += 1
        return entry_id

    def _credit(self, entry_id: int, points: int, at: datetime) -> None:
        lot = _Lot(self.s.next_lot, entry_id, points, points, at,
                   self.s.program.available_at(at), self.s.program.expires_at(at))
        self.s.next_lot += 1
        self.open_lots.append(lot)
        self.lots.append(lot)

    def _take(self, entry_id: int, lot: _Lot, amount: int) -> None:
        lot.remaining -= amount
        self.s.rows["allocations"].append((self.s.next_allocation, entry_id, lot.id, amount))
        self.s.next_allocation += 1

    def expire_until(self, moment: datetime) -> None:
        # The scheduler runs hourly: a lot is expired by the first run after its date, and
        # only once that run has happened.
        while self.open_lots and self.open_lots[0].expires_at is not None:
            lot = self.open_lots[0]
            expires = lot.expires_at
            assert expires is not None
            run = expires.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            if run > moment:
                return
            details = json.dumps({"lot": lot.id, "expires_at": expires.isoformat()})
            entry_id = self._post("expiry", -lot.remaining, f"expiry:lot:{lot.id}",
                                  f"lot:{lot.id}", run, actor="system", details=details)
            self._take(entry_id, lot, lot.remaining)
            self.open_lots.pop(0)

    def step(self, index: int, at: datetime) -> None:
        rng = self.s.rng
        self.expire_until(at)
        roll = rng.random()
        spendable = sum(lot.remaining for lot in self.open_lots if lot.available_at <= at)
        if index == 0 and roll < 0.3:
            key = f"bonus:welcome:{self.id}"
            entry_id = self._post("bonus", 10_000, key, key, at, actor="system",
                                  details='{"bonus": "welcome"}')
            self._credit(entry_id, 10_000, at)
        elif index and roll < 0.14 and spendable >= 100:
            self._redeem(at, spendable)
        elif index and roll < 0.22:
            name, whole = BONUSES[rng.randrange(len(BONUSES))]
            key = f"bonus:{name}:{self.id}:{index}"
            entry_id = self._post("bonus", whole * 100, key, key, at, actor="system",
                                  details=json.dumps({"bonus": name}))
            self._credit(entry_id, whole * 100, at)
        else:
            self._accrue(at)

    def _redeem(self, at: datetime, spendable: int) -> None:
        """A Bitrix24 robot paying part of a deal with points (partial=True)."""
        s, rng = self.s, self.s.rng
        purchase = Decimal(rng.randrange(50_000, 2_000_000)) / 100
        requested = rng.randrange(50, 1000)  # whole points
        granted = min(requested * 100, to_minor(s.program.redeem_cap(purchase)), spendable)
        deal = s.deal()
        entry_id = self._post(
            "redemption", -granted, f"robot:redeem:{deal}",
            f"{deal_source(PORTAL, str(deal))}:redeem", at, actor="bitrix24-robot",
            details=json.dumps({"requested": str(requested), "purchase_amount": str(purchase)}))
        left = granted
        for lot in [lot for lot in self.open_lots if lot.available_at <= at]:
            part = min(lot.remaining, left)
            self._take(entry_id, lot, part)
            left -= part
            if lot.remaining == 0:
                self.open_lots.remove(lot)
            if left == 0:
                break

    def _accrue(self, at: datetime) -> None:
        """A won deal through settle_purchase: earned at the current tier, then upgraded."""
        s, rng, program = self.s, self.s.rng, self.s.program
        # Roughly log-normal amounts, median ~1,800 RUB, between 100 and 500,000.
        amount = Decimal(max(10_000, min(int(rng.lognormvariate(12.1, 1.0)),
                                         50_000_000))) / 100
        minor = to_minor(amount)
        tier = s.tiers[self.tier_rank]
        earned = to_minor(program.points_for(amount, tier.rate, Decimal(1)))
        self.spends.append((at, minor))
        window_start = program.tier_window_start(at)
        spend = sum(m for when, m in self.spends if when >= window_start)
        best = s.tiers.index(program.tier_for(from_minor(spend)))
        tier_up = None
        if best > self.tier_rank:
            self.tier_rank, self.tier_changed_at, tier_up = best, at, s.tiers[best].name
        self.purchase_count += 1
        self.purchase_total += minor
        self.first_purchase = self.first_purchase or at
        self.last_purchase = at
        deal = s.deal()
        source = deal_source(PORTAL, str(deal))
        stamp = at.isoformat(timespec="seconds")
        raw = json.dumps({"ID": str(deal), "CONTACT_ID": self.contact, "STAGE_ID": "WON",
                          "STAGE_SEMANTIC_ID": "S", "CATEGORY_ID": "0",
                          "OPPORTUNITY": str(amount), "CURRENCY_ID": "RUB",
                          "CLOSEDATE": stamp, "DATE_MODIFY": stamp})
        entry_id = self._post("accrual", earned, f"{source}:0", source, at, purchase=minor,
                              comment=f"deal {deal}", actor=ACTOR, source_data=raw,
                              details=s.accrual_details(tier.name, tier.rate, tier_up))
        if earned:
            self._credit(entry_id, earned, at)

    def finish(self) -> None:
        s, dt = self.s, self.s.dt
        self.expire_until(s.now)
        birthday = date(1960 + self.id % 45, 1 + self.id % 12, 1 + self.id % 28) \
            if self.id % 3 else None
        created = self.times[0] if self.times else s.now - timedelta(seconds=self.id % 86_400)
        # The rolling spend as the ledger keeps it (connector.ledger.spend): summed from the
        # window of the account's last purchase (or its creation), so whether it still
        # answers today depends on whether a purchase has left the window since, as live.
        since = s.program.tier_window_start(self.last_purchase or created)
        kept = [(at, minor) for at, minor in self.spends if at >= since]
        s.rows["accounts"].append((
            self.id, CRM, PORTAL, self.contact, card_number(self.id), self.balance, 0,
            s.tiers[self.tier_rank].name,
            dt(self.tier_changed_at) if self.tier_changed_at else None,
            self.purchase_count, self.purchase_total,
            dt(self.first_purchase) if self.first_purchase else None,
            dt(self.last_purchase) if self.last_purchase else None,
            s.day(birthday) if birthday else None, None, self.version, dt(created),
            dt(self.updated), sum(minor for _, minor in kept), dt(since),
            dt(min(at for at, _ in kept)) if kept else None))
        s.rows["lots"] += [(lot.id, self.id, lot.entry_id, lot.amount, lot.remaining,
                            dt(lot.earned_at), dt(lot.available_at),
                            dt(lot.expires_at) if lot.expires_at else None)
                           for lot in self.lots]


class Seeder:
    """Writes a consistent history straight into the tables: 1M entries in about a minute
    instead of hours through the Ledger, which Ledger.verify() then checks.

    Accounts are replayed a chunk (~2,000 accounts, ~20,000 entries) at a time with their
    events merged in time order, so ids and the physical row order interleave accounts as a
    live book does. Replaying one account after another would store each account's rows
    side by side, and every read would touch fewer pages than in production."""

    def __init__(self, program: Program, *, accounts: int, entries: int, seed: int,
                 now: datetime, dt: Callable[[datetime], Any],
                 day: Callable[[date], Any]) -> None:
        self.program = program
        self.accounts = accounts
        self.entries = entries
        self.rng = random.Random(seed)
        self.now = now
        self.dt = dt  # how the backend takes datetimes (SQLite: SQLAlchemy's text form)
        self.day = day
        self.tiers = program.settings.tiers
        self.next_entry = self.next_lot = self.next_allocation = self.next_deal = 1
        self.rows: Rows = {name: [] for name in TABLES}
        self.kinds: Counter[str] = Counter()
        self._details: dict[str, str] = {}

    def deal(self) -> int:
        self.next_deal += 1
        return self.next_deal - 1

    def accrual_details(self, tier: str, rate: Decimal, tier_up: str | None) -> str:
        # The shape of Program.earn(...).breakdown plus the category settle_purchase adds.
        key = f"{tier}:{tier_up}"
        if key not in self._details:
            details: dict[str, Any] = {"tier": tier, "rate": str(rate), "multiplier": "1",
                                       "extra_points": "0.00", "campaigns": [],
                                       "category": "0"}
            if tier_up:
                details["tier_up"] = tier_up
            self._details[key] = json.dumps(details)
        return self._details[key]

    def _times(self, count: int) -> list[datetime]:
        seconds = int(HISTORY.total_seconds())
        return sorted(self.now - timedelta(seconds=self.rng.randrange(seconds))
                      for _ in range(count))

    def _draw(self, mean: float) -> int:
        """Entries for one account: most customers buy a few times, some very often."""
        if mean < 1:
            return 1 if self.rng.random() < mean else 0
        return 1 + int(self.rng.expovariate(1 / (mean - 1))) if mean > 1 else 1

    def _replay(self, first: int, primaries: list[int]) -> None:
        histories = [_History(self, first + n, self._times(count))
                     for n, count in enumerate(primaries)]
        timeline = sorted((at, n, index) for n, history in enumerate(histories)
                          for index, at in enumerate(history.times))
        for at, n, index in timeline:
            histories[n].step(index, at)
        for history in histories:
            history.finish()
        self.rows["lots"].sort(key=lambda row: row[0])  # insert in id (= time) order

    def run(self, sink: Sink) -> SeedReport:
        report = SeedReport()
        share = 0.8  # entries that are not expiries: a first guess, then learnt
        primaries_done = 0
        per_chunk = max(1, CHUNK_ENTRIES * self.accounts // max(self.entries, 1))
        started = time.perf_counter()
        account_id = 1
        while account_id <= self.accounts:
            left = self.entries - report.entries
            remaining = self.accounts - account_id + 1
            if remaining == 1:
                primaries = [self._exactly(account_id, left, share)]
            else:
                # Chunks shrink towards the end so that the running correction (the mean
                # is what is left per account) leaves the last account only a small gap.
                size = min(per_chunk, max(1, remaining // 2))
                wants = [self._draw(left / remaining) for _ in range(size)]
                # Stochastic rounding: unbiased even when most accounts want one entry.
                primaries = [int(want * share + self.rng.random()) for want in wants]
                self._replay(account_id, primaries)
            produced = len(self.rows["entries"])
            primaries_done += sum(primaries)
            report.accounts += len(primaries)
            report.entries += produced
            report.lots += len(self.rows["lots"])
            report.allocations += len(self.rows["allocations"])
            share = primaries_done / max(report.entries, 1)
            mark = time.perf_counter()
            sink(self.rows)
            report.load_s += time.perf_counter() - mark
            self.rows = {name: [] for name in TABLES}
            account_id += len(primaries)
        report.kinds = self.kinds
        report.generate_s = time.perf_counter() - started - report.load_s
        return report

    def _exactly(self, account_id: int, want: int, share: float) -> int:
        """The last account takes whatever makes --entries exact. Its count depends on its
        random history (expiries), so try histories until one fits; the closest otherwise
        (the reported counts are always the actual ones)."""
        state = (self.next_entry, self.next_lot, self.next_allocation, self.next_deal,
                 self.kinds.copy())
        best = (math.inf, 0, self.rng.getstate())  # distance, primaries, how to replay it
        for attempt in range(2000 if want > 0 else 1):
            primaries = max(1, round(want * share) + attempt % 7 - 3) if want > 0 else 0
            before = self.rng.getstate()
            self._replay(account_id, [primaries])
            distance = abs(len(self.rows["entries"]) - want)
            if distance == 0:
                return primaries
            if distance < best[0]:
                best = (distance, primaries, before)
            self.rows = {name: [] for name in TABLES}
            self.next_entry, self.next_lot, self.next_allocation, self.next_deal, kinds = state
            self.kinds = kinds.copy()
        self.rng.setstate(best[2])
        self._replay(account_id, [best[1]])
        return best[1]


# -- backends -----------------------------------------------------------------------------

class Backend:
    def __init__(self, db: Database) -> None:
        self.db = db

    def wipe_and_migrate(self) -> None:
        raise NotImplementedError

    def datetime_value(self) -> Callable[[datetime], Any]:
        return lambda value: value

    def date_value(self) -> Callable[[date], Any]:
        return lambda value: value

    def load(self, buffers: Rows) -> None:
        raise NotImplementedError

    def finish_load(self) -> None:
        """Whatever a live system would have done on its own by the time it is that big."""

    def version(self) -> str:
        raise NotImplementedError

    def size_bytes(self) -> int:
        raise NotImplementedError


class SqliteBackend(Backend):
    def __init__(self, db: Database, path: Path) -> None:
        super().__init__(db)
        self.path = path

    def wipe_and_migrate(self) -> None:
        self.db.dispose()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.db.upgrade()

    def datetime_value(self) -> Callable[[datetime], Any]:
        # SQLAlchemy's own conversion: SQLite compares datetimes as text, so the seeded
        # values must be byte-for-byte what the ORM writes.
        dialect = self.db.engine.dialect
        processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        assert processor is not None
        return processor

    def date_value(self) -> Callable[[date], Any]:
        return date.isoformat

    def load(self, buffers: Rows) -> None:
        # The raw sqlite3 connection: executemany of plain tuples is the fastest insert
        # SQLite has, and the engine's connect hook has set the app's PRAGMAs (WAL,
        # foreign_keys=ON), so constraints are checked as in production.
        connection = self.db.engine.raw_connection()
        try:
            raw = connection.driver_connection
            assert raw is not None
            raw.execute("BEGIN IMMEDIATE")
            for table, columns in TABLES.items():
                if buffers[table]:
                    marks = ", ".join("?" * len(columns))
                    raw.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                                    f"VALUES ({marks})", buffers[table])
            raw.execute("COMMIT")
        finally:
            connection.close()

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def size_bytes(self) -> int:
        return sum(Path(f"{self.path}{suffix}").stat().st_size
                   for suffix in ("", "-wal") if Path(f"{self.path}{suffix}").exists())


class PostgresBackend(Backend):
    def wipe_and_migrate(self) -> None:
        with self.db.engine.begin() as connection:
            tables = connection.scalars(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).all()
            if tables:
                names = ", ".join(f'"{name}"' for name in tables)
                connection.execute(text(f"DROP TABLE {names} CASCADE"))
        self.db.upgrade()

    def load(self, buffers: Rows) -> None:
        # COPY is PostgreSQL's bulk path; foreign keys and CHECKs still fire per row.
        connection = self.db.engine.raw_connection()
        try:
            raw = connection.driver_connection
            assert raw is not None
            with raw.cursor() as cursor:
                for table, columns in TABLES.items():
                    if not buffers[table]:
                        continue
                    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in buffers[table]:
                            copy.write_row(row)
            raw.commit()
        finally:
            connection.close()

    def finish_load(self) -> None:
        # Ids were given explicitly, so the sequences must move past them; VACUUM ANALYZE
        # is what autovacuum does to freshly loaded tables (statistics, visibility map).
        with self.db.engine.begin() as connection:
            for table in TABLES:
                connection.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"))
        with self.db.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f"VACUUM ANALYZE {', '.join(TABLES)}"))

    def version(self) -> str:
        with self.db.engine.connect() as connection:
            return "PostgreSQL " + str(connection.scalar(text("SHOW server_version")))

    def size_bytes(self) -> int:
        with self.db.engine.connect() as connection:
            return int(connection.scalar(text(
                "SELECT pg_database_size(current_database())")) or 0)


# -- measuring ----------------------------------------------------------------------------

@dataclass
class Timing:
    name: str
    ops: int
    wall_s: float
    latencies_ms: list[float]
    threads: int = 1
    warmup: int = 0
    processes: int = 1

    @property
    def per_second(self) -> float:
        return self.ops / self.wall_s if self.wall_s else 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else 0.0

    def as_json(self, floor: Timing | None = None) -> dict[str, Any]:
        rate = round(self.per_second, 1)
        figures = {"operation": self.name, "ops": self.ops, "threads": self.threads,
                   "processes": self.processes,
                   "wall_s": round(self.wall_s, 3), "ops_per_s": rate,
                   "p50_ms": round(self.percentile(0.50), 2),
                   "p99_ms": round(self.percentile(0.99), 2)}
        if floor is not None:
            # The ratio of the rates as printed, so that a reader dividing them gets it.
            floor_rate = round(floor.per_second, 1)
            figures["floor"] = {"ops_per_s": floor_rate,
                                "p50_ms": round(floor.percentile(0.50), 3),
                                "p99_ms": round(floor.percentile(0.99), 3),
                                "ratio": round(rate / floor_rate, 3)}
        return figures


def measure(name: str, calls: Sequence[Callable[[], object]], warmup: int,
            threads: int = 1) -> Timing:
    """Run the first `warmup` calls unmeasured, then the rest; wall time covers all threads."""
    for call in calls[:warmup]:
        call()
    measured = calls[warmup:]
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(part: Sequence[Callable[[], object]]) -> None:
        mine = []
        for call in part:
            start = time.perf_counter()
            call()
            mine.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    if threads == 1:
        worker(measured)
    else:
        pool = [threading.Thread(target=worker, args=(measured[i::threads],))
                for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    return Timing(name, len(measured), time.perf_counter() - started, latencies, threads,
                  warmup)


def measure_spread(url: str, name: str, job: ledger_workers.Job, items: Sequence[Any],
                   warmup: int, processes: int) -> Timing:
    """As `measure`, over `processes` worker processes running `job`'s calls on `items`."""
    wall, latencies = ledger_workers.run(url, job, items, warmup, processes)
    return Timing(name, len(items) - warmup, wall, latencies, warmup=warmup,
                  processes=processes)


def ref_of(account_id: int) -> AccountRef:
    return AccountRef(CRM, PORTAL, str(account_id))


def plain_balance(db: Database, ref: AccountRef) -> int | None:
    """The cheapest read the app could do: one column by the unique contact key."""
    with db.transaction(write=False) as session:
        return session.scalar(select(Account.balance).where(
            Account.crm == ref.crm, Account.portal == ref.portal,
            Account.contact_id == ref.contact_id))


def purchase(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(10_000, 2_000_000)) / 100


def run_operations(ledger: Ledger, db: Database, *, accounts: int, ops: int,
                   settle_ops: int, threads: int, processes: int, seed: int) -> list[Timing]:
    rng = random.Random(seed + 1)
    warmup = max(10, min(200, ops // 10))
    timings = []

    def accrue(account: int, key: str, amount: Decimal) -> Callable[[], object]:
        return lambda: ledger.accrue(ref_of(account), amount, key=key)

    calls = [accrue(rng.randint(1, accounts), f"bench:accrue:{n}", purchase(rng))
             for n in range(warmup + ops)]
    timings.append(measure("accrue", calls, warmup))

    refs = [ref_of(rng.randint(1, accounts)) for _ in range(warmup + ops)]
    timings.append(measure("account view (Ledger.account)",
                           [lambda ref=ref: ledger.account(ref) for ref in refs], warmup))
    refs = [ref_of(rng.randint(1, accounts)) for _ in range(warmup + ops)]
    timings.append(measure("balance column read",
                           [lambda ref=ref: plain_balance(db, ref) for ref in refs], warmup))

    # Distinct accounts holding at least 100 points, so every partial redemption redeems.
    with db.transaction(write=False) as session:
        rich = list(session.scalars(select(Account.id).where(Account.balance >= 10_000)
                                    .order_by(Account.id)))
    chosen = rng.sample(rich, min(len(rich), warmup + ops))

    def redeem(account: int, key: str, points: Decimal) -> Callable[[], object]:
        return lambda: ledger.redeem(ref_of(account), points, key=key, partial=True)

    calls = [redeem(account, f"bench:redeem:{n}", Decimal(rng.randint(10, 150)))
             for n, account in enumerate(chosen)]
    timings.append(measure("redeem (partial)", calls, min(warmup, len(calls) // 10)))

    if settle_ops:
        # The Bitrix24 path for a won deal (processor.deal_event and reconcile).
        def settle(account: int, deal: int, amount: Decimal) -> Callable[[], object]:
            return lambda: ledger.settle_purchase(
                ref_of(account), deal_source(PORTAL, f"bench-{deal}"), amount,
                category="0", actor=ACTOR, comment=f"deal bench-{deal}")

        small = max(2, min(20, settle_ops // 10))
        calls = [settle(rng.randint(1, accounts), n, purchase(rng))
                 for n in range(small + settle_ops)]
        timings.append(measure("settle_purchase (new deal)", calls, small))

    if threads > 1:
        calls = [accrue(rng.randint(1, accounts), f"bench:accrue-mt:{n}", purchase(rng))
                 for n in range(warmup + ops)]
        timings.append(measure(f"accrue, {threads} threads", calls, warmup, threads))
    if processes > 1:
        items = [(CRM, PORTAL, str(rng.randint(1, accounts)), f"bench:accrue-mp:{n}",
                  purchase(rng)) for n in range(warmup + ops)]
        timings.append(measure_spread(db.url, f"accrue, {processes} processes",
                                      ledger_workers.accrue_job, items, warmup, processes))
    return timings


# -- the run ------------------------------------------------------------------------------

def check_target(url: str, allow_wipe: bool) -> None:
    parsed = make_url(url)
    name = parsed.database or ""
    if parsed.get_backend_name() == "postgresql" and name == "test":
        raise SystemExit("refusing to wipe the database `test` (shared); use loyalty_bench")
    if not allow_wipe and "bench" not in Path(name).name:
        raise SystemExit(f"this benchmark drops every table in {name!r}; use a database whose "
                         "name contains 'bench' or pass --allow-wipe")


def machine(backend: Backend) -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "sqlalchemy": sqlalchemy.__version__,
            "database": backend.version()}


def run(url: str, *, accounts: int, entries: int, ops: int, settle_ops: int, threads: int,
        processes: int = 1, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    settings = load_settings(None, database={"url": url})
    db = Database(settings.database)
    program = Program(settings.program)
    backend: Backend
    if db.is_postgres:
        backend = PostgresBackend(db)
    else:
        database = make_url(db.url).database
        assert database and database != ":memory:", "a file is needed (several connections)"
        backend = SqliteBackend(db, Path(database))
        # One writer at a time on SQLite: threads or processes would only queue.
        threads = processes = 1

    started = time.perf_counter()
    backend.wipe_and_migrate()
    migrate_s = time.perf_counter() - started
    progress(f"schema ready in {migrate_s:.1f}s; seeding {accounts:,} accounts, "
             f"{entries:,} entries")

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    seeder = Seeder(program, accounts=accounts, entries=entries, seed=seed, now=now,
                    dt=backend.datetime_value(), day=backend.date_value())
    report = seeder.run(backend.load)
    mark = time.perf_counter()
    backend.finish_load()
    report.finish_s = time.perf_counter() - mark
    progress(f"seeded in {report.generate_s + report.load_s + report.finish_s:.1f}s; "
             "verifying")

    ledger = Ledger(db, program)
    mark = time.perf_counter()
    checked, mismatches = ledger.verify()
    verify_s = time.perf_counter() - mark
    if mismatches:
        raise SystemExit(f"seeded books do not balance: {len(mismatches)} mismatches, "
                         f"first: {mismatches[0]}")
    progress(f"verified {checked:,} accounts in {verify_s:.1f}s; measuring")

    timings = run_operations(ledger, db, accounts=accounts, ops=ops, settle_ops=settle_ops,
                             threads=threads, processes=processes, seed=seed)
    mark = time.perf_counter()
    checked_after, mismatches_after = ledger.verify()
    verify_after_s = time.perf_counter() - mark
    # After the last verify: the floor's copies of the rows unbalance the book.
    progress("measuring the bare-SQL floor")
    rng = random.Random(seed + 2)
    refs = [(CRM, PORTAL, str(rng.randint(1, accounts))) for _ in range(2 * ops)]
    floor = floors(db, timings, refs, measure,
                   lambda *args: measure_spread(db.url, *args))
    result = {
        "machine": machine(backend),
        "backend": db.dialect,
        "seed": seed,
        "data": {"accounts": report.accounts, "entries": report.entries, "lots": report.lots,
                 "allocations": report.allocations, "entry_kinds": dict(report.kinds),
                 "size_mb": round(backend.size_bytes() / 2**20)},
        "seeding": {"migrate_s": round(migrate_s, 1),
                    "generate_s": round(report.generate_s, 1),
                    "load_s": round(report.load_s, 1),
                    "finish_s": round(report.finish_s, 1),
                    "total_s": round(report.generate_s + report.load_s + report.finish_s, 1),
                    "method": "COPY FROM STDIN (psycopg)" if db.is_postgres
                    else "sqlite3 executemany"},
        "verify": {"accounts": checked, "mismatches": len(mismatches),
                   "seconds": round(verify_s, 2),
                   "after_benchmark": {"accounts": checked_after,
                                       "mismatches": len(mismatches_after),
                                       "seconds": round(verify_after_s, 2)}},
        "operations": [timing.as_json(floor.get(timing.name)) for timing in timings],
    }
    db.dispose()
    return result


def table(result: dict[str, Any]) -> str:
    info, data, seeding = result["machine"], result["data"], result["seeding"]
    verify = result["verify"]
    lines = [
        f"machine   {info['nproc']} CPUs, Python {info['python']}, SQLAlchemy "
        f"{info['sqlalchemy']}, {info['database']}",
        f"data      {data['accounts']:,} accounts, {data['entries']:,} entries "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(data['entry_kinds'].items()))}), "
        f"{data['lots']:,} lots, {data['allocations']:,} allocations, {data['size_mb']} MB",
        f"seeding   {seeding['total_s']}s ({seeding['method']}: generate "
        f"{seeding['generate_s']}s, load {seeding['load_s']}s, finish {seeding['finish_s']}s)",
        f"verify    {verify['accounts']:,} accounts, {verify['mismatches']} mismatches, "
        f"{verify['seconds']}s (after the benchmark: {verify['after_benchmark']['mismatches']} "
        f"mismatches, {verify['after_benchmark']['seconds']}s)",
        "",
        f"{'operation':<32} {'workers':>7} {'ops':>6} {'ops/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'floor ops/s':>11} {'floor p50':>9} {'/ floor':>7}",
    ]
    for op in result["operations"]:
        floor = op.get("floor")
        versus = (f" {floor['ops_per_s']:>11.1f} {floor['p50_ms']:>9.3f} {floor['ratio']:>7.3f}"
                  if floor else f" {'–':>11} {'–':>9} {'–':>7}")
        lines.append(f"{op['operation']:<32} {max(op['threads'], op['processes']):>7} "
                     f"{op['ops']:>6} "
                     f"{op['ops_per_s']:>8.1f} {op['p50_ms']:>8.2f} {op['p99_ms']:>8.2f}"
                     + versus)
    lines.append("floor: the same rows written with plain statements on the driver's "
                 "connection, one commit per operation (reads: one SELECT of the account "
                 "row); / floor = ops/s over the floor's")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temp dir")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--ops", type=int, default=2000, help="measured calls per operation")
    parser.add_argument("--settle-ops", type=int, default=200,
                        help="measured settle_purchase calls (0: skip)")
    parser.add_argument("--threads", type=int, default=4,
                        help="threads for the concurrent accrual run (PostgreSQL; 1: skip)")
    parser.add_argument("--processes", type=int, default=0,
                        help="worker processes for a concurrent accrual run, each with its "
                             "own engine (PostgreSQL; 0 or 1: skip)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--allow-wipe", action="store_true",
                        help="allow emptying a database whose name lacks 'bench'")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.accounts < 1 or args.entries < 0 or args.ops < 1:
        parser.error("--accounts and --ops must be positive, --entries not negative")

    def progress(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as scratch:
        url = normalise_url(args.database_url or f"sqlite:///{scratch}/ledger-bench.db")
        check_target(url, args.allow_wipe)
        result = run(url, accounts=args.accounts, entries=args.entries, ops=args.ops,
                     settle_ops=args.settle_ops, threads=args.threads,
                     processes=args.processes, seed=args.seed,
                     progress=progress)
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
