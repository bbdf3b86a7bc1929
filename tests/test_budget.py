"""The request budget every process shares (connector.crm.budget): on the database (SQLite,
PostgreSQL) and on Redis, GCRA slots, pauses, and several processes' worth of clients."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from connector.config import load_settings
from connector.crm.budget import Budget, Budgets, DatabaseBudget, RedisBudget, SharedBucket
from connector.crm.credentials import Tokens
from connector.crm.limiter import LeakyBucket
from connector.errors import ConfigError, RetriableCRMError
from connector.sandbox.amocrm import FakeAmoCRM
from connector.services import Services
from tests.conftest import TEST_SECRET_KEY, fresh_services, make_settings

REDIS_URL = os.environ.get("LOYALTY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = "loyalty-test-budget:"
RATE, BURST = 20.0, 4  # a slot every 50 ms after four at once
INTERVAL = 1 / RATE
SLACK = 0.003


def _redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    return client


@pytest.fixture(params=["database", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def processes(tmp_path: Path, database_url: str, backend: str) -> Iterator[list[Services]]:
    """Three Services on one database, as three processes would build them."""
    limits = {"backend": backend}
    if backend == "redis":
        client = _redis_or_skip()
        prefix = f"{PREFIX}{uuid.uuid4().hex[:8]}:"
        limits |= {"redis_url": REDIS_URL, "redis_prefix": prefix}
    settings = make_settings(tmp_path, database_url, limits=limits)
    built = [fresh_services(settings), Services.build(settings), Services.build(settings)]
    yield built
    for services in built:
        services.close()
    if backend == "redis":
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def _bucket(services: Services, portal: str = "acme.bitrix24.ru") -> SharedBucket:
    limiter = services.budgets.limiter("bitrix24", portal, rate=RATE, burst=BURST + 1)
    assert isinstance(limiter, SharedBucket)  # one under the CRM's own: BURST
    return limiter


Span = tuple[float, float]


def _slot(budget: Budget) -> Span:
    """When the reserved slot is, on this machine's monotonic clock: the store took its own
    `now` between `before` and `after`, so the slot lies in that span plus the wait. Spans,
    not points, keep the tests exact on a busy machine."""
    before = time.monotonic()
    wait = budget.reserve()
    return before + wait, time.monotonic() + wait


def _now(action: Callable[[], object]) -> Span:
    before = time.monotonic()
    action()
    return before, time.monotonic()


def _at(slot: Span, moment: Span, offset: float) -> bool:
    """`slot` can be `moment + offset` (SQLite's clock counts whole milliseconds)."""
    return slot[0] <= moment[1] + offset + SLACK and moment[0] + offset <= slot[1] + SLACK


@pytest.mark.storage
def test_slots_follow_the_bucket_burst_then_rate(processes: list[Services]) -> None:
    budget = _bucket(processes[0]).budget
    budget.reserve()  # the portal's row is made on its first request
    time.sleep(BURST * INTERVAL + 0.01)  # drained again
    first = _slot(budget)
    waits = [budget.reserve() for _ in range(BURST - 1)]
    assert max(waits) < SLACK  # a burst at once (float residue aside)
    # Then one interval apart, counted from the first request.
    later = [_slot(budget) for _ in range(4)]
    assert all(_at(slot, first, n * INTERVAL) for n, slot in enumerate(later, 1)), later


@pytest.mark.storage
def test_processes_share_one_budget_per_portal(processes: list[Services]) -> None:
    first, second, third = (_bucket(s).budget for s in processes)
    first.reserve()
    time.sleep(BURST * INTERVAL + 0.01)
    start = _slot(first)
    assert max(first.reserve() for _ in range(BURST - 1)) < SLACK
    # The other processes find the burst spent: their first requests queue behind it.
    assert _at(_slot(second), start, INTERVAL)
    assert _at(_slot(third), start, 2 * INTERVAL)
    # Another portal has a budget of its own.
    assert _bucket(processes[1], "other.bitrix24.ru").budget.reserve() == 0.0


@pytest.mark.storage
def test_a_pause_is_shared_and_the_bucket_refills_after_it(processes: list[Services]) -> None:
    first, second = _bucket(processes[0]).budget, _bucket(processes[1]).budget
    first.reserve()
    second.reserve()
    time.sleep(BURST * INTERVAL + 0.01)
    paused = _now(lambda: first.pause(0.4))
    # Drained by 0.4 s x 20/s at the pause's end: a full burst there, then the rate; not
    # more (requests reserved during a pause must not all land at its end).
    slots = [_slot(second) for _ in range(BURST + 2)]
    offsets = [0.4] * BURST + [0.4 + INTERVAL, 0.4 + 2 * INTERVAL]
    assert all(_at(slot, paused, offset)
               for slot, offset in zip(slots, offsets, strict=True)), slots


@pytest.mark.storage
def test_threads_of_three_processes_never_pass_the_limit(processes: list[Services]) -> None:
    """Real time: 3 x 3 threads, each its process's bucket's acquire(), 63 requests in all.
    What is checked is the slots the budget handed out (a thread woken late on a busy
    machine says nothing about the budget; the fakes' tests check real arrivals). A slot is
    known within the span of the call that reserved it, so only what is over the limit
    whatever the slots' place in their spans counts as over it."""
    spans: list[Span] = []
    buckets = [_bucket(s) for s in processes]
    for bucket in buckets:
        bucket.budget = Recorded(bucket.budget, spans)

    def client(bucket: SharedBucket) -> None:
        for _ in range(63 // 9):
            bucket.acquire()

    threads = [threading.Thread(target=client, args=(b,)) for b in buckets for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(spans) == 63
    # Never more than the burst at once, nor more than the rate allows over any window...
    assert not surely_over(spans, INTERVAL * 0.9, BURST)
    for window in (0.25, 0.5, 1.0, 2.0):
        assert not surely_over(spans, window, int(BURST + RATE * window))
    # ...and the budget is used, not wasted: 63 slots span (63 - 4) intervals.
    first, last = min(spans), max(spans)
    assert last[0] - first[1] <= (63 - BURST) * INTERVAL + 0.1
    assert last[1] - first[0] >= (63 - BURST) * INTERVAL - 0.1


def surely_over(spans: list[Span], window: float, allowed: int) -> bool:
    """Whether some `allowed + 1` slots fall within `window` wherever each lies in its span."""
    ordered = sorted(spans, key=lambda span: span[0] + span[1])
    n = allowed + 1
    return any(ordered[k + n - 1][1] - ordered[k][0] < window
               for k in range(len(ordered) - n + 1))


class Recorded:
    """A budget that notes each slot it hands out, as the span it lies in: the reserving
    call's start and end, each plus the wait the budget answered."""

    def __init__(self, budget: Budget, spans: list[Span]) -> None:
        self.budget, self.spans = budget, spans
        self._lock = threading.Lock()

    def reserve(self) -> float:
        before = time.monotonic()
        wait = self.budget.reserve()
        after = time.monotonic()
        with self._lock:
            self.spans.append((before + wait, after + wait))
        return wait

    def pause(self, seconds: float) -> None:
        self.budget.pause(seconds)


def test_the_local_bucket_is_a_fast_path_only() -> None:
    """A bucket that makes its own process wait asks the shared budget only afterwards."""
    asked: list[float] = []
    now = [0.0]

    class Remote:
        def reserve(self) -> float:
            asked.append(now[0])
            return 0.0

        def pause(self, seconds: float) -> None:
            asked.append(-seconds)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    local = LeakyBucket(2.0, 1, clock=lambda: now[0], sleep=sleep)
    bucket = SharedBucket(Remote(), local, sleep=sleep)
    bucket.acquire()
    bucket.acquire()
    assert asked == [0.0, 0.5]  # the second waited locally first, then reserved
    bucket.pause(3.0)
    bucket.acquire()
    assert asked[2:] == [-3.0, 3.5]


@pytest.mark.storage
def test_an_unreachable_budget_is_a_retriable_crm_error(processes: list[Services],
                                                        backend: str) -> None:
    budget = _bucket(processes[0]).budget
    if backend == "redis":
        assert isinstance(budget, RedisBudget)
        broken = RedisBudget(redis.Redis(port=1, socket_connect_timeout=0.2), PREFIX,
                             "bitrix24", "acme", rate=RATE, burst=BURST)
    else:
        assert isinstance(budget, DatabaseBudget)
        settings = make_settings(Path("/nonexistent-dir-for-budget"),
                                 "postgresql+psycopg://nobody@127.0.0.1:1/none",
                                 secret_key=TEST_SECRET_KEY)
        services = Services.build(settings)
        broken = services.budgets.limiter("bitrix24", "acme", rate=RATE, burst=BURST).budget
    with pytest.raises(RetriableCRMError) as caught:
        broken.reserve()
    assert caught.value.code == "BUDGET"
    assert "nobody" not in caught.value.detail  # no connection details in the message


def test_process_backend_keeps_the_in_process_bucket(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"backend": "process"})
    services = Services.build(settings)
    try:
        limiter = services.budgets.limiter("amocrm", "x", rate=7, burst=7)
        assert isinstance(limiter, LeakyBucket) and limiter.burst == 6
    finally:
        services.close()


def test_redis_backend_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, limits={"backend": "redis"})
    assert caught.value.problems == [
        "limits: backend 'redis' needs redis_url (redis://host:6379/0)"]


def test_database_is_the_default_backend() -> None:
    assert load_settings().limits.backend == "database"


def test_budgets_use_the_settings_of_each_crm(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bitrix24={"enabled": True, "portal": "acme.bitrix24.ru",
                                                 "webhook_url": "https://acme.bitrix24.ru/rest/1/x/",
                                                 "requests_per_second": 5, "burst": 250})
    services = fresh_services(settings)
    try:
        assert services.bitrix24 is not None
        limiter = services.bitrix24.client.limiter
        assert isinstance(limiter, SharedBucket) and isinstance(limiter.budget, DatabaseBudget)
        assert (limiter.rate, limiter.burst) == (5, 249)
        assert limiter.budget.key == {"crm": "bitrix24", "portal": "acme.bitrix24.ru"}
        assert isinstance(services.budgets, Budgets)
    finally:
        services.close()


@pytest.mark.storage
def test_an_oauth_refresh_under_the_credential_lock_does_not_wait_for_the_budget(
        tmp_path: Path, database_url: str) -> None:
    """The refresh holds the credential row's lock (SQLite: the write lock) while it calls
    the token endpoint; that call must not need the database's budget statement."""
    with FakeAmoCRM() as account:
        settings = make_settings(tmp_path, database_url, amocrm={
            "enabled": True, "base_url": account.base_url, "client_id": account.client_id,
            "client_secret": account.client_secret, "webhook_secret": "BudgetSecret012345678",
            "redirect_uri": "https://loyalty.example/amocrm/oauth/callback"})
        services = fresh_services(settings)
        try:
            issued = account.issue_tokens()
            services.amocrm_credentials.save(Tokens(
                access_token=issued["access_token"], refresh_token=issued["refresh_token"],
                expires_at=datetime.now(UTC) + timedelta(days=1), endpoint=account.base_url))
            account.expire_tokens()
            assert services.amocrm is not None
            started = time.monotonic()
            assert services.amocrm.client.request("GET", "/api/v4/account")["id"]
            assert time.monotonic() - started < 5  # not SQLite's 30 s busy timeout
            assert account.state.refreshes == 2  # issued, then refreshed once
        finally:
            services.close()
