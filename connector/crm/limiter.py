"""Client-side leaky bucket, mirroring the CRM's own, so normal work never trips its limit.

This one bucket is one process's; connector.crm.budget shares a bucket between processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

MIN_SLEEP_S = 0.001


class Limiter(Protocol):
    """What a CRM client needs of its rate limiter (LeakyBucket, budget.SharedBucket)."""

    waited_seconds: float

    def acquire(self) -> float:
        """Block until one request may be sent; returns the seconds waited."""

    def acquire_local(self) -> float:
        """As acquire, on this process's bucket alone (see SharedBucket.acquire_local)."""

    def pause(self, seconds: float) -> None:
        """The CRM said "too many": nobody sends for `seconds`."""


class LeakyBucket:
    """`burst` requests at once, then `rate` per second.

    The bucket's level rises by one per request and drains by `rate` per second; a request
    waits while the level would pass `burst`. Thread-safe; the clock and sleep are injectable
    so tests and benchmarks can run on accelerated time.
    """

    def __init__(self, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 on_wait: Callable[[float], None] | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self._level = 0.0
        self._at = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self.waited_seconds = 0.0
        self.on_wait = on_wait  # told the seconds of every request that had to wait (metrics)

    @classmethod
    def under(cls, rate: float, burst: int, **options: Any) -> LeakyBucket:
        """A bucket one request under the CRM's own (`rate`, `burst`): requests leave here on
        time but arrive with network jitter, and two that arrive closer than they left must
        still fit the CRM's bucket. amoCRM blocks an account that passes its limit again and
        again; Bitrix24 answers QUERY_LIMIT_EXCEEDED."""
        return cls(rate, max(burst - 1, 1), **options)

    def _drain(self, now: float) -> None:
        self._level = max(0.0, self._level - (now - self._at) * self.rate)
        self._at = now

    def acquire(self) -> float:
        """Block until one request may be sent; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                self._drain(now)
                wait = max(self._paused_until - now,
                           (self._level + 1 - self.burst) / self.rate, 0.0)
                if wait <= 0:
                    self._level += 1
                    self.waited_seconds += waited
                    break
            # Float residue (a level of 7.0000001) must neither let a request through early
            # nor become a sleep too short for the clock to notice, which would spin forever.
            wait = max(wait, MIN_SLEEP_S)
            self.sleep(wait)
            waited += wait
        if waited and self.on_wait is not None:
            self.on_wait(waited)
        return waited

    def acquire_local(self) -> float:
        return self.acquire()

    def pause(self, seconds: float) -> None:
        """The CRM said "too many": nobody sends for `seconds`, and the bucket counts as full."""
        with self._lock:
            now = self.clock()
            self._drain(now)
            self._level = float(self.burst)
            self._paused_until = max(self._paused_until, now + seconds)
