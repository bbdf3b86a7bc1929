"""Calls of benchmarks/ledger.py spread over worker processes, each with its own engine.

Threads in one process share the GIL, so on PostgreSQL a few of them add little to one: the
ledger's Python per call is the bound. Processes are how the app scales out (several `web`
and `worker` processes on one database), so the concurrent run can use them instead.

Each process opens its own `Database` on the URL, builds its calls (`job`, a module-level
function so that a spawned process can import it), runs its share of the warm-up, then
waits for the others; the wall time runs from all of them starting their measured calls to
the last one finishing.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from connector.config import load_settings
from connector.db import Database

# (db, items) -> one call per item; runs in the worker process.
Job = Callable[[Database, Sequence[Any]], list[Callable[[], object]]]


def run(url: str, job: Job, items: Sequence[Any], warmup: int, processes: int
        ) -> tuple[float, list[float]]:
    """Wall seconds and per-call latencies (ms) of items[warmup:] over `processes` workers;
    item n goes to worker n % processes, its warm-up share first."""
    context = multiprocessing.get_context("spawn")  # no engine or socket inherited
    start = context.Barrier(processes + 1)
    results = context.Queue()
    pool = [context.Process(target=_worker,
                            args=(url, job, items[i:warmup:processes], items[warmup + i::processes],
                                  start, results), daemon=True)
            for i in range(processes)]
    for process in pool:
        process.start()
    start.wait(timeout=600)
    started = time.perf_counter()
    latencies: list[float] = []
    for _ in pool:
        outcome = results.get(timeout=600)
        if isinstance(outcome, str):
            raise RuntimeError(f"a benchmark worker failed: {outcome}")
        latencies.extend(outcome)
    wall = time.perf_counter() - started
    for process in pool:
        process.join()
    return wall, latencies


def _worker(url: str, job: Job, warmup: Sequence[Any], measured: Sequence[Any],
            start: Any, results: Any) -> None:
    db = Database(load_settings(None, database={"url": url}).database)
    try:
        calls = job(db, [*warmup, *measured])
        for call in calls[:len(warmup)]:
            call()
        start.wait(timeout=600)
        latencies = []
        for call in calls[len(warmup):]:
            began = time.perf_counter()
            call()
            latencies.append((time.perf_counter() - began) * 1000)
        results.put(latencies)
    except BaseException as exc:  # the parent reports it rather than waiting forever
        start.abort()
        results.put(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        db.dispose()


def accrue_job(db: Database, items: Sequence[tuple[str, str, str, str, Decimal]]
               ) -> list[Callable[[], object]]:
    """items: (crm, portal, contact id, key, amount), as the single-process run's calls."""
    from connector.ledger.engine import Ledger
    from connector.ledger.views import AccountRef
    from connector.program import Program

    ledger = Ledger(db, Program(load_settings(None, database={"url": db.url}).program))
    refs = [AccountRef(crm, portal, contact) for crm, portal, contact, _, _ in items]
    return [lambda ref=ref, key=key, amount=amount: ledger.accrue(ref, amount, key=key)
            for ref, (_, _, _, key, amount) in zip(refs, items, strict=True)]

