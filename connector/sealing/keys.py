"""Where the key that seals stored CRM tokens comes from.

Strongest first: `LOYALTY_SECRET_KEY` (setting `secret_key`), else the key file
(`secret_key_file`, by default `<database>.key` beside a SQLite database). Either holds one or
more Fernet keys, newest first: the first seals, every one opens (a rotation in progress).

A SQLite database lives on one machine, so its key file can be made there on first start
(mode 0600). A PostgreSQL database is shared by processes on many machines: a key made by
one of them would be unknown to the others, so there the key is never invented; it must be
given, or the service refuses to start with one line saying what to set.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.config import Settings

ENV = "LOYALTY_SECRET_KEY"
NEW_KEY = "loyalty-connector secrets new-key"
KEY_FILE_MODE = 0o600
_SEPARATORS = re.compile(r"[\s,]+")


class KeyFileError(Exception):
    """The key file cannot be read or holds something that is not a key (text says which)."""


def parse_keys(text: str) -> list[bytes]:
    """Fernet keys separated by commas, spaces or lines; ValueError naming the bad one's place
    (never its text: it may be a key with a typo)."""
    keys = [part.encode("ascii", "replace") for part in _SEPARATORS.split(text.strip()) if part]
    if not keys:
        raise ValueError(f"empty: expected a key (make one: {NEW_KEY})")
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:
            raise ValueError(f"key {number} of {len(keys)} is not a Fernet key (44 characters "
                             f"of url-safe base64; make one: {NEW_KEY})") from None
    return keys


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


@dataclass(frozen=True)
class KeySource:
    """The environment's keys, or a key file (which this process may create), or, for an
    in-memory database that dies with the process, a key held only in memory."""

    env_keys: tuple[bytes, ...] = ()
    path: Path | None = None
    may_create: bool = False

    @property
    def from_env(self) -> bool:
        return bool(self.env_keys)

    def describe(self) -> str:
        if self.from_env:
            return ENV
        if self.path is not None:
            return f"key file {self.path}"
        return "a key held in memory (in-memory database)"


def key_source(settings: Settings) -> KeySource:
    """Decide where the key comes from; ConfigError (one line) when nothing safe is possible."""
    if settings.secret_key is not None:
        return KeySource(env_keys=tuple(parse_keys(settings.secret_key.get_secret_value())))
    url = make_url(settings.database.url)
    sqlite = url.get_backend_name() == "sqlite"
    if settings.secret_key_file:
        path = Path(settings.secret_key_file).expanduser()
        if not sqlite and not path.exists():
            raise ConfigError([f"secret_key_file: {path} does not exist (on PostgreSQL the key "
                               f"is never made automatically: write one there with {NEW_KEY}, "
                               f"or set {ENV})"])
        return KeySource(path=path, may_create=sqlite)
    if not sqlite:
        raise ConfigError([f"secret_key: {url.get_backend_name()} needs the key that encrypts "
                           f"stored CRM tokens: set {ENV} (make one: {NEW_KEY}) or "
                           "secret_key_file"])
    if not url.database or url.database == ":memory:":
        return KeySource(env_keys=(Fernet.generate_key(),))
    return KeySource(path=Path(url.database + ".key"), may_create=True)


# -- the key file ----------------------------------------------------------------------------
def read_key_file(path: Path) -> list[bytes]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"key file {path} cannot be read ({_reason(exc)})") from None
    try:
        return parse_keys(text)
    except ValueError as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None


def write_key_file(path: Path, keys: list[bytes], *, replace: bool) -> bool:
    """Write the keys (newest first) with mode 0600, whole or not at all. Without `replace`
    an existing file wins (another process made it first): False then."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write("".join(key.decode("ascii") + "\n" for key in keys))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, KEY_FILE_MODE)  # whatever the umask made of it
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # atomic, and fails if the file exists
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)


def too_open(path: Path) -> str | None:
    """The file's mode as text when group or others may read or write it, else None."""
    mode = stat.S_IMODE(path.stat().st_mode)
    return f"{mode:04o}" if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
