"""The bare-SQL floor of benchmarks/ledger.py: what the rows each measured operation wrote
cost when written with plain statements and nothing else.

After the measured run, the rows each operation committed are read back (its entries, their
lots and allocations, the lots it spent from, its account) and written again through the
driver's own connection: one UPDATE of the account, one INSERT per entry, lot and allocation,
one UPDATE per lot spent from, and a commit per operation, as the ledger commits. No ORM, no
idempotency check, no account lock read, no tier query: the floor is the writes alone, so an
operation's ratio to it is what everything else costs. Reads get the same treatment: one
plain SELECT of the account row by its contact key. The concurrent accrual run gets a floor
on as many threads, one driver connection each.

The copies break the book's invariants (a second entry for the same points), so the floor
runs after the final `verify`, on a database that is wiped before the next run anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.db import Database

# Written by the ledger on every posting; the rest of the row stays as it was.
ACCOUNT_WRITTEN = ("balance", "overdraft", "tier", "tier_changed_at", "purchase_count",
                   "purchase_total", "first_purchase_at", "last_purchase_at", "version",
                   "updated_at", "tier_spend", "tier_spend_since", "tier_spend_oldest")
FLOOR_SUFFIX = ":floor"


@dataclass
class Writes:
    """The rows one operation committed."""

    account_id: int
    account: dict[str, Any]
    entries: list[dict[str, Any]]
    # Keyed by the index of their entry in `entries`: the copies point at the copied entry.
    lots: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    allocations: list[tuple[int, int, int]] = field(default_factory=list)  # entry, lot, amount
    spent: list[tuple[int, int]] = field(default_factory=list)  # lot id, remaining


class Floor:
    """Plain statements on one DBAPI connection of the app's own engine (its PRAGMAs and
    connect-time settings apply)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = db.is_postgres
        self.raw = db.engine.raw_connection()
        self.mark = "%s" if self.postgres else "?"

    def close(self) -> None:
        self.raw.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.raw.cursor()
        try:
            if params:
                cursor.execute(sql.replace("?", self.mark), tuple(params))
            else:  # no placeholders: psycopg would read LIKE's % as one
                cursor.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def writes_of(self, groups: list[list[int]]) -> list[Writes]:
        """The rows of each operation, given the ids of the entries it wrote."""
        result = []
        for entry_ids in groups:
            marks = ", ".join("?" * len(entry_ids))
            entries = self._rows(f"SELECT * FROM entries WHERE id IN ({marks}) ORDER BY id",
                                 entry_ids)
            index = {entry["id"]: n for n, entry in enumerate(entries)}
            [account] = self._rows("SELECT * FROM accounts WHERE id = ?",
                                   [entries[0]["account_id"]])
            writes = Writes(account["id"], {c: account[c] for c in ACCOUNT_WRITTEN},
                            [self._json(e) for e in entries])
            # lots has no index on entry_id; by account it is one index range.
            for lot in self._rows(f"SELECT * FROM lots WHERE account_id = ? "
                                  f"AND entry_id IN ({marks})",
                                  [writes.account_id, *entry_ids]):
                writes.lots.append((index[lot["entry_id"]], lot))
            for allocation in self._rows(
                    f"SELECT a.entry_id, a.lot_id, a.amount, l.remaining FROM allocations a "
                    f"JOIN lots l ON l.id = a.lot_id WHERE a.entry_id IN ({marks})", entry_ids):
                writes.allocations.append((index[allocation["entry_id"]], allocation["lot_id"],
                                           allocation["amount"]))
                writes.spent.append((allocation["lot_id"], allocation["remaining"]))
            result.append(writes)
        self.raw.rollback()
        return result

    def _json(self, entry: dict[str, Any]) -> dict[str, Any]:
        if not self.postgres:
            return entry  # JSON columns come back as their text
        from psycopg.types.json import Json

        return {k: Json(v) if isinstance(v, (dict, list)) else v for k, v in entry.items()}

    def write(self, writes: Writes, n: int) -> None:
        """One operation's rows again, in one transaction."""
        cursor = self.raw.cursor()
        try:
            self._begin(cursor, "IMMEDIATE")
            account = writes.account
            sets = ", ".join(f"{c} = ?" for c in account)
            self._execute(cursor, f"UPDATE accounts SET {sets} WHERE id = ?",
                          [*account.values(), writes.account_id])
            new_ids = []
            for entry in writes.entries:
                row = {k: v for k, v in entry.items() if k != "id"}
                row["idempotency_key"] = f"{row['idempotency_key']}{FLOOR_SUFFIX}{n}"
                self._execute(cursor, _insert("entries", row) + " RETURNING id",
                              list(row.values()))
                new_ids.append(cursor.fetchone()[0])
            for entry_index, lot in writes.lots:
                row = {k: v for k, v in lot.items() if k != "id"}
                row["entry_id"] = new_ids[entry_index]
                self._execute(cursor, _insert("lots", row), list(row.values()))
            for lot_id, remaining in writes.spent:
                self._execute(cursor, "UPDATE lots SET remaining = ? WHERE id = ?",
                              [remaining, lot_id])
            for entry_index, lot_id, amount in writes.allocations:
                self._execute(cursor, "INSERT INTO allocations (entry_id, lot_id, amount) "
                                      "VALUES (?, ?, ?)", [new_ids[entry_index], lot_id, amount])
            self.raw.commit()
        finally:
            cursor.close()

    def read(self, crm: str, portal: str, contact_id: str) -> None:
        """The account row by its contact key, in its own transaction."""
        cursor = self.raw.cursor()
        try:
            self._begin(cursor, "DEFERRED")
            self._execute(cursor, "SELECT * FROM accounts WHERE crm = ? AND portal = ? "
                                  "AND contact_id = ?", [crm, portal, contact_id])
            cursor.fetchall()
            self.raw.commit()
        finally:
            cursor.close()

    def _begin(self, cursor: Any, mode: str) -> None:
        # The app's SQLite connections are in autocommit and begin their transactions
        # themselves, writers IMMEDIATE (connector.db); psycopg begins one on the first
        # statement.
        if not self.postgres:
            cursor.execute(f"BEGIN {mode}")

    def _execute(self, cursor: Any, sql: str, params: Sequence[Any]) -> None:
        cursor.execute(sql.replace("?", self.mark), tuple(params))


