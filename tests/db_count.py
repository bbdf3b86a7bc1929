"""Counting what a piece of code asks of the database: transactions and statements, each
with the moment it began, so a test can also count those before some other event (a CRM
call the sandbox recorded at a known time).

    with counting(services.db.engine) as seen:
        run_job(services, job)
    assert seen.transactions == 9

A transaction is a `begin` on a connection of the engine (SQLAlchemy's event: SQLite's
`BEGIN IMMEDIATE` and PostgreSQL's implicit BEGIN alike); a statement is one cursor execute
but SQLite's explicit BEGIN, so both databases count the same code the same way."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event


@dataclass
class Seen:
    begun: list[float] = field(default_factory=list)  # time.time() of each transaction
    statements: list[tuple[float, str]] = field(default_factory=list)
    # Each transaction's statements (one thread's transactions do not interleave).
    grouped: list[list[str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def transactions(self) -> int:
        return len(self.begun)

    def transactions_before(self, at: float) -> int:
        return sum(1 for t in self.begun if t < at)

    def statements_before(self, at: float) -> int:
        return sum(1 for t, _ in self.statements if t < at)

    def show(self) -> str:
        """The statements in order, one a line (for an assertion's message)."""
        return "\n".join(" ".join(s.split())[:120] for _, s in self.statements)


@contextmanager
def counting(engine: Engine) -> Iterator[Seen]:
    seen = Seen()

    def on_begin(_connection: Any) -> None:
        with seen._lock:
            seen.begun.append(time.time())
            seen.grouped.append([])

    def on_statement(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # SQLite's BEGIN is sent by the engine's own begin listener: not a statement here.
        if statement.startswith("BEGIN"):
            return
        with seen._lock:
            seen.statements.append((time.time(), statement))
            if seen.grouped:
                seen.grouped[-1].append(statement)

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "begin", on_begin)
