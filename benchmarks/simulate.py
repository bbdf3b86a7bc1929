"""How long `simulate` takes to replay a large book: the entries streamed in id order and
replayed under the current and a proposed program, on SQLite or PostgreSQL.

The book is seeded straight into the tables by the ledger benchmark's seeder (bulk inserts:
sqlite3 executemany, PostgreSQL COPY; the engine would take hours), which writes accruals the
way settle_purchase does, redemptions, bonuses and expiries. The run also says whether the
current program's replay gave every seeded accrual's points (it must: 0 differing entries).

    .venv/bin/python benchmarks/simulate.py [--database-url URL] [--entries 200000]
        [--accounts N] [--seed 1] [--json]

Without --database-url a fresh SQLite file in a temporary directory is used. The target
database is emptied first: unless its name contains "bench", --allow-wipe is required.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ledger import (  # noqa: E402
    Backend,
    PostgresBackend,
    Seeder,
    SqliteBackend,
    check_target,
    machine,
)
from sqlalchemy.engine import make_url  # noqa: E402

from connector.config import ProgramSettings, load_settings  # noqa: E402
from connector.db import Database, normalise_url  # noqa: E402
from connector.economics import table  # noqa: E402
from connector.economics.simulate import simulate  # noqa: E402
from connector.program import Program  # noqa: E402

# A richer program to weigh: lower thresholds, higher rates, a double-points month.
PROPOSED = {
    "tiers": [{"name": "Member", "min_spend": "0", "rate": "0.04"},
              {"name": "Silver", "min_spend": "20000", "rate": "0.06"},
              {"name": "Gold", "min_spend": "80000", "rate": "0.08"}],
    "campaigns": [{"name": "Double month", "starts": "2025-11-01T00:00:00",
                   "ends": "2025-12-01T00:00:00", "multiplier": "2"}],
}


def run(url: str, *, accounts: int, entries: int, seed: int,
        progress: Callable[[str], None]) -> dict[str, Any]:
    settings = load_settings(None, database={"url": url})
    db = Database(settings.database)
    backend: Backend
    if db.is_postgres:
        backend = PostgresBackend(db)
    else:
        database = make_url(db.url).database
        assert database and database != ":memory:", "a file is needed"
        backend = SqliteBackend(db, Path(database))
    backend.wipe_and_migrate()
    progress(f"seeding {accounts:,} accounts, {entries:,} entries")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    seeder = Seeder(Program(settings.program), accounts=accounts, entries=entries, seed=seed,
                    now=now, dt=backend.datetime_value(), day=backend.date_value())
    mark = time.perf_counter()
    report = seeder.run(backend.load)
    backend.finish_load()
    seed_s = time.perf_counter() - mark
    progress(f"seeded in {seed_s:.1f}s; simulating")
    mark, cpu = time.perf_counter(), time.process_time()
    sim = simulate(db, settings.program, ProgramSettings(**PROPOSED), now=now)
    simulate_s = time.perf_counter() - mark
    # On a shared machine the wall time depends on the neighbours; CPU time much less
    # (SQLite reads in this process; PostgreSQL's side is not counted).
    simulate_cpu_s = time.process_time() - cpu
    progress(f"simulated in {simulate_s:.1f}s ({simulate_cpu_s:.1f}s CPU)")
    result = {
        "machine": machine(backend),
        "backend": db.dialect,
        "seed": seed,
        "data": {"accounts": report.accounts, "entries": report.entries,
                 "entry_kinds": dict(report.kinds)},
        "seed_s": round(seed_s, 1),
        "simulate_s": round(simulate_s, 1),
        "simulate_cpu_s": round(simulate_cpu_s, 1),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "entries_per_s": round(sim.entries / simulate_s) if simulate_s else None,
        "differing_entries": sim.differing_entries,
        "tier_syncs": sim.tier_syncs,
        "simulation": sim.as_json(),
        "table": table.text(sim),
    }
    db.dispose()
    return result


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temp dir")
    parser.add_argument("--entries", type=int, default=200_000,
                        help="entries to seed (1000000 for the README's figure)")
    parser.add_argument("--accounts", type=int, help="default: one per 10 entries")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--allow-wipe", action="store_true",
                        help="allow emptying a database whose name lacks 'bench'")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(list(argv) if argv is not None else None)
    accounts = args.accounts or max(1, args.entries // 10)
    if args.entries < 1 or accounts < 1:
        parser.error("--entries and --accounts must be positive")

    def progress(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="simulate-bench-") as scratch:
        url = normalise_url(args.database_url or f"sqlite:///{scratch}/simulate-bench.db")
        check_target(url, args.allow_wipe)
        result = run(url, accounts=accounts, entries=args.entries, seed=args.seed,
                     progress=progress)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))
        return
    data = result["data"]
    print(f"{data['entries']:,} entries, {data['accounts']:,} accounts on "
          f"{result['machine']['database']}: seeded in {result['seed_s']}s, simulated in "
          f"{result['simulate_s']}s ({result['entries_per_s']:,} entries/s, "
          f"{result['simulate_cpu_s']}s CPU, peak {result['peak_memory_mb']} MB); "
          f"{result['differing_entries']} entries replay differently from the ledger")
    print(result["table"])


if __name__ == "__main__":
    main()
