"""Fault knobs shared by the fake CRMs: random chaos, a request log, and a gate that holds
requests until the test lets them through.

    fake.chaos = Chaos(seed=7, errors=0.2, resets=0.05, slow=0.05, slow_seconds=1.5,
                       down=[(start, start + 120)])   # fake-clock seconds
    ...
    assert fake.request_log.max_in_window(60) <= fake_limit_per_minute

Chaos draws from its own seeded RNG once per request, in arrival order, so a client that sends
one request at a time sees the same faults on every run.
"""

from __future__ import annotations

import bisect
import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["ok", "down", "reset", "error", "slow"]


@dataclass
class Chaos:
    """Random faults: `errors` of the requests answer one of `statuses`, `resets` are dropped
    without an answer, `slow` are held `slow_seconds` of real time and then run (beyond the
    client's timeout, the CRM still does the work). While the fake clock is inside a `down`
    window every connection is reset. `max_slow` bounds the real time slow answers cost."""

    seed: int = 0
    errors: float = 0.0
    statuses: tuple[int, ...] = (503, 429, 500)
    resets: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 0.0
    max_slow: int | None = None
    down: list[tuple[float, float]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self, now: float) -> tuple[Verdict, int]:
        """What happens to a request arriving at fake time `now`: (verdict, status)."""
        verdict: Verdict = "ok"
        status = 0
        roll = self._rng.random()  # one draw per request keeps the sequence reproducible
        pick = self._rng.choice(self.statuses) if self.statuses else 500
        if any(start <= now < end for start, end in self.down):
            verdict = "down"
        elif roll < self.errors:
            verdict, status = "error", pick
        elif roll < self.errors + self.resets:
            verdict = "reset"
        elif roll < self.errors + self.resets + self.slow and (
                self.max_slow is None or self.counts.get("slow", 0) < self.max_slow):
            verdict = "slow"
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        return verdict, status


class RequestLog:
    """Arrival times (fake-clock monotonic seconds) of every HTTP request, faulted or not."""

    def __init__(self) -> None:
        self._times: list[float] = []
        self._lock = threading.Lock()

    def add(self, at: float) -> None:
        with self._lock:
            bisect.insort(self._times, at)

    @property
    def times(self) -> list[float]:
        with self._lock:
            return list(self._times)

    def __len__(self) -> int:
        return len(self.times)

    def between(self, start: float, end: float) -> int:
        times = self.times
        return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)

    def max_in_window(self, seconds: float) -> int:
        """The most requests seen in any sliding window of `seconds`."""
        times = self.times
        best = 0
        first = 0
        for last, at in enumerate(times):
            while at - times[first] >= seconds:
                first += 1
            best = max(best, last - first + 1)
        return best


class Gate:
    """Holds requests at the door: open by default; hold() closes it, allow(n) lets n more
    through, release() opens it for good. `waiting` counts requests held right now,
    `arrived` every request that came to the gate, open or not."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._open = True
        self._allowance = 0
        self.waiting = 0
        self.arrived = 0

    def hold(self) -> None:
        with self._condition:
            self._open = False
            self._allowance = 0

    def allow(self, count: int) -> None:
        with self._condition:
            self._allowance += count
            self._condition.notify_all()

    def release(self) -> None:
        with self._condition:
            self._open = True
            self._condition.notify_all()

    def enter(self, timeout: float = 120.0) -> None:
        """Wait until this request may pass (never longer than `timeout`: a forgotten gate
        must not hang a test run)."""
        with self._condition:
            self.arrived += 1
            if self._open:
                return
            self.waiting += 1
            try:
                self._condition.wait_for(lambda: self._open or self._allowance > 0, timeout)
                if not self._open and self._allowance > 0:
                    self._allowance -= 1
            finally:
                self.waiting -= 1


def drop_connection(environ: dict[str, Any]) -> None:
    """Close the client's connection with no answer: SO_LINGER 0 makes the close a TCP reset,
    and the shutdown lets the client see it at once. The raised ConnectionError is how
    werkzeug is told to write nothing."""
    sock = environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    raise ConnectionAbortedError("fake CRM dropped the connection")
