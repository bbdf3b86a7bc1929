"""`loyalty-connector export`: CSV for accounting, exact amounts, UTC timestamps, periods."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import cli
from connector.config import Settings
from connector.errors import DatabaseUnavailableError
from connector.ledger.engine import Ledger
from connector.ledger.models import ENTRY_KINDS
from connector.ledger.views import AccountRef
from connector.operations import export as exports
from tests.conftest import Clock

ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "101")
BORIS = AccountRef("amocrm", "shop.amocrm.ru", "7")


def run(settings: Settings, tmp_path: Path, *args: str, program: str = 'language = "en"'
        ) -> Result:
    """The command, its messages read in English unless `program` says otherwise."""
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{settings.database.url}"\n'
                      f'[program]\n{program}\n', encoding="utf-8")
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def book(ledger: Ledger, clock: Clock) -> Ledger:
    """Anna buys on 10 March (1234.56 -> 37 points) and pays 30 points on 11 March;
    Boris buys just before midnight UTC of 11 March."""
    ledger.accrue(ANNA, D("1234.56"), key="deal:1", source="deal:1", comment="first, \"big\"")
    clock.advance(days=1)
    ledger.redeem(ANNA, D("30"), key="pay:1")
    ledger.accrue(BORIS, D("99.99"), key="lead:5", source="lead:5",
                  occurred_at=datetime(2026, 3, 11, 23, 59, 59, tzinfo=UTC))
    return ledger


def test_accounts_csv_has_a_header_and_exact_amounts(book: Ledger, settings: Settings,
                                                     tmp_path: Path) -> None:
    result = run(settings, tmp_path, "export", "accounts")
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.splitlines()[0] == ",".join(exports.ACCOUNT_COLUMNS)
    anna, boris = rows(result.stdout)
    assert anna == {"crm": "bitrix24", "portal": "acme.bitrix24.ru", "contact_id": "101",
                    "card_number": anna["card_number"], "tier": "Bronze", "balance": "7.00",
                    "purchase_count": "1", "purchase_total": "1234.56",
                    "created_at": "2026-03-10T09:00:00+00:00"}
    assert (boris["balance"], boris["purchase_total"]) == ("2.00", "99.99")
    assert book.account(ANNA).balance == D(anna["balance"])


def test_entries_in_a_period_by_occurred_at(book: Ledger, settings: Settings,
                                           tmp_path: Path) -> None:
    whole = run(settings, tmp_path, "export", "entries")
    assert whole.exit_code == 0, (whole.output, whole.exception)
    assert whole.stdout.splitlines()[0] == ",".join(exports.ENTRY_COLUMNS)
    accrual, redemption, boris = rows(whole.stdout)
    assert accrual | {"id": ""} == {
        "id": "", "occurred_at": "2026-03-10T09:00:00+00:00", "crm": "bitrix24",
        "portal": "acme.bitrix24.ru", "contact_id": "101", "kind": "accrual",
        "points": "37.00", "balance_after": "37.00", "idempotency_key": "deal:1",
        "source": "deal:1", "purchase_amount": "1234.56", "actor": "",
        "comment": "first, \"big\""}
    assert (redemption["kind"], redemption["points"], redemption["balance_after"],
            redemption["purchase_amount"]) == ("redemption", "-30.00", "7.00", "")
    assert boris["occurred_at"] == "2026-03-11T23:59:59+00:00"

    # Days are the program's (Europe/Moscow, UTC+3), as in `stats`: --since is included,
    # --until is not; Boris bought at 02:59 on 12 March local time, so 11 March holds
    # Anna's payment alone.
    day = run(settings, tmp_path, "export", "entries", "--since", "2026-03-11",
              "--until", "2026-03-12")
    assert day.exit_code == 0, day.output
    assert [row["idempotency_key"] for row in rows(day.stdout)] == ["pay:1"]
    first = run(settings, tmp_path, "export", "entries", "--until", "2026-03-11")
    assert [row["idempotency_key"] for row in rows(first.stdout)] == ["deal:1"]
    last = run(settings, tmp_path, "export", "entries", "--since", "2026-03-12")
    assert [row["idempotency_key"] for row in rows(last.stdout)] == ["lead:5"]
    none = run(settings, tmp_path, "export", "entries", "--since", "2026-03-13")
    assert none.stdout.splitlines() == [",".join(exports.ENTRY_COLUMNS)]


def test_entries_days_follow_the_configured_time_zone(book: Ledger, settings: Settings,
                                                       tmp_path: Path) -> None:
    # In UTC, Boris's purchase at 23:59:59 UTC is on 11 March.
    day = run(settings, tmp_path, "export", "entries", "--since", "2026-03-11",
              "--until", "2026-03-12", program='language = "en"\ntimezone = "UTC"')
    assert day.exit_code == 0, day.output
    assert [row["idempotency_key"] for row in rows(day.stdout)] == ["pay:1", "lead:5"]


def at(settings: Settings, tmp_path: Path, *args: str) -> dict[str, dict[str, str]]:
    result = run(settings, tmp_path, "export", "accounts", *args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.splitlines()[0] == ",".join(exports.ACCOUNT_AT_COLUMNS)
    found = {row["contact_id"]: row for row in rows(result.stdout)}
    for row in found.values():  # each row adds up
        assert (D(row["start_balance"]) + D(row["earned"]) + D(row["redeemed"])
                + D(row["expired"]) + D(row["other"])) == D(row["balance"])
    return found


def figures(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[name] for name in ("start_balance", "earned", "redeemed", "expired",
                                        "other", "balance"))


def test_accounts_at_the_end_of_a_day_are_rebuilt_from_entries(
        book: Ledger, settings: Settings, tmp_path: Path, clock: Clock) -> None:
    """The book (times UTC; the program's days are Moscow's, UTC+3), worked by hand:
    10.03 09:00 Anna +37 (accrual)        11.03 09:00 Anna -30 (redemption)
    11.03 23:59:59 Boris +2 (accrual, 12.03 local)
    12.03 09:00 Anna +5 (adjustment)      13.03 09:00 Carol's account opened, no entries
    13.03.2027 09:00 expiry: Anna's two lots (7 left of 37, and 5), Boris's 2."""
    clock.advance(days=1)  # 12 March
    book.adjust(ANNA, D("5"), key="fix:1", reason="goodwill")
    clock.advance(days=1)  # 13 March
    carol = AccountRef("bitrix24", "acme.bitrix24.ru", "303")
    book.open_account(carol)

    first = at(settings, tmp_path, "--at", "2026-03-10")
    assert set(first) == {"101"}  # Boris's account was opened on 11 March
    assert figures(first["101"]) == ("0.00", "37.00", "0.00", "0.00", "0.00", "37.00")

    # Boris's purchase at 23:59:59 UTC on 11 March is 12 March in Moscow: not yet counted.
    second = at(settings, tmp_path, "--at", "2026-03-11")
    assert figures(second["101"]) == ("0.00", "37.00", "-30.00", "0.00", "0.00", "7.00")
    assert figures(second["7"]) == ("0.00", "0.00", "0.00", "0.00", "0.00", "0.00")
    assert "303" not in second

    # A period: the balance at its start, then what moved in it.
    period = at(settings, tmp_path, "--since", "2026-03-11", "--at", "2026-03-12")
    assert figures(period["101"]) == ("37.00", "0.00", "-30.00", "0.00", "5.00", "12.00")
    assert figures(period["7"]) == ("0.00", "2.00", "0.00", "0.00", "0.00", "2.00")
    assert "303" not in period
    anna = period["101"]
    assert (anna["crm"], anna["portal"], anna["card_number"]) == (
        "bitrix24", "acme.bitrix24.ru", book.account(ANNA).card_number)

    clock.now = datetime(2027, 3, 13, 9, 0, tzinfo=UTC)
    assert book.expire_due() == 3
    before = at(settings, tmp_path, "--at", "2027-03-12")
    assert figures(before["101"])[-1] == "12.00"
    assert figures(before["303"]) == ("0.00",) * 6
    after = at(settings, tmp_path, "--since", "2027-01-01", "--at", "2027-03-13")
    assert figures(after["101"]) == ("12.00", "0.00", "0.00", "-12.00", "0.00", "0.00")
    assert figures(after["7"]) == ("2.00", "0.00", "0.00", "-2.00", "0.00", "0.00")
    # Today's figures are the accounts' balances as the ledger keeps them.
    for contact, ref in (("101", ANNA), ("7", BORIS), ("303", carol)):
        assert D(after[contact]["balance"]) == book.account(ref).balance


def test_every_entry_kind_lands_in_one_column() -> None:
    groups = (exports.EARNED_KINDS + exports.REDEEMED_KINDS + exports.EXPIRED_KINDS
              + exports.OTHER_KINDS)
    assert sorted(groups) == sorted(ENTRY_KINDS)


def test_output_file_and_small_batches_give_the_same_rows(
        book: Ledger, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    on_stdout = run(settings, tmp_path, "export", "entries").stdout_bytes
    monkeypatch.setattr(exports, "BATCH", 1)  # every row its own fetch from the cursor
    target = tmp_path / "entries.csv"
    result = run(settings, tmp_path, "export", "entries", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"export: wrote 3 entries to {target}\n"
    assert target.read_bytes() == on_stdout and on_stdout.count(b"\r\n") == 4  # RFC 4180


def test_bad_periods_are_usage_errors(book: Ledger, settings: Settings,
                                     tmp_path: Path) -> None:
    accounts = run(settings, tmp_path, "export", "accounts", "--since", "2026-03-01",
                   program="")
    assert accounts.exit_code == 2
    # In program.language, Russian by default.
    assert "accounts: --since работает только вместе с --at" in accounts.stderr
    english = run(settings, tmp_path, "export", "accounts", "--since", "2026-03-01",
                  program='language = "en"')
    assert "accounts: --since needs --at" in english.stderr
    en = 'language = "en"'
    until = run(settings, tmp_path, "export", "accounts", "--at", "2026-03-11",
                "--until", "2026-03-12", program=en)
    assert until.exit_code == 2 and "--at DAY ends the period" in until.stderr
    entries_at = run(settings, tmp_path, "export", "entries", "--at", "2026-03-11", program=en)
    assert entries_at.exit_code == 2 and "--at applies to accounts only" in entries_at.stderr
    late = run(settings, tmp_path, "export", "accounts", "--since", "2026-03-12",
               "--at", "2026-03-11", program=en)
    assert late.exit_code == 2 and "--since must not be after --at" in late.stderr
    backwards = run(settings, tmp_path, "export", "entries", "--since", "2026-03-12",
                    "--until", "2026-03-11", program=en)
    assert backwards.exit_code == 2 and "--since must be before --until" in backwards.stderr
    bad_date = run(settings, tmp_path, "export", "entries", "--since", "12.03.2026")
    assert bad_date.exit_code == 2 and "--since" in bad_date.stderr


def test_an_unwritable_output_is_one_error_line_and_no_file(book: Ledger, settings: Settings,
                                                            tmp_path: Path) -> None:
    target = tmp_path / "missing" / "entries.csv"
    result = run(settings, tmp_path, "export", "entries", "--output", str(target))
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot write {target}: No such file or directory\n"
    assert not target.parent.exists()


def test_a_failure_midway_leaves_no_half_file(book: Ledger, settings: Settings, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> Iterator[tuple[str, ...]]:
        yield ("1",) * len(exports.ENTRY_COLUMNS)
        raise DatabaseUnavailableError("database sqlite:///x unreachable: disk I/O error")

    monkeypatch.setattr(exports, "entry_rows", broken)
    target = tmp_path / "out" / "entries.csv"
    target.parent.mkdir()
    result = run(settings, tmp_path, "export", "entries", "--output", str(target))
    assert result.exit_code == 1
    assert result.stderr == "error: database sqlite:///x unreachable: disk I/O error\n"
    assert list(target.parent.iterdir()) == []
