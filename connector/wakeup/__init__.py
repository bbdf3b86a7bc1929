"""Waking the inbox worker when an event is stored, instead of at its next poll.

In one process (`serve`) the inbox rings a `Doorbell` after each commit. Across processes on
PostgreSQL the insert also sends a NOTIFY in its own transaction, and each worker's `Listener`
(a LISTEN on a connection of its own) rings its doorbell. The worker's poll stays as the
fallback: SQLite across processes, a notification lost while a listener reconnected.
"""

from connector.wakeup.doorbell import Doorbell
from connector.wakeup.postgres import CHANNEL, Listener, notifying

__all__ = ["CHANNEL", "Doorbell", "Listener", "notifying"]
