"""One request budget per CRM portal for the whole deployment.

Every process that calls a portal (web, workers, the scheduler, a CLI sync) reserves each
request's slot in one shared place, so together they keep to the CRM's limit. The bucket is
kept as virtual scheduling (GCRA): the place holds the portal's theoretical arrival time (TAT)
and the end of any pause the CRM asked for. A reservation is one atomic step that moves the
TAT on by one interval and answers how long to wait for the slot; the caller then sleeps
outside any transaction or lock. `burst` requests fit at once, then one per interval, exactly
like LeakyBucket. Time is the store's own clock (the database's, Redis's), and the answer is
a relative wait, so the processes' clocks never need to agree.

A slot reserved by a call that then fails or never happens is simply unused: the bound only
gets stricter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from connector.crm.limiter import MIN_SLEEP_S, LeakyBucket
from connector.errors import RetriableCRMError

if TYPE_CHECKING:
    from connector.config import LimitsSettings
    from connector.db import Database


class Budget(Protocol):
    """Where a portal's shared bucket lives."""

    def reserve(self) -> float:
        """Take the next slot; the seconds until it (0: now)."""

    def pause(self, seconds: float) -> None:
        """Nobody sends for `seconds`; the bucket counts as full."""


class SharedBucket:
    """The limiter the CRM clients use (LeakyBucket's interface) over a shared Budget.

    An in-process bucket at the same rate goes first as a fast path: this process's own
    requests alone never fit sooner than it allows, so while it makes a request wait, no
    reservation is spent early and the store is not asked."""

    def __init__(self, budget: Budget, local: LeakyBucket, *,
                 sleep: Callable[[float], None] = time.sleep,
                 on_wait: Callable[[float], None] | None = None) -> None:
        self.budget = budget
        self.local = local
        self.rate, self.burst = local.rate, local.burst
        self.sleep = sleep
        self.on_wait = on_wait
        self.waited_seconds = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        waited = self.local.acquire()
        wait = self.budget.reserve()
        if wait > 0:
            wait = max(wait, MIN_SLEEP_S)
            self.sleep(wait)
            waited += wait
        if waited:
            with self._lock:
                self.waited_seconds += waited
            if self.on_wait is not None:
                self.on_wait(waited)
        return waited

    def acquire_local(self) -> float:
        """This process's bucket alone, for the OAuth token call: it is made under the
        credential row's lock, which on SQLite is the database's write lock, so the budget's
        statement would wait for it until the busy timeout. Token calls are rare (hourly or
        daily) and the bucket is one request under the CRM's, which leaves them room."""
        return self.local.acquire()

    def pause(self, seconds: float) -> None:
        self.local.pause(seconds)
        self.budget.pause(seconds)


# -- database ------------------------------------------------------------------------------
_NOW = {
    # SQLite's 'now' is one value for a whole statement (RETURNING included), in ms.
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    # clock_timestamp(), not now(): now() is the start of the transaction.
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
}
_RESERVE = {
    "sqlite": """
        UPDATE crm_budgets SET tat = max(tat, {now}, paused_until) + :interval
        WHERE crm = :crm AND portal = :portal
        RETURNING max({now}, paused_until, tat - :window) - {now}""",
    "postgresql": """
        UPDATE crm_budgets AS b SET tat = GREATEST(b.tat, c.now, b.paused_until) + :interval
        FROM (SELECT {now} AS now) AS c
        WHERE b.crm = :crm AND b.portal = :portal
        RETURNING GREATEST(c.now, b.paused_until, b.tat - :window) - c.now""",
}
_PAUSE = {
    "sqlite": """
        UPDATE crm_budgets SET paused_until = max(paused_until, {now} + :seconds),
                               tat = max(tat, {now} + :window)
        WHERE crm = :crm AND portal = :portal
        RETURNING 1""",
    "postgresql": """
        UPDATE crm_budgets AS b SET paused_until = GREATEST(b.paused_until, c.now + :seconds),
                                    tat = GREATEST(b.tat, c.now + :window)
        FROM (SELECT {now} AS now) AS c
        WHERE b.crm = :crm AND b.portal = :portal
        RETURNING 1""",
}
_CREATE = text("INSERT INTO crm_budgets (crm, portal, tat, paused_until) "
               "VALUES (:crm, :portal, 0, 0) ON CONFLICT DO NOTHING")


def budget_engine(db: Database) -> Engine:
    """The engine budget statements run on. PostgreSQL: a small pool of its own in
    autocommit (one statement is one transaction) without waiting for the WAL flush; a
    server crash can forget the last fraction of a second of reservations, which only
    matters to requests that are lost with the crash anyway. SQLite: the database's own
    engine, whose write transactions take the write lock at BEGIN (IMMEDIATE)."""
    if not db.is_postgres:
        return db.engine
    return create_engine(db.url, pool_size=2, max_overflow=8,
                         isolation_level="AUTOCOMMIT",
                         connect_args={"options": "-c synchronous_commit=off"})