def _insert(table: str, row: dict[str, Any]) -> str:
    return (f"INSERT INTO {table} ({', '.join(row)}) "
            f"VALUES ({', '.join('?' * len(row))})")


def entry_groups(db: Database, where: str, *, by: str = "id") -> list[list[int]]:
    """Ids of the entries matching `where` (SQL over entries, no parameters), grouped per
    operation by column `by` (an operation's entries share it), in the order written."""
    floor = Floor(db)
    try:
        rows = floor._rows(f"SELECT id, {by} AS op FROM entries WHERE {where} ORDER BY id")
        floor.raw.rollback()
    finally:
        floor.close()
    groups: dict[Any, list[int]] = {}
    for row in rows:
        groups.setdefault(row["op"], []).append(row["id"])
    return list(groups.values())


def floor_calls(db: Database, groups: list[list[int]], *, threads: int = 1, warmup: int = 0
                ) -> tuple[list[Floor], list[Callable[[], None]]]:
    """A call per operation writing its rows again; with `threads`, one connection per
    thread (measure gives measured call m to thread m % threads)."""
    pool = [Floor(db) for _ in range(threads)]
    writes = pool[0].writes_of(groups)
    owners = [pool[max(n - warmup, 0) % threads] for n in range(len(writes))]
    return pool, [lambda w=w, n=n, f=f: f.write(w, n)
                  for n, (w, f) in enumerate(zip(writes, owners, strict=True))]


def floor_job(db: Database, items: Sequence[tuple[int, list[int]]]) -> list[Callable[[], None]]:
    """For ledger_workers: in a worker process, a call per (n, the entry ids one operation
    wrote) writing its rows again; the rows are read before the measured calls."""
    floor = Floor(db)
    writes = floor.writes_of([group for _, group in items])
    return [lambda w=w, n=n: floor.write(w, n)
            for (n, _), w in zip(items, writes, strict=True)]


# The measured operations of ledger.py whose rows the floor writes again: how to find each
# one's entries, and which column an operation's entries share.
WRITTEN = {
    "accrue": ("idempotency_key LIKE 'bench:accrue:%'", "idempotency_key"),
    "redeem (partial)": ("idempotency_key LIKE 'bench:redeem:%'", "idempotency_key"),
    "settle_purchase (new deal)": ("source LIKE 'bitrix24:%:deal:bench-%'", "source"),
}
# The concurrent accrual runs ("accrue, 4 threads", "accrue, 4 processes"): their floors
# run on as many threads, or processes.
CONCURRENT = ("accrue, ", "idempotency_key LIKE 'bench:accrue-mt:%'", "idempotency_key")
SPREAD = ("idempotency_key LIKE 'bench:accrue-mp:%'", "idempotency_key")
READS = ("account view (Ledger.account)", "balance column read")


def floors(db: Database, timings: Sequence[Any], refs: Sequence[tuple[str, str, str]],
           measure: Callable[..., Any], spread: Callable[..., Any]) -> dict[str, Any]:
    """A floor Timing per operation of `timings` that has one, each with as many calls,
    the same warm-up and as many threads or processes as the operation had (`spread`:
    ledger.py's measure over processes, given a job and its items)."""
    result: dict[str, Any] = {}
    for timing in timings:
        warmup, threads = timing.warmup, timing.threads
        if timing.processes > 1:
            groups = entry_groups(db, SPREAD[0], by=SPREAD[1])[:warmup + timing.ops]
            result[timing.name] = spread(f"floor: {timing.name}", floor_job,
                                         list(enumerate(groups)), warmup, timing.processes)
            continue
        if timing.name in WRITTEN or (threads > 1 and timing.name.startswith(CONCURRENT[0])):
            where, by = WRITTEN.get(timing.name, CONCURRENT[1:])
            groups = entry_groups(db, where, by=by)[:warmup + timing.ops]
            pool, calls = floor_calls(db, groups, threads=threads, warmup=warmup)
        elif timing.name in READS and threads == 1:
            pool = [Floor(db)]
            reader = pool[0].read
            calls = [lambda r=r, read=reader: read(*r) for r in refs[:warmup + timing.ops]]
        else:
            continue
        try:
            result[timing.name] = measure(f"floor: {timing.name}", calls, warmup, threads)
        finally:
            for floor in pool:
                floor.close()
    return result
