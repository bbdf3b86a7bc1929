"""LISTEN/NOTIFY on PostgreSQL: the inbox's insert announces itself to every worker process.

The NOTIFY rides in the insert's own statement (a CTE calling pg_notify), so it costs no
round trip and is delivered only if the rows were committed. PostgreSQL folds identical
notifications of one transaction into one, and the listener rings its doorbell once per
notification: a burst wakes a worker once or a few times, never once per row.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

from connector.wakeup.doorbell import Doorbell

log = logging.getLogger(__name__)
CHANNEL = "loyalty_inbox"
# How often a waiting listener looks up to see whether it is asked to stop.
STOP_CHECK_S = 0.5
RECONNECT_FIRST_S = 0.5


def notifying(sql: str, sender: str) -> str:
    """The INSERT ... RETURNING `sql`, also notifying CHANNEL with the payload `sender` (a
    token of the storing process, so that a listener in the same process can ignore its own
    announcements: the in-process doorbell already rang). Returns the same rows."""
    if not sender.isalnum():
        raise ValueError("the sender token must be alphanumeric")
    # MATERIALIZED: evaluated exactly once, whatever join the planner picks.
    return (f"WITH stored AS ({sql}), "
            f"announced AS MATERIALIZED (SELECT pg_notify('{CHANNEL}', '{sender}')) "
            "SELECT stored.* FROM stored, announced")


class Listener:
    """LISTENs on a connection of its own, on a daemon thread, and rings `bell` for every
    notification not sent by `own_sender`. After losing the connection it reconnects with
    growing pauses (up to `max_pause` seconds) and rings once: what was stored meanwhile was
    announced to nobody."""

    def __init__(self, engine: Engine, bell: Doorbell, *, own_sender: str | None = None,
                 max_pause: float = 5.0) -> None:
        self.engine = engine
        self.bell = bell
        self.own_sender = own_sender
        self.max_pause = max(max_pause, RECONNECT_FIRST_S)
        self.listening = threading.Event()  # set while LISTEN is in force
        self.backend_pid: int | None = None  # of the listening connection, for pg_stat_activity
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Listener:
        self._thread = threading.Thread(target=self._run, name="inbox-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        pause = RECONNECT_FIRST_S
        down = False
        while not self._stopped.is_set():
            try:
                connection = self._connect()
            except Exception as exc:
                if not down:
                    log.warning("inbox listener cannot connect (%s): the worker polls",
                                type(exc).__name__)
                down = True
                self._stopped.wait(pause)
                pause = min(pause * 2, self.max_pause)
                continue
            if down:
                log.warning("inbox listener connected again")
                down = False
            pause = RECONNECT_FIRST_S
            self.bell.ring()  # events stored while nobody listened
            try:
                self._listen(connection)
            except Exception as exc:
                log.warning("inbox listener lost its connection (%s): reconnecting",
                            type(exc).__name__)
                down = True
            finally:
                self.listening.clear()
                self._close(connection)

    def _connect(self) -> Any:
        pooled = self.engine.raw_connection()
        # Ours for good: never handed back to the pool in autocommit and LISTENing.
        pooled.detach()
        connection = pooled.dbapi_connection
        try:
            if connection.info.transaction_status:  # type: ignore[union-attr]
                connection.rollback()  # type: ignore[union-attr]
            connection.autocommit = True  # type: ignore[union-attr]
            connection.execute(f"LISTEN {CHANNEL}")  # type: ignore[union-attr]
        except BaseException:
            self._close(connection)
            raise
        return connection

    def _listen(self, connection: Any) -> None:
        self.backend_pid = connection.info.backend_pid
        self.listening.set()
        while not self._stopped.is_set():
            for notification in connection.notifies(timeout=STOP_CHECK_S):
                if notification.payload != self.own_sender:
                    self.bell.ring()

    @staticmethod
    def _close(connection: Any) -> None:
        try:
            connection.close()
        except Exception:  # already broken: nothing more to release
            log.debug("inbox listener: closing its connection failed", exc_info=True)
