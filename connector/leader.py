"""One active scheduler at a time, whatever runs how many processes.

PostgreSQL: a session-level advisory lock held by one dedicated connection. If the process
dies, its connection closes and the server releases the lock at once; a standby scheduler
takes it on its next try. SQLite: an exclusive `flock` on a file beside the database, which
the kernel releases when the process dies. Either way no lease times out and no clock is
trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from contextlib import suppress
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from connector.db import Database

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, namespaced to this product."""
    digest = hashlib.sha256(f"loyalty-connector:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LeaderLock:
    def __init__(self, db: Database, name: str = "scheduler") -> None:
        self.db = db
        self.name = name
        self._connection: Connection | None = None
        self._file: IO[bytes] | None = None
        self._in_memory = False

    @property
    def held(self) -> bool:
        return self._connection is not None or self._file is not None or self._in_memory

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        if self.held:
            return self.still_held()
        if self.db.is_postgres:
            return self._acquire_postgres()
        return self._acquire_file()

    def still_held(self) -> bool:
        """False once the lock is lost (the database connection broke); then call
        try_acquire again to compete for it afresh."""
        if self._file is not None or self._in_memory:
            return True
        if self._connection is None:
            return False
        # A session-level lock lasts as long as the session: a live connection still holds it.
        try:
            self._connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning("scheduler lock connection lost: %s", type(exc).__name__)
            self._drop_connection()
            return False
        return True

    def release(self) -> None:
        if self._connection is not None:
            # Closing the connection releases it as well, so a failure here is harmless.
            with suppress(SQLAlchemyError):
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                         {"key": lock_key(self.name)})
            self._drop_connection()
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self._in_memory = False

    def _acquire_postgres(self) -> bool:
        # Autocommit: the lock belongs to the session, and no transaction stays open for
        # hours (which would hold back vacuum).
        connection = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                     {"key": lock_key(self.name)}).scalar_one()
        except SQLAlchemyError:
            connection.invalidate()
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def _acquire_file(self) -> bool:
        path = self._lock_path()
        if path is None:
            self._in_memory = True  # an in-memory database lives in this process only
            return True
        handle = path.open("a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        self._file = handle
        return True

    def _lock_path(self) -> Path | None:
        database = self.db.engine.url.database
        if not database or database == ":memory:":
            return None
        return Path(f"{database}.{self.name}.lock")

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with suppress(SQLAlchemyError):
                self._connection.invalidate()
                self._connection.close()
            self._connection = None
