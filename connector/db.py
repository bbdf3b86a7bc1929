"""Database access: engine per settings, write/read transactions, Alembic migrations."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    InvalidatePoolError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from connector.config import DatabaseSettings
from connector.errors import DatabaseUnavailableError, StorageError
from connector.logs import redact

if TYPE_CHECKING:
    from connector.sealing import Sealer

MIGRATIONS = Path(__file__).with_name("migrations")
# What the database not answering looks like: a refused or dropped connection, a server
# shutting down or restarting, a pool that found no connection in time. Not a deadlock, a
# lock or statement timeout, a missing table: those are the work's, retried as its own.
OUTAGES = (InterfaceError, PoolTimeoutError, DatabaseUnavailableError)
# PostgreSQL's SQLSTATEs for it: class 08 (connection exception), and the server shutting
# down or starting (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now).
SERVER_GONE = ("08", "57P01", "57P02", "57P03")
# SQLite's: the file cannot be opened (a vanished volume, a directory in its place).
SQLITE_GONE = ("unable to open database file",)
# A pooled PostgreSQL connection idle this long is pinged before it is handed out; one back
# from work more recently is not (see _ping_when_idle).
PING_AFTER_IDLE_S = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (the driver we install), not psycopg2."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_unavailable(exc: BaseException) -> bool:
    """The database was away, rather than the work or the query at fault."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OUTAGES) or (isinstance(seen, DBAPIError)
                                         and seen.connection_invalidated):
            return True
        if isinstance(seen, OperationalError):
            # SQLAlchemy's wrapper: the driver's own error says which kind it is.
            return _driver_says_gone(seen.orig) is not False
        if _driver_says_gone(seen):
            return True  # a raw driver connection's error, unwrapped (the inbox writer's)
        seen = seen.__cause__
    return False


def _driver_says_gone(exc: BaseException | None) -> bool | None:
    """For a PEP 249 driver error: whether it means the database is away; None when `exc`
    is no driver's OperationalError or InterfaceError."""
    if exc is None:
        return None
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "InterfaceError" in names:
        return True
    if "OperationalError" not in names:
        return None
    sqlstate = getattr(exc, "sqlstate", None)  # psycopg: None when no server answered
    if sqlstate is not None:
        return str(sqlstate).startswith(SERVER_GONE)
    if type(exc).__module__.startswith("sqlite3"):
        return str(exc).startswith(SQLITE_GONE)
    return True


def masked_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def outage_reason(exc: BaseException) -> str:
    """The driver's own first line ("connection refused", "server closed the connection
    unexpectedly"), not SQLAlchemy's wrapping with its SQL and documentation link."""
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(original).__name__)


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"database {masked_url(url)} unreachable: {outage_reason(exc)}")


_ASYNC_COMMIT = text("SET LOCAL synchronous_commit = off")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        # A writer takes SQLite's single write lock when it starts, so read-check-write
        # sequences (balance checks) cannot interleave; readers stay deferred.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _ping_when_idle(engine: Engine) -> None:
    """The pool's pre-ping, only for a connection that sat idle: a server restarted, or a
    firewall that dropped the connection, while nobody used it. A ping per transaction was
    a round trip every ledger call paid for. A connection in steady use that finds the
    server gone fails its transaction as an outage (callers give work back or answer 503,
    see is_unavailable), and SQLAlchemy then discards every connection of the pool."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        idle_since = record.info.get("idle_since")  # None: a new connection
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # As pre_ping does: this connection and every older one are replaced.
            raise InvalidatePoolError() from exc


class Database:
    """Bound parameters carry OAuth tokens and raw CRM bodies: neither `database.echo` nor
    an error message ever shows them (hide_parameters)."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.url = normalise_url(settings.url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url, echo=settings.echo, hide_parameters=True,
                                        connect_args={"timeout": 30})
            _configure_sqlite(self.engine)
            writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        else:
            self.engine = create_engine(self.url, echo=settings.echo, hide_parameters=True,
                                        pool_size=settings.pool_size, max_overflow=10)
            _ping_when_idle(self.engine)
            writer = self.engine
        self._writer = sessionmaker(bind=writer, expire_on_commit=False)
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def missing_file(self) -> Path | None:
        """An SQLite file that does not exist yet: connecting would create it empty."""
        name = make_url(self.url).database if self.dialect == "sqlite" else None
        if not name or name == ":memory:" or Path(name).exists():
            return None
        return Path(name)

    @contextmanager
    def transaction(self, *, write: bool = True, durable: bool = True) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any error.

        `durable` False: on PostgreSQL the commit does not wait for its WAL flush
        (synchronous_commit off for this transaction alone; 3-4 ms a commit on a busy disk).
        Only for bookkeeping whose loss in a crash of the database server means work done
        again, never lost: claims and their completion (at least once either way), what was
        last written to a CRM contact. Visibility and locks are unchanged, so claims stay
        exclusive; a later durable commit flushes it too. SQLite (WAL, synchronous=NORMAL)
        commits without a flush already."""
        session = (self._writer if write else self._reader)()
        try:
            if not durable and self.is_postgres:
                session.execute(_ASYNC_COMMIT)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()

    # -- migrations ------------------------------------------------------------------------
    def _alembic_config(self) -> AlembicConfig:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return config

    def upgrade(self, revision: str = "head", *, sealer: Sealer | None = None) -> None:
        """Migrate; `sealer` (connector.sealing.Sealer) seals or opens stored tokens where a
        migration changes how they are kept, and is needed only when there are some."""
        self._migrate(command.upgrade, revision, sealer)

    def downgrade(self, revision: str, *, sealer: Sealer | None = None) -> None:
        self._migrate(command.downgrade, revision, sealer)

    def _migrate(self, step: Callable[[AlembicConfig, str], None], revision: str,
                 sealer: Sealer | None) -> None:
        config = self._alembic_config()
        try:
            connection = self.engine.connect()
        except SQLAlchemyError as exc:
            raise unavailable(self.url, exc) from exc
        with connection, connection.begin():
            config.attributes["connection"] = connection
            config.attributes["sealer"] = sealer
            step(config, revision)

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def check(self) -> None:
        """Raise StorageError unless the database answers and is migrated to head."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            current, head = self.current_revision(), self.head_revision()
        except SQLAlchemyError as exc:
            raise unavailable(self.url, exc) from exc
        if current != head:
            raise StorageError(
                f"database schema is at {current or 'nothing'}, expected {head}: "
                "run `loyalty-connector db upgrade`"
            )
