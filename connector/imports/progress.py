"""How far an import has come: a bar on stderr when it is a terminal, nothing otherwise
(a log file or a pipe gets no control characters)."""

from __future__ import annotations

import sys
from typing import Any

import click

from connector.i18n import Text, Translator, render


class Progress:
    """Silent: what the library and the tests use."""

    def start(self, label: Text, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass


class TerminalProgress(Progress):
    def __init__(self, t: Translator | None = None) -> None:
        self._bar: Any = None
        self.t = t  # the labels' language: program.language (English without one)

    @staticmethod
    def wanted() -> bool:
        return sys.stderr.isatty()

    def start(self, label: Text, total: int) -> None:
        self.finish()
        if total > 0:
            self._bar = click.progressbar(length=total, label=render(label, self.t),
                                          file=sys.stderr)
            self._bar.__enter__()

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
