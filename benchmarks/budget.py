"""What the shared CRM request budget costs per request, on SQLite, PostgreSQL and Redis.

Each backend reserves `--ops` slots of a budget too large to ever make anyone wait, so what
is timed is the reservation alone: one process alone, then `--processes` processes at once
(contention on the one row or key). The in-process LeakyBucket is shown for reference, and
PostgreSQL also with synchronous_commit on (the budget's own connections turn it off).

    .venv/bin/python benchmarks/budget.py [--ops 3000 --processes 3]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_bench]
        [--redis-url redis://127.0.0.1:6379/0] [--json]

The SQLite file is a fresh one in a temporary directory; PostgreSQL's crm_budgets rows of
the portal "bench-<pid>" are used and deleted; Redis keys under "loyalty-bench:" likewise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from connector.config import DatabaseSettings  # noqa: E402
from connector.crm.budget import Budget, DatabaseBudget, RedisBudget, budget_engine  # noqa: E402
from connector.crm.limiter import LeakyBucket  # noqa: E402
from connector.db import Database  # noqa: E402

UNBOUNDED = {"rate": 1e9, "burst": 10**9}  # nobody ever waits: only the reservation is timed
REDIS_PREFIX = "loyalty-bench:"


def make_budget(kind: str, target: str, portal: str) -> tuple[Budget, Any]:
    """A budget of `kind` on `target` (a database URL or Redis URL) and what to close."""
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(target)
        return RedisBudget(client, REDIS_PREFIX, "bench", portal, **UNBOUNDED), client
    db = Database(DatabaseSettings(url=target))
    engine = budget_engine(db)
    if kind == "postgresql-synchronous":
        engine = create_engine(db.url, pool_size=2, isolation_level="AUTOCOMMIT")
    return DatabaseBudget(db, engine, "bench", portal, **UNBOUNDED), db


def timed(kind: str, target: str, portal: str, ops: int
          ) -> tuple[list[float], float, float]:
    """Seconds each of `ops` reservations took, after a warm-up; when the loop started and
    ended (wall clock, comparable between processes)."""
    budget, handle = make_budget(kind, target, portal)
    for _ in range(50):
        budget.reserve()
    times = []
    began = time.time()
    for _ in range(ops):
        started = time.perf_counter()
        budget.reserve()
        times.append(time.perf_counter() - started)
    if isinstance(handle, Database):
        handle.dispose()
    else:
        handle.close()
    return times, began, time.time()


def _child(args: tuple[str, str, str, int]) -> tuple[list[float], float, float]:
    return timed(*args)


def measure(kind: str, target: str, ops: int, processes: int) -> dict[str, Any]:
    portal = f"bench-{time.monotonic_ns()}"
    alone = timed(kind, target, portal, ops)[0]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        together = pool.map(_child, [(kind, target, portal, ops)] * processes)
    # From the first loop's start to the last one's end (the processes start unevenly).
    wall = max(end for _, _, end in together) - min(began for _, began, _ in together)
    flat = sorted(t for times, _, _ in together for t in times)
    cleanup(kind, target, portal)
    return {
        "backend": kind,
        "alone_mean_us": statistics.fmean(alone) * 1e6,
        "alone_p50_us": statistics.median(alone) * 1e6,
        "alone_p99_us": sorted(alone)[int(len(alone) * 0.99)] * 1e6,
        "together_mean_us": statistics.fmean(flat) * 1e6,
        "together_p99_us": flat[int(len(flat) * 0.99)] * 1e6,
        "together_per_second": len(flat) / wall,
    }


def cleanup(kind: str, target: str, portal: str) -> None:
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(target)
        client.delete(f"{REDIS_PREFIX}budget:bench:{portal}")
        client.close()
        return
    db = Database(DatabaseSettings(url=target))
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM crm_budgets WHERE portal = :p"), {"p": portal})
    db.dispose()


def in_process(ops: int) -> dict[str, Any]:
    bucket = LeakyBucket(**UNBOUNDED)
    times = []
    for _ in range(ops):
        started = time.perf_counter()
        bucket.acquire()
        times.append(time.perf_counter() - started)
    return {"backend": "process (LeakyBucket)", "alone_mean_us": statistics.fmean(times) * 1e6,
            "alone_p50_us": statistics.median(times) * 1e6,
            "alone_p99_us": sorted(times)[int(len(times) * 0.99)] * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--database-url", help="PostgreSQL (its own database, not `test`)")
    parser.add_argument("--redis-url")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    rows = [in_process(options.ops)]
    with tempfile.TemporaryDirectory() as directory:
        sqlite = f"sqlite:///{directory}/budget.db"
        Database(DatabaseSettings(url=sqlite)).upgrade()
        targets = [("sqlite", sqlite)]
        if options.database_url:
            Database(DatabaseSettings(url=options.database_url)).upgrade()
            targets += [("postgresql", options.database_url),
                        ("postgresql-synchronous", options.database_url)]
        if options.redis_url:
            targets.append(("redis", options.redis_url))
        for kind, target in targets:
            print(f"measuring {kind}...", file=sys.stderr)
            rows.append(measure(kind, target, options.ops, options.processes))
    if options.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"\n{options.ops} reservations per process; {options.processes} processes at once\n")
    print("| backend | alone: mean / p50 / p99 µs | "
          f"{options.processes} at once: mean / p99 µs | reservations/s (all) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        together = (f"{row['together_mean_us']:,.0f} / {row['together_p99_us']:,.0f}"
                    if "together_mean_us" in row else "")
        per_second = f"{row['together_per_second']:,.0f}" if together else ""
        print(f"| {row['backend']} | {row['alone_mean_us']:,.1f} / {row['alone_p50_us']:,.1f} / "
              f"{row['alone_p99_us']:,.1f} | {together} | {per_second} |")


if __name__ == "__main__":
    main()
