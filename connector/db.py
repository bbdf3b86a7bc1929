"""Database access: engine per settings, write/read transactions, Alembic migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from connector.config import DatabaseSettings
from connector.errors import DatabaseUnavailableError, StorageError
from connector.logs import redact

MIGRATIONS = Path(__file__).with_name("migrations")
# What the database not answering looks like: a refused or dropped connection, a server
# shutting down or restarting, a pool that found no connection in time.
OUTAGES = (OperationalError, InterfaceError, PoolTimeoutError, DatabaseUnavailableError)
# The same from the driver itself (PEP 249 names), where a raw connection is used unwrapped.
DRIVER_OUTAGES = frozenset({"OperationalError", "InterfaceError"})


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
        if any(cls.__name__ in DRIVER_OUTAGES for cls in type(seen).__mro__):
            return True
        seen = seen.__cause__
    return False


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


class Database:
    def __init__(self, settings: DatabaseSettings) -> None:
        self.url = normalise_url(settings.url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url, echo=settings.echo,
                                        connect_args={"timeout": 30})
            _configure_sqlite(self.engine)
            writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        else:
            self.engine = create_engine(self.url, echo=settings.echo, pool_pre_ping=True,
                                        pool_size=settings.pool_size, max_overflow=10)
            writer = self.engine
        self._writer = sessionmaker(bind=writer, expire_on_commit=False)
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any error."""
        session = (self._writer if write else self._reader)()
        try:
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

    def upgrade(self, revision: str = "head") -> None:
        config = self._alembic_config()
        try:
            connection = self.engine.connect()
        except SQLAlchemyError as exc:
            raise unavailable(self.url, exc) from exc
        with connection, connection.begin():
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

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
