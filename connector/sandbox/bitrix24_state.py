"""Time, limits and records of the fake Bitrix24 portal (no HTTP here).

Clocks: every clock has `time()` (epoch seconds, drives DATE_MODIFY and the `time` object),
`monotonic()` (drives the leaky bucket) and `sleep()`. A test that must not wait for real
seconds uses `ManualClock` (moved by hand; its sleep() only advances it) or `ScaledClock`
(real time running N times faster), and gives the same clock to the client under test.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


class Clock(Protocol):
    def time(self) -> float: ...
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))


# 2026-11-23T07:00:00Z, i.e. 10:00 in the default +03:00 portal zone.
DEFAULT_EPOCH = 1795417200.0


class ManualClock:
    """Stands still until advanced; sleep() advances it at once, so retries never wait."""

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self._now = start
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.time()

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


class ScaledClock:
    """Real time sped up `speed` times: sleep(10) takes 10/speed real seconds."""

    def __init__(self, speed: float = 100.0, start: float | None = None) -> None:
        self.speed = speed
        self._origin_real = time.monotonic()
        self._origin = time.time() if start is None else start

    def _elapsed(self) -> float:
        return (time.monotonic() - self._origin_real) * self.speed

    def time(self) -> float:
        return self._origin + self._elapsed()

    def monotonic(self) -> float:
        return self._elapsed()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0) / self.speed)


class LeakyBucket:
    """The portal's request counter (limits.md): each request adds 1, the counter drains by
    `rate` per second, and a request that would take it past `burst` is refused with 503
    QUERY_LIMIT_EXCEEDED. So `burst` requests pass at once and the next one is refused.
    A refused request is not counted (it was not executed)."""

    def __init__(self, clock: Clock, rate: float = 2.0, burst: int = 50) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.level = 0.0
        self._last = clock.monotonic()

    def drain(self) -> float:
        now = self.clock.monotonic()
        self.level = max(0.0, self.level - (now - self._last) * self.rate)
        self._last = now
        return self.level

    def admit(self) -> bool:
        if self.drain() + 1 > self.burst + 1e-9:
            return False
        self.level += 1
        return True

    def reset(self) -> None:
        self.level = 0.0
        self._last = self.clock.monotonic()


OPERATING_WINDOW = 600.0  # limits.md: ten one-minute baskets


class OperatingMeter:
    """Per-method accumulated execution time (limits.md "Resource Intensity Limits"):
    a method whose `operating` already exceeds the limit is refused with 429
    OPERATION_TIME_LIMIT until the oldest basket (first call + 600 s) drops out.
    A fake call takes no time, so tests assign a cost per method in `costs`."""

    def __init__(self, clock: Clock, limit: float = 480.0) -> None:
        self.clock = clock
        self.limit = limit
        self.costs: dict[str, float] = {}
        self._baskets: dict[str, list[list[float]]] = {}  # method -> [[started, seconds]]

    def _live(self, method: str) -> list[list[float]]:
        now = self.clock.time()
        baskets = [b for b in self._baskets.get(method, []) if b[0] + OPERATING_WINDOW > now]
        self._baskets[method] = baskets
        return baskets

    def operating(self, method: str) -> float:
        return sum(b[1] for b in self._live(method))

    def reset_at(self, method: str) -> int:
        baskets = self._live(method)
        start = baskets[0][0] if baskets else self.clock.time()
        return int(start + OPERATING_WINDOW)

    def blocked(self, method: str) -> bool:
        return self.operating(method) > self.limit

    def record(self, method: str) -> None:
        cost = self.costs.get(method, 0.0)
        baskets = self._live(method)
        now = self.clock.time()
        if baskets and now - baskets[-1][0] < 60:
            baskets[-1][1] += cost
        else:
            baskets.append([now, cost])


class Call(NamedTuple):
    """One REST method execution as the portal saw it. A command inside `batch` is recorded
    on its own with `batch` set to its command name; the batch request itself has method
    "batch". `status` is the HTTP status the call had (or would have had, inside a batch)."""

    method: str
    params: dict[str, Any]
    status: int
    at: float
    batch: str | None = None


@dataclass
class OutgoingEvent:
    """An event the portal would POST to a handler bound with event.bind."""

    event: str
    handler: str
    body: bytes
    content_type: str
    entity_id: int | None = None


@dataclass
class Fault:
    kind: str  # "error" | "malformed" | "reset"
    remaining: int
    status: int = 500
    error: str = ""
    description: str = ""
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    method: str | None = None  # None: the whole HTTP request; else that method (also in batch)
    after: int = 0  # calls of that method that pass before the first one fails


@dataclass
class AppToken:
    access_token: str
    refresh_token: str
    user_id: int
    expires_at: float
    scope: str


@dataclass
class Records:
    """What the connector did to the portal, for assertions."""

    calls: list[Call] = field(default_factory=list)
    bound_events: list[dict[str, Any]] = field(default_factory=list)
    robots: dict[str, dict[str, Any]] = field(default_factory=dict)
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    fired_triggers: list[dict[str, Any]] = field(default_factory=list)
    # "Track incoming webhook" triggers an admin put on deal stages (code -> trigger), and
    # their firings by crm.automation.trigger
    webhook_triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    fired_webhook_triggers: list[dict[str, Any]] = field(default_factory=list)
    bizproc_events: list[dict[str, Any]] = field(default_factory=list)
    timeline_comments: list[dict[str, Any]] = field(default_factory=list)
    contact_updates: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    outbox: list[OutgoingEvent] = field(default_factory=list)
    placements: list[dict[str, Any]] = field(default_factory=list)  # as placement.get shows
