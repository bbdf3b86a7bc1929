"""`loyalty-connector backup`, and the restore drill: copy a database while it is being
written, restore the copy, and find it whole (verify clean, balances as of the copy)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from connector.cli import cli
from connector.config import Settings
from connector.db import Database
from connector.ledger.engine import Ledger
from connector.ledger.models import Account, Entry
from connector.ledger.views import AccountRef
from connector.program import Program
from connector.sealing import Sealer, key_source
from tests.conftest import POSTGRES_URL, TEST_SECRET_KEY, make_settings

ACCOUNTS = [AccountRef("bitrix24", "acme.bitrix24.ru", str(n)) for n in range(1, 6)]


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    config = tmp_path / "config.toml"
    # The messages are read in English (program.language = en).
    config.write_text(f'{extra}[database]\nurl = "{url}"\n[program]\nlanguage = "en"\n',
                      encoding="utf-8")
    return config


class Writer(threading.Thread):
    """Keeps accruing to the accounts, as `serve` would, until stopped."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.db = Database(settings.database)
        self.ledger = Ledger(self.db, Program(settings.program))
        self.stop = threading.Event()
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                ref = ACCOUNTS[self.written % len(ACCOUNTS)]
                self.ledger.accrue(ref, Decimal("10.50"), key=f"live:{self.written}")
                self.written += 1
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def wait_for(self, count: int) -> None:
        while self.written < count and self.error is None and self.is_alive():
            self.stop.wait(0.01)

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        self.db.dispose()
        assert self.error is None, self.error


def seed(ledger: Ledger) -> None:
    for number, ref in enumerate(ACCOUNTS):
        ledger.accrue(ref, Decimal("1000"), key=f"seed:{number}")
    ledger.redeem(ACCOUNTS[0], Decimal("30"), key="seed:redeem")


def snapshot(db: Database) -> tuple[dict[int, tuple[str, int, int]], dict[str, int]]:
    """Every entry (id -> key, amount, balance after) and every account's stored balance."""
    with db.transaction(write=False) as session:
        entries = {row.id: (row.idempotency_key, row.amount, row.balance_after)
                   for row in session.execute(select(Entry.id, Entry.idempotency_key,
                                                     Entry.amount, Entry.balance_after))}
        balances = {contact: balance for contact, balance in session.execute(
            select(Account.contact_id, Account.balance))}
    return entries, balances


def check_restored(source: Database, restored: Database) -> int:
    """The copy is the source as of one moment: verify clean, its entries exactly the
    source's first ones, each account's balance what its entries say. Returns entries."""
    checked, mismatches = Ledger(restored, Program(Settings().program)).verify()
    assert checked == len(ACCOUNTS) and mismatches == []
    copied, balances = snapshot(restored)
    later, _ = snapshot(source)
    assert copied, "the copy holds no entries"
    # A consistent snapshot: no gap, nothing the source does not hold, nothing changed.
    assert set(copied) == {entry for entry in later if entry <= max(copied)}
    assert all(later[entry] == copied[entry] for entry in copied)
    with restored.transaction(write=False) as session:
        sums = dict(session.execute(select(Account.contact_id, func.sum(Entry.amount))
                                    .join(Entry, Entry.account_id == Account.id)
                                    .group_by(Account.contact_id)).all())
        last = dict(session.execute(
            select(Account.contact_id, Entry.balance_after)
            .join(Entry, Entry.account_id == Account.id)
            .where(Entry.id.in_(select(func.max(Entry.id)).group_by(Entry.account_id)))).all())
    assert balances == {contact: int(total) for contact, total in sums.items()} == last
    return len(copied)


