"""Answering while the database is away: 503 with Retry-After (the CRMs deliver again), never
200 for an event that was not stored, and a log that says so once rather than a traceback
per request: a line when it starts (again each minute while it lasts, with how many requests
were refused meanwhile) and a line with the count when the database answers again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from connector.db import outage_reason
from connector.logs import Throttle

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5
REMIND_EVERY_S = 60.0
CODE = "database_unavailable"
DETAIL = "the database does not answer; nothing was stored: send again later"
HEADERS = {"Retry-After": str(RETRY_AFTER_S)}


class OutageLog:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 remind_seconds: float = REMIND_EVERY_S) -> None:
        self.clock = clock
        self._throttle = Throttle(remind_seconds, clock)
        self._lock = threading.Lock()
        self._refused = 0
        self._since = 0.0

    def refused(self, exc: BaseException, method: str, path: str) -> None:
        """A request answered 503 because the database did not answer."""
        with self._lock:
            if not self._refused:
                self._since = self.clock()
            self._refused += 1
        if not log.isEnabledFor(logging.WARNING):
            return
        record = log.makeRecord(
            log.name, logging.WARNING, __file__, 0,
            "database unavailable (%s): answering 503 with Retry-After (%s %s)",
            (outage_reason(exc), method, path), None)
        if self._throttle.filter(record):
            log.handle(record)

    def answered(self) -> None:
        """A request was served with the database: the end of an outage, if there was one."""
        if not self._refused:  # the common case, without the lock
            return
        with self._lock:
            refused, self._refused = self._refused, 0
            lasted = self.clock() - self._since
        if refused:
            log.warning("the database answers again: %d request(s) were refused with 503 "
                        "over %.0f s", refused, lasted)