class DatabaseBudget:
    """A row per portal in crm_budgets, moved by one UPDATE ... RETURNING per request."""

    def __init__(self, db: Database, engine: Engine, crm: str, portal: str, *,
                 rate: float, burst: int) -> None:
        self.db, self.engine = db, engine
        dialect = "postgresql" if db.is_postgres else "sqlite"
        now = _NOW[dialect]
        self._reserve = text(_RESERVE[dialect].format(now=now))
        self._pause = text(_PAUSE[dialect].format(now=now))
        interval = 1.0 / rate
        self.key = {"crm": crm, "portal": portal}
        self.shape = {"interval": interval, "window": burst * interval}

    def reserve(self) -> float:
        return max(float(self._run(self._reserve, self.shape)[0]), 0.0)

    def pause(self, seconds: float) -> None:
        self._run(self._pause, {"seconds": seconds, "window": self.shape["window"]})

    def _run(self, statement: Any, params: dict[str, Any]) -> Any:
        try:
            row = self._statement(statement, params)
            if row is None:  # the portal's first request: its row is made once
                self._statement(_CREATE, {}, fetch=False)
                row = self._statement(statement, params)
        except SQLAlchemyError as exc:
            raise RetriableCRMError(
                f"{self.key['crm']} request budget unreachable in the database "
                f"({type(exc).__name__})", code="BUDGET") from None
        assert row is not None, "crm_budgets row missing right after its insert"
        return row

    def _statement(self, statement: Any, params: dict[str, Any], *, fetch: bool = True) -> Any:
        if self.engine is self.db.engine:
            with self.db.transaction() as session:
                result = session.execute(statement, {**self.key, **params})
                return result.first() if fetch else None
        with self.engine.connect() as connection:
            result = connection.execute(statement, {**self.key, **params})
            return result.first() if fetch else None


# -- Redis ---------------------------------------------------------------------------------
# Redis runs a script alone, so each is atomic; TIME is the server's clock. Numbers go back
# as strings: Redis would truncate a Lua number to an integer.
_REDIS_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tat', 'paused_until')
local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = math.max(now, tonumber(state[2] or 0))
local tat = math.max(tonumber(state[1] or 0), start) + interval
redis.call('HSET', KEYS[1], 'tat', tostring(tat))
redis.call('PEXPIREAT', KEYS[1], math.ceil((math.max(tat, start) + 3600) * 1000))
return tostring(math.max(start, tat - window) - now)
"""
_REDIS_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tat', 'paused_until')
local seconds, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local paused = math.max(tonumber(state[2] or 0), now + seconds)
local tat = math.max(tonumber(state[1] or 0), now + window)
redis.call('HSET', KEYS[1], 'tat', tostring(tat), 'paused_until', tostring(paused))
redis.call('PEXPIREAT', KEYS[1], math.ceil((math.max(tat, paused) + 3600) * 1000))
return 1
"""


class RedisBudget:
    """A hash per portal (`<prefix>budget:<crm>:<portal>`), moved by a Lua script."""

    def __init__(self, client: Any, prefix: str, crm: str, portal: str, *,
                 rate: float, burst: int) -> None:
        self.crm = crm
        self.key = f"{prefix}budget:{crm}:{portal}"
        self.interval = 1.0 / rate
        self.window = burst * self.interval
        self._reserve = client.register_script(_REDIS_RESERVE)
        self._pause = client.register_script(_REDIS_PAUSE)

    def reserve(self) -> float:
        return max(float(self._call(self._reserve, self.interval, self.window)), 0.0)

    def pause(self, seconds: float) -> None:
        self._call(self._pause, seconds, self.window)

    def _call(self, script: Any, *args: float) -> Any:
        import redis

        try:
            return script(keys=[self.key], args=[repr(float(a)) for a in args])
        except redis.RedisError as exc:
            raise RetriableCRMError(f"{self.crm} request budget unreachable in Redis "
                                    f"({type(exc).__name__})", code="BUDGET") from None


class Budgets:
    """Makes each portal's limiter from [limits]: one per process and portal, all drawing on
    the deployment's shared budget (or on this process's alone, for backend "process")."""

    def __init__(self, settings: LimitsSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._engine: Engine | None = None
        self._redis: Any = None

    def limiter(self, crm: str, portal: str, *, rate: float, burst: int,
                on_wait: Callable[[float], None] | None = None
                ) -> LeakyBucket | SharedBucket:
        """A bucket one request under the CRM's own (see LeakyBucket.under)."""
        local = LeakyBucket.under(rate, burst)
        if self.settings.backend == "process":
            local.on_wait = on_wait
            return local
        budget: Budget
        if self.settings.backend == "redis":
            budget = RedisBudget(self._redis_client(), self.settings.redis_prefix, crm, portal,
                                 rate=rate, burst=local.burst)
        else:
            budget = DatabaseBudget(self.db, self._database_engine(), crm, portal,
                                    rate=rate, burst=local.burst)
        return SharedBucket(budget, local, on_wait=on_wait)

    def _database_engine(self) -> Engine:
        if self._engine is None:
            self._engine = budget_engine(self.db)
        return self._engine

    def _redis_client(self) -> Any:
        if self._redis is None:
            import redis

            assert self.settings.redis_url is not None  # the settings' validator saw to it
            self._redis = redis.Redis.from_url(self.settings.redis_url.get_secret_value(),
                                               socket_timeout=5, socket_connect_timeout=5)
        return self._redis

    def close(self) -> None:
        if self._engine is not None and self._engine is not self.db.engine:
            self._engine.dispose()
        if self._redis is not None:
            self._redis.close()
