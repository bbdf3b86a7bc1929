"""A consistent copy of the database, and of the key that opens its sealed CRM tokens.

SQLite goes through its online backup API: a page-by-page copy taken under a read
transaction, so it is consistent while `serve` keeps writing (WAL lets the writer go on).
PostgreSQL goes through `pg_dump -Fc`, restored with `pg_restore`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from connector.config import Settings
from connector.db import normalise_url
from connector.errors import ConfigError, StorageError
from connector.i18n import N_, Message
from connector.sealing.keys import KeyFileError, key_source, read_key_file, write_key_file


class BackupError(StorageError):
    """The backup could not be made; the text says what to fix (never a password)."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    key_path: Path | None
    # Where the key lives when it is not copied (environment, missing file), for the user.
    key_note: Message | None  # rendered in program.language by the CLI


def backup(settings: Settings, target: Path) -> BackupResult:
    url = make_url(normalise_url(settings.database.url))
    _refuse_overwriting_live_files(settings, url, target)
    backend = url.get_backend_name()
    if backend == "sqlite":
        _sqlite(url, target)
    elif backend == "postgresql":
        _postgres(url, target)
    else:
        raise BackupError(f"backup of a {backend} database is not supported")
    key_path, note = _copy_key(settings, target)
    return BackupResult(target, target.stat().st_size, key_path, note)


def _refuse_overwriting_live_files(settings: Settings, url: URL, target: Path) -> None:
    """A backup written over the live database or its key would destroy what it copies."""
    live = []
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        live += [Path(url.database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    try:
        source = key_source(settings)
    except ConfigError:
        source = None
    if source is not None and source.path is not None:
        live.append(source.path)
    written = {target.resolve(), target.with_name(target.name + ".key").resolve()}
    for path in live:
        if path.resolve() in written:
            raise BackupError(f"{target} would overwrite the live {path}: back up to "
                              "another path")


# The copy holds what the live database holds: personal data and sealed CRM tokens. Owner
# only, like the key file, whatever the umask.
COPY_MODE = 0o600


def _private_temporary(target: Path) -> Path:
    """An empty file beside `target`, mode 0600 from its creation (never readable by others,
    not even for a moment), that the copy is written into and then renamed to `target`: a
    failed copy never leaves a half file at PATH, nor removes an earlier copy there."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, COPY_MODE))
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.chmod(temporary, COPY_MODE)  # whatever the umask made of it
    return temporary


def _sqlite(url: URL, target: Path) -> None:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory database has nothing to back up")
    source_path = Path(url.database)
    if not source_path.exists():
        raise BackupError(f"database {source_path} does not exist")
    # Read-only on the source: the backup never writes to the live database.
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
    try:
        temporary = _private_temporary(target)
    except BackupError:
        source.close()
        raise
    try:
        # SQLite writes into the empty file (a valid empty database) and keeps its mode; its
        # journal takes the database file's mode too.
        copy = sqlite3.connect(temporary)
        try:
            source.backup(copy)
            # A copy that is one self-contained file: no -wal beside it to lose.
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
        os.chmod(temporary, COPY_MODE)
        os.replace(temporary, target)
    except sqlite3.Error as exc:
        raise BackupError(f"copying {source_path} to {target} failed: {exc}") from None
    finally:
        source.close()
        temporary.unlink(missing_ok=True)


def _postgres(url: URL, target: Path) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed (install the PostgreSQL client tools, "
                          "the same major version as the server or newer)")
    # pg_dump writes into the 0600 file made for it (opening an existing file keeps its mode).
    temporary = _private_temporary(target)
    arguments = [pg_dump, "--format=custom", "--no-password", f"--file={temporary}"]
    if url.host:
        arguments.append(f"--host={url.host}")
    if url.port:
        arguments.append(f"--port={url.port}")
    if url.username:
        arguments.append(f"--username={url.username}")
    arguments.append(f"--dbname={url.database or ''}")
    environment = dict(os.environ)
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
    sslmode = url.query.get("sslmode")
    if isinstance(sslmode, str):
        environment["PGSSLMODE"] = sslmode
    try:
        done = subprocess.run(arguments, env=environment, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            reason = lines[0] if lines else f"exit status {done.returncode}"
            if url.password:
                reason = reason.replace(str(url.password), "***")
            raise BackupError(f"pg_dump failed: {reason}")
        os.chmod(temporary, COPY_MODE)  # had pg_dump made the file anew
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _copy_key(settings: Settings, target: Path) -> tuple[Path | None, Message | None]:
    """The key file beside the copy as PATH.key (0600): without it the CRM tokens in the copy
    cannot be opened."""
    try:
        source = key_source(settings)
    except ConfigError:
        return None, N_("no secret key is configured: stored CRM tokens cannot be opened")
    if source.from_env:
        return None, N_("the key is in LOYALTY_SECRET_KEY: keep it, the copy's CRM tokens "
                        "need it")
    if source.path is None:
        return None, None
    if not source.path.exists():
        return None, N_("key file %(path)s does not exist yet (no token sealed with it)",
                        path=str(source.path))
    try:
        keys = read_key_file(source.path)
    except KeyFileError as exc:
        raise BackupError(str(exc)) from None
    key_path = target.with_name(target.name + ".key")
    write_key_file(key_path, keys, replace=True)
    return key_path, None
