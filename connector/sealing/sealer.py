"""Sealing: text encrypted and authenticated with the current key before it is stored.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a MultiFernet: the first key
seals, every key opens, so a key rotation never leaves a value unreadable half-way. A value
that no key opens (another key, or tampered with) raises SealError; it is never returned as is.
"""

from __future__ import annotations

import logging
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from connector.errors import SealError
from connector.sealing.keys import (
    KeyFileError,
    KeySource,
    new_key,
    read_key_file,
    write_key_file,
)

log = logging.getLogger(__name__)


class Sealer:
    """Keys are read on first use, so a command that never touches a token never needs them;
    a key file another process rewrote (a rotation) is read again when a value does not open."""

    def __init__(self, source: KeySource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._keys: list[bytes] | None = None
        self._fernet: MultiFernet | None = None
        self._stamp: tuple[int, int] | None = None

    def seal(self, value: str | None) -> str | None:
        if value is None:
            return None
        if self._file_changed():  # rotated by another process: seal with its new key
            self.reload()
        return self._current(create=True).encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return self._open(self._current(create=False), value)
        except SealError:
            if not self._file_changed():
                raise
            self.reload()
            return self._open(self._current(create=False), value)

    def reseal(self, value: str | None) -> str | None:
        """The value sealed again with the first key (rotation); SealError if none opens it."""
        if value is None:
            return None
        try:
            return self._current(create=False).rotate(value.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError):
            raise SealError(f"a stored value does not open with {self.describe()}") from None

    def ensure_key(self) -> None:
        """Load the key now, making the key file if this process may (first start)."""
        self._current(create=True)

    def reload(self) -> None:
        """Read the keys again on next use (the key file was rewritten)."""
        with self._lock:
            self._fernet = None

    @property
    def keys(self) -> list[bytes]:
        self._current(create=False)
        assert self._keys is not None
        return list(self._keys)

    def describe(self) -> str:
        return self.source.describe()

    # -- keys --------------------------------------------------------------------------------
    def _open(self, fernet: MultiFernet, value: str) -> str:
        try:
            return fernet.decrypt(value.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SealError(f"a stored value does not open with {self.describe()}") from None

    def _current(self, *, create: bool) -> MultiFernet:
        with self._lock:
            if self._fernet is None:
                self._keys = self._load(create=create)
                self._fernet = MultiFernet([Fernet(key) for key in self._keys])
            return self._fernet

    def _load(self, *, create: bool) -> list[bytes]:
        source = self.source
        if source.from_env:
            return list(source.env_keys)
        assert source.path is not None
        if not source.path.exists():
            if not (create and source.may_create):
                raise SealError(f"no key: {source.path} does not exist (restore it from the "
                                "backup of this database, or set LOYALTY_SECRET_KEY)")
            if write_key_file(source.path, [new_key().encode("ascii")], replace=False):
                log.warning("made a new key file %s (mode 0600) for the CRM tokens stored in "
                            "the database: back it up with the database", source.path)
        try:
            keys = read_key_file(source.path)
        except KeyFileError as exc:
            raise SealError(str(exc)) from None
        self._stamp = _stamp(source)
        return keys

    def _file_changed(self) -> bool:
        return (self._fernet is not None and not self.source.from_env
                and _stamp(self.source) != self._stamp)


def _stamp(source: KeySource) -> tuple[int, int] | None:
    try:
        info = source.path.stat() if source.path else None
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_ino) if info else None
