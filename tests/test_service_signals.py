"""SIGTERM in `worker` and `scheduler`: the loop is asked to stop, nothing is raised into
whatever code the signal interrupted; a second signal ends the process at once."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from connector.cli.service import _on_signals
from connector.scheduler import Background


class Loop(Background):
    def run(self) -> None:
        self.stopped.wait()


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("handlers")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_stops_the_loop_without_raising(signum: int) -> None:
    loop = Loop()
    _on_signals(loop)
    handler = signal.getsignal(signum)
    assert callable(handler)
    handler(signum, None)  # would raise SystemExit wherever the signal landed
    assert loop.stopped.is_set()
    with pytest.raises(SystemExit):
        handler(signum, None)


@pytest.mark.usefixtures("handlers")
def test_without_a_loop_the_signal_ends_the_process() -> None:
    _on_signals()
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    with pytest.raises(SystemExit):
        handler(signal.SIGTERM, None)
