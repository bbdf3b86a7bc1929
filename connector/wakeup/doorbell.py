"""The in-process wake-up: rung by whoever stored events, waited on by the worker."""

from __future__ import annotations

import threading


class Doorbell:
    """A ring is kept until a `wait` takes it, so one that comes while the worker is busy
    makes its next wait return at once; rings in between collapse into one."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._rung = False

    def ring(self) -> None:
        with self._condition:
            self._rung = True
            self._condition.notify_all()

    @property
    def rung(self) -> bool:
        """Rung since the last clear or wait, without taking the ring."""
        with self._condition:
            return self._rung

    def clear(self) -> None:
        """Forget rings so far: the pass about to start sees what they announced."""
        with self._condition:
            self._rung = False

    def wait(self, timeout: float) -> bool:
        """True when rung (and the ring is taken), False after `timeout` seconds."""
        with self._condition:
            rung = self._condition.wait_for(lambda: self._rung, timeout)
            self._rung = False
            return rung
