"""The ledger benchmark's bare-SQL floor, briefly: it writes again exactly the rows the
measured calls committed, and every single-threaded operation gets a ratio to it."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "ledger.py"


def load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledger_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def copies(connection: sqlite3.Connection, table_sql: str) -> list[tuple[object, ...]]:
    return connection.execute(table_sql).fetchall()


def test_the_floor_writes_the_measured_rows_again(tmp_path: Path) -> None:
    ledger = load_benchmark()
    path = tmp_path / "ledger-bench.db"
    result = ledger.run(f"sqlite:///{path}", accounts=200, entries=2000, ops=30, settle_ops=10,
                        threads=1, seed=3, progress=lambda _line: None)
    assert result["verify"]["after_benchmark"]["mismatches"] == 0
    for operation in result["operations"]:
        floor = operation["floor"]
        assert floor["ops_per_s"] > 0
        assert floor["ratio"] == round(operation["ops_per_s"] / floor["ops_per_s"], 3)
    with sqlite3.connect(path) as connection:
        for like in ("bench:accrue:%", "bench:redeem:%"):
            original = copies(connection, f"""
                SELECT account_id, kind, amount, source, balance_after FROM entries
                WHERE idempotency_key LIKE '{like}' AND idempotency_key NOT LIKE '%:floor%'
                ORDER BY id""")
            copied = copies(connection, f"""
                SELECT account_id, kind, amount, source, balance_after FROM entries
                WHERE idempotency_key LIKE '{like[:-1]}%:floor%' ORDER BY id""")
            assert copied == original and original
        # Each copied entry has the lots and allocations its original has.
        for table in ("lots", "allocations"):
            [(original, copied)] = copies(connection, f"""
                SELECT sum(e.idempotency_key NOT LIKE '%:floor%'),
                       sum(e.idempotency_key LIKE '%:floor%')
                FROM {table} t JOIN entries e ON e.id = t.entry_id
                WHERE e.idempotency_key LIKE 'bench:%' OR e.source LIKE '%:deal:bench-%'""")
            assert copied == original and original


def test_the_processes_run_and_its_floor_write_through_worker_processes(tmp_path: Path) -> None:
    ledger = load_benchmark()
    from benchmarks import ledger_floor, ledger_workers

    url = f"sqlite:///{tmp_path / 'ledger-bench.db'}"
    ledger.run(url, accounts=50, entries=300, ops=10, settle_ops=0, threads=1, seed=3,
               progress=lambda _line: None)
    items = [(ledger.CRM, ledger.PORTAL, str(n % 50 + 1), f"bench:accrue-mp:{n}",
              ledger.Decimal("100.00")) for n in range(14)]
    timing = ledger.measure_spread(url, "accrue, 2 processes", ledger_workers.accrue_job,
                                   items, 4, 2)
    assert (timing.ops, timing.processes, len(timing.latencies_ms)) == (10, 2, 10)
    db = ledger.Database(ledger.load_settings(None, database={"url": url}).database)
    groups = ledger_floor.entry_groups(db, ledger_floor.SPREAD[0], by=ledger_floor.SPREAD[1])
    db.dispose()
    assert len(groups) == 14  # every call, warm-up included, wrote its entry once
    floor = ledger.measure_spread(url, "floor", ledger_floor.floor_job,
                                  list(enumerate(groups)), 4, 2)
    assert floor.ops == 10 and floor.wall_s > 0
    with sqlite3.connect(tmp_path / "ledger-bench.db") as connection:
        [(copied,)] = copies(connection, "SELECT count(*) FROM entries "
                                         "WHERE idempotency_key LIKE 'bench:accrue-mp:%:floor%'")
    assert copied == 14
