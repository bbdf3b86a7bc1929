"""The inbox's insert: one held driver connection and a statement compiled once.

Every event the web tier acknowledges is inserted here while the CRM waits for the answer.
Through a pooled SQLAlchemy connection each insert also paid a pool checkout (and a pre-ping
on PostgreSQL), the transaction events, a compiled-cache lookup and a result object: together
more than the insert itself, and each a point where the request thread gives up the GIL. This
keeps one DBAPI connection taken from the engine (so it carries the engine's connect-time
settings: WAL, busy timeout) and binds values through the columns' own types, so a row is
stored exactly as the ORM would store it. Errors come out as SQLAlchemy's exceptions, like
anywhere else.

Not thread-safe by itself: the inbox calls it under its write lock (group commit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, Table, bindparam, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection, SingletonThreadPool

from connector.wakeup import notifying

log = logging.getLogger(__name__)


# Rows per statement: groups are as large as the web tier has threads, and a bounded set
# of statement shapes keeps the compile cache small.
CHUNK = 32


class InboxWriter:

    def __init__(self, engine: Engine, table: Table, columns: Sequence[str], *,
                 key: str, notify_as: str | None = None) -> None:
        """`notify_as`: on PostgreSQL each insert also sends a NOTIFY with this payload, in
        its own statement (see connector.wakeup); elsewhere it is ignored."""
        dialect = engine.dialect
        self._engine = engine
        self._table = table
        self._columns = tuple(columns)
        self._key = key
        self._processors: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in columns]
        self._statements: dict[int, tuple[str, Sequence[str] | None]] = {}
        self._sqlite = dialect.name == "sqlite"
        self._notify_as = notify_as if dialect.name == "postgresql" else None
        # An in-memory SQLite database is one per thread: nothing to hold across threads.
        self._hold = not isinstance(engine.pool, SingletonThreadPool)
        self._connection: PoolProxiedConnection | None = None

    def insert(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert the rows in one transaction; their new ids, in order. A repeated unique
        key raises sqlalchemy's IntegrityError and stores none of them."""
        chunks = [self._bind(rows[start:start + CHUNK]) for start in range(0, len(rows), CHUNK)]
        try:
            by_key = self._run(chunks)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The held connection had died (a database restart): once more on a fresh one.
            # Safe even if the lost commit went through, as every row has a unique key.
            log.warning("inbox insert: database connection lost, reconnecting")
            by_key = self._run(chunks)
        return [by_key[row[self._key]] for row in rows]

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            self._give_back(connection)

    def _statement(self, rows: int) -> tuple[str, Sequence[str] | None]:
        """INSERT of `rows` rows RETURNING (id, key): the driver SQL and, for a positional
        paramstyle, the order of the parameter names."""
        if rows not in self._statements:
            values = [{name: bindparam(f"{name}_{n}") for name in self._columns}
                      for n in range(rows)]
            # Ids come back beside their unique key: a multi-row RETURNING promises no order.
            compiled = (insert(self._table).values(values)
                        .returning(self._table.c.id, self._table.c[self._key])
                        .compile(dialect=self._engine.dialect))
            order = compiled.positiontup if compiled.positional else None
            sql = str(compiled)
            if self._notify_as is not None:
                sql = notifying(sql, self._notify_as)
            self._statements[rows] = (sql, order)
        return self._statements[rows]

    def _bind(self, rows: Sequence[dict[str, Any]]) -> tuple[str, Any]:
        sql, order = self._statement(len(rows))
        values = {f"{name}_{n}": process(row[name]) if process else row[name]
                  for n, row in enumerate(rows) for name, process in self._processors}
        return sql, [values[name] for name in order] if order is not None else values

    def _run(self, chunks: list[tuple[str, Any]]) -> dict[Any, int]:
        connection = self._take()
        dbapi = self._engine.dialect.loaded_dbapi
        cursor = None
        try:
            cursor = connection.cursor()
            by_key = self._execute(cursor, chunks)
        except dbapi.Error as exc:
            lost = self._engine.dialect.is_disconnect(exc, connection.dbapi_connection, cursor)
            self._abandon(connection, cursor, keep=isinstance(exc, dbapi.IntegrityError),
                          lost=lost)
            # No parameters in the error: the bodies carry the CRMs' tokens.
            raise DBAPIError.instance(chunks[0][0], None, exc, dbapi.Error,
                                      connection_invalidated=lost,
                                      dialect=self._engine.dialect) from exc
        except BaseException:
            self._abandon(connection, cursor, keep=False, lost=False)
            raise
        cursor.close()
        self._release(connection)
        return by_key

    def _execute(self, cursor: Any, chunks: list[tuple[str, Any]]) -> dict[Any, int]:
        # The connection is in autocommit mode (SQLite's always are here, see connector.db;
        # PostgreSQL's is set so in _take): one statement is its own transaction, and an
        # explicit one is only needed when a group takes several statements. Each extra
        # statement is another release of the GIL for the waiting request threads.
        several = len(chunks) > 1
        if several:
            # IMMEDIATE: SQLite's write lock up front, so the inserts cannot meet a busy lock.
            cursor.execute("BEGIN IMMEDIATE" if self._sqlite else "BEGIN")
        by_key: dict[Any, int] = {}
        for sql, params in chunks:
            cursor.execute(sql, params)
            by_key.update((key, new_id) for new_id, key in cursor.fetchall())
        if several:
            cursor.execute("COMMIT")
        return by_key

    def _take(self) -> PoolProxiedConnection:
        connection, self._connection = self._connection, None
        if connection is None:
            connection = self._engine.raw_connection()
            if self._hold:
                # Ours from now on, never the pool's: not counted against its size, and not
                # handed to a session after us in autocommit mode (closing really closes it).
                connection.detach()
                if not self._sqlite:
                    connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        return connection

    def _release(self, connection: PoolProxiedConnection) -> None:
        if self._hold:
            self._connection = connection
        else:
            self._give_back(connection)

    def _give_back(self, connection: PoolProxiedConnection) -> None:
        connection.close()  # detached when held: closed; else back to its pool

    def _discard(self, connection: PoolProxiedConnection) -> None:
        """Never to be used again. invalidate() alone leaves a detached connection open."""
        driver = connection.dbapi_connection
        connection.invalidate()
        if driver is not None:
            try:
                driver.close()
            except Exception:  # already broken: nothing more to release
                log.debug("inbox writer: closing a discarded connection failed", exc_info=True)

    def _in_transaction(self, connection: PoolProxiedConnection) -> bool:
        driver: Any = connection.dbapi_connection
        if self._sqlite:
            return bool(driver.in_transaction)
        from psycopg.pq import TransactionStatus

        return bool(driver.info.transaction_status != TransactionStatus.IDLE)

    def _abandon(self, connection: PoolProxiedConnection, cursor: Any | None, *, keep: bool,
                 lost: bool) -> None:
        """Roll back; the connection stays only after a plain refusal (a duplicate key)."""
        if lost:
            self._discard(connection)
            return
        try:
            if cursor is not None:
                cursor.close()
            if self._in_transaction(connection):
                connection.dbapi_connection.execute("ROLLBACK")  # type: ignore[union-attr]
        except Exception:
            self._discard(connection)
            return
        if keep:
            self._release(connection)
        else:
            self._give_back(connection)