# -- SQLite --------------------------------------------------------------------------------
def test_sqlite_backup_while_writing_restores_whole_with_its_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: Callable[[int], int]) -> None:
    monkeypatch.delenv("LOYALTY_SECRET_KEY", raising=False)  # the key file, not the environment
    live = tmp_path / "live" / "loyalty.db"
    url = f"sqlite:///{live}"
    settings = make_settings(tmp_path, url)
    db = Database(settings.database)
    db.upgrade()
    seed(Ledger(db, Program(settings.program)))
    sealed = Sealer(key_source(settings)).seal("crm-refresh-token")  # makes loyalty.db.key
    config = write_config(tmp_path, url)
    target = tmp_path / "copies" / "nightly.db"
    target.parent.mkdir()
    umask(0o022)

    writer = Writer(settings)
    writer.start()
    try:
        writer.wait_for(50)
        result = run(config, "backup", str(target))
        at_copy = writer.written
        writer.wait_for(at_copy + 50)  # the writer went on after the copy
    finally:
        writer.finish()

    assert result.exit_code == 0, (result.output, result.exception)
    size = target.stat().st_size
    assert result.stdout.splitlines()[0] == f"backup: wrote {target} ({size / 1024:.1f} KB " \
                                            f"({size} bytes))"
    assert f"wrote the secret key to {target}.key (mode 0600)" in result.stdout
    key_copy = Path(f"{target}.key")
    assert stat.S_IMODE(key_copy.stat().st_mode) == 0o600
    # The copy holds personal data and sealed tokens: owner only too (umask 022 here).
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert key_copy.read_bytes() == Path(f"{live}.key").read_bytes()
    assert key_copy.read_text().strip() not in result.output
    assert not Path(f"{target}-wal").exists()

    # Restore: copy the file and its key back as a database, `db upgrade`, then `verify`.
    restored_path = tmp_path / "restored" / "loyalty.db"
    restored_path.parent.mkdir()
    shutil.copyfile(target, restored_path)
    shutil.copyfile(key_copy, f"{restored_path}.key")
    os.chmod(f"{restored_path}.key", 0o600)
    restored_url = f"sqlite:///{restored_path}"
    restored_config = write_config(tmp_path / "restored", restored_url)
    assert run(restored_config, "db", "upgrade").exit_code == 0
    verified = run(restored_config, "verify")
    assert verified.exit_code == 0 and ", 0 mismatches" in verified.stdout

    restored = Database(make_settings(tmp_path, restored_url).database)
    copied = check_restored(db, restored)
    assert len(ACCOUNTS) + 1 + 50 <= copied < len(ACCOUNTS) + 1 + writer.written
    restored_settings = make_settings(tmp_path, restored_url)
    assert Sealer(key_source(restored_settings)).open(sealed) == "crm-refresh-token"
    restored.dispose()
    db.dispose()


def test_sqlite_backup_with_key_in_environment_says_where_the_key_is(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/loyalty.db"
    Database(make_settings(tmp_path, url).database).upgrade()
    config = write_config(tmp_path, url, f'secret_key = "{TEST_SECRET_KEY}"\n')
    result = run(config, "backup", str(tmp_path / "copy.db"))
    assert result.exit_code == 0, result.output
    assert "the key is in LOYALTY_SECRET_KEY" in result.stdout
    assert TEST_SECRET_KEY not in result.output
    assert not (tmp_path / "copy.db.key").exists()


def test_sqlite_backup_of_a_missing_database_is_one_error_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/nope.db")
    result = run(config, "backup", str(tmp_path / "copy.db"))
    assert result.exit_code == 1
    assert result.stderr == f"error: database {tmp_path}/nope.db does not exist\n"
    assert not (tmp_path / "copy.db").exists()


def test_backup_never_overwrites_the_live_database_or_its_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOYALTY_SECRET_KEY", raising=False)
    live = tmp_path / "loyalty.db"
    settings = make_settings(tmp_path, f"sqlite:///{live}")
    Database(settings.database).upgrade()
    Sealer(key_source(settings)).seal("token")  # makes loyalty.db.key
    before = live.read_bytes(), Path(f"{live}.key").read_bytes()
    config = write_config(tmp_path, f"sqlite:///{live}")
    for target in (live, tmp_path / "loyalty.db-wal", tmp_path / "loyalty"):
        # "loyalty" would put its key copy at loyalty.key: not the live key, allowed.
        result = run(config, "backup", str(target))
        if target.name == "loyalty":
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 1
        assert result.stderr == (f"error: {target} would overwrite the live {target}: back up "
                                 "to another path\n")
    assert (live.read_bytes(), Path(f"{live}.key").read_bytes()) == before
    own_key = write_config(tmp_path, f"sqlite:///{live}",
                           f'secret_key_file = "{tmp_path}/copy.key"\n')
    Path(tmp_path / "copy.key").write_bytes(before[1])
    result = run(own_key, "backup", str(tmp_path / "copy"))
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path}/copy would overwrite the live "
                             f"{tmp_path}/copy.key: back up to another path\n")


# -- PostgreSQL: pg_dump, the password never on its command line ---------------------------
FAKE_PG_DUMP = """#!/bin/sh
printf '%s\\n' "$@" > "{log}"
printf '%s' "$PGPASSWORD" > "{log}.password"
for arg in "$@"; do case "$arg" in --file=*) printf 'PGDMP' > "${{arg#--file=}}";; esac; done
{tail}
"""


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Sets a known umask for the test; the process's own is put back after it."""
    original = os.umask(0o022)
    os.umask(original)
    yield os.umask
    os.umask(original)


def fake_pg_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tail: str = "") -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pg_dump.log"
    script = bin_dir / "pg_dump"
    script.write_text(FAKE_PG_DUMP.format(log=log, tail=tail), encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def test_pg_dump_gets_the_password_through_the_environment_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: Callable[[int], int]) -> None:
    log = fake_pg_dump(tmp_path, monkeypatch)
    url = "postgresql://loyalty:s3cr%40t-pw@db.internal:6543/loyalty"
    config = write_config(tmp_path, url, f'secret_key = "{TEST_SECRET_KEY}"\n')
    target = tmp_path / "loyalty.dump"
    umask(0o022)
    result = run(config, "backup", str(target))
    assert result.exit_code == 0, result.output
    # Into a 0600 file made for it, renamed to PATH once pg_dump succeeded.
    assert log.read_text().splitlines() == [
        "--format=custom", "--no-password", f"--file={tmp_path}/.loyalty.dump.{os.getpid()}.tmp",
        "--host=db.internal", "--port=6543", "--username=loyalty", "--dbname=loyalty"]
    assert target.read_bytes() == b"PGDMP"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []
    assert Path(f"{log}.password").read_text() == "s3cr@t-pw"
    assert result.stdout.splitlines()[0] == f"backup: wrote {target} (5 bytes)"
    assert "s3cr" not in result.output


