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
from connector.ledger.views import AccountRef
from connector.operations import export as exports
from tests.conftest import Clock

ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "101")
BORIS = AccountRef("amocrm", "shop.amocrm.ru", "7")


def run(settings: Settings, tmp_path: Path, *args: str) -> Result:
    config = tmp_path / "config.toml"
    # The messages are read in English (program.language = en).
    config.write_text(f'[database]\nurl = "{settings.database.url}"\n[program]\n'
                      'language = "en"\n', encoding="utf-8")
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

    # --since is included, --until is not: 11 March alone holds Anna's payment and Boris.
    day = run(settings, tmp_path, "export", "entries", "--since", "2026-03-11",
              "--until", "2026-03-12")
    assert day.exit_code == 0, day.output
    assert [row["idempotency_key"] for row in rows(day.stdout)] == ["pay:1", "lead:5"]
    first = run(settings, tmp_path, "export", "entries", "--until", "2026-03-11")
    assert [row["idempotency_key"] for row in rows(first.stdout)] == ["deal:1"]
    none = run(settings, tmp_path, "export", "entries", "--since", "2026-03-12")
    assert none.stdout.splitlines() == [",".join(exports.ENTRY_COLUMNS)]


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
    accounts = run(settings, tmp_path, "export", "accounts", "--since", "2026-03-01")
    assert accounts.exit_code == 2
    assert "--since and --until apply to entries only" in accounts.stderr
    backwards = run(settings, tmp_path, "export", "entries", "--since", "2026-03-12",
                    "--until", "2026-03-11")
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