def test_pg_dump_failure_is_one_line_without_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pg_dump(tmp_path, monkeypatch, tail='echo "pg_dump: error: password '
                                              'authentication failed (s3cret-pw)" >&2; exit 1')
    config = write_config(tmp_path, "postgresql://loyalty:s3cret-pw@db/loyalty",
                          f'secret_key = "{TEST_SECRET_KEY}"\n')
    result = run(config, "backup", str(tmp_path / "loyalty.dump"))
    assert result.exit_code == 1
    assert result.stderr == ("error: pg_dump failed: pg_dump: error: password authentication "
                             "failed (***)\n")
    assert not (tmp_path / "loyalty.dump").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []
    # An earlier copy at PATH is left as it was.
    earlier = tmp_path / "earlier.dump"
    earlier.write_bytes(b"yesterday")
    again = run(config, "backup", str(earlier))
    assert again.exit_code == 1 and earlier.read_bytes() == b"yesterday"


def test_an_earlier_copy_readable_by_others_is_replaced_by_an_owner_only_one(
        tmp_path: Path, umask: Callable[[int], int]) -> None:
    url = f"sqlite:///{tmp_path / 'loyalty.db'}"
    Database(make_settings(tmp_path, url).database).upgrade()
    config = write_config(tmp_path, url, f'secret_key = "{TEST_SECRET_KEY}"\n')
    target = tmp_path / "copy.db"
    target.write_bytes(b"an old copy")
    target.chmod(0o644)
    umask(0o002)
    result = run(config, "backup", str(target))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes().startswith(b"SQLite format 3")


def test_pg_dump_not_installed_is_one_error_line(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    config = write_config(tmp_path, "postgresql://loyalty:pw@db/loyalty",
                          f'secret_key = "{TEST_SECRET_KEY}"\n')
    result = run(config, "backup", str(tmp_path / "loyalty.dump"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: pg_dump is not installed")
    assert len(result.stderr.splitlines()) == 1


# -- PostgreSQL: the drill against the real server -----------------------------------------
@pytest.mark.skipif(not POSTGRES_URL or not shutil.which("pg_dump")
                    or not shutil.which("pg_restore"),
                    reason="needs LOYALTY_TEST_DATABASE_URL, pg_dump and pg_restore")
def test_postgres_dump_while_writing_restores_into_a_fresh_database(
        tmp_path: Path, umask: Callable[[int], int]) -> None:
    assert POSTGRES_URL is not None
    settings = make_settings(tmp_path, POSTGRES_URL)
    db = Database(settings.database)
    db.upgrade()
    with db.engine.begin() as connection:
        connection.execute(text("TRUNCATE accounts, entries, lots RESTART IDENTITY CASCADE"))
    seed(Ledger(db, Program(settings.program)))
    config = write_config(tmp_path, POSTGRES_URL, f'secret_key = "{TEST_SECRET_KEY}"\n')
    target = tmp_path / "loyalty.dump"
    umask(0o022)

    writer = Writer(settings)
    writer.start()
    try:
        writer.wait_for(30)
        result = run(config, "backup", str(target))
        writer.wait_for(writer.written + 30)
    finally:
        writer.finish()
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.startswith(f"backup: wrote {target} (")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    name = f"test_backup_restore_{uuid.uuid4().hex[:10]}"
    server = make_url(POSTGRES_URL).set(host="127.0.0.1", username="postgres")
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    restored: Database | None = None
    try:
        subprocess.run(["pg_restore", "--no-owner", "--host=127.0.0.1", "--username=postgres",
                        f"--port={server.port or 5432}", f"--dbname={name}", str(target)],
                       check=True, capture_output=True)
        restored_url = server.set(database=name).render_as_string(hide_password=False)
        (tmp_path / "restored").mkdir()
        restored_config = write_config(tmp_path / "restored", restored_url,
                                       f'secret_key = "{TEST_SECRET_KEY}"\n')
        assert run(restored_config, "db", "upgrade").exit_code == 0
        verified = run(restored_config, "verify")
        assert verified.exit_code == 0 and ", 0 mismatches" in verified.stdout
        restored = Database(make_settings(tmp_path, restored_url).database)
        assert check_restored(db, restored) >= len(ACCOUNTS) + 1 + 30
    finally:
        if restored is not None:
            restored.dispose()
        db.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
