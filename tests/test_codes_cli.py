"""`loyalty-connector codes ...`: generate a batch, export it, show who used a code, list
a campaign's summary, and the refusals a user sees."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

from click.testing import CliRunner, Result

from connector.cli import cli
from connector.config import load_settings
from connector.ledger.views import AccountRef
from connector.services import Services

PROMO = '''
[[program.promo]]
name = "mail"
points = 25
budget = 1000

[[program.promo]]
name = "winter"
code = "WINTER25"
multiplier = 2
uses_per_customer = 0
'''


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def setup(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    # The outputs are read in English (program.language = en).
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n\n[program]\n'
                      f'language = "en"\n{PROMO}', encoding="utf-8")
    assert invoke(config, "db", "upgrade").exit_code == 0
    return config


def accrue(config: Path, contact: str, amount: str, key: str, code: str,
           at: datetime | None = None) -> None:
    services = Services.build(load_settings(config),
                              **({"clock": lambda: at} if at is not None else {}))
    try:
        services.ledger.accrue(AccountRef("bitrix24", "acme.bitrix24.ru", contact), D(amount),
                               key=key, promo_code=code)
    finally:
        services.close()


def test_generate_export_show_and_list(tmp_path: Path) -> None:
    config = setup(tmp_path)
    made = invoke(config, "codes", "generate", "mail", "--count", "5")
    assert made.exit_code == 0, made.output
    rows = list(csv.reader(io.StringIO(made.stdout)))
    assert rows[0] == ["campaign", "code"] and len(rows) == 6
    codes = [code for _, code in rows[1:]]
    assert len(set(codes)) == 5 and all(len(code) == 14 and code[4] == "-" for code in codes)
    assert "5 new codes" in made.stderr
    out = tmp_path / "batch.csv"
    assert invoke(config, "codes", "generate", "mail", "--count", "3", "-o", str(out)
                  ).exit_code == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4

    accrue(config, "7", "1000", "deal-1", codes[0].lower())
    accrue(config, "8", "1000", "deal-2", "winter25")
    shown = invoke(config, "codes", "show", codes[0])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0] == \
        f"code {codes[0]} of campaign mail: used 1 time(s), 0 left"
    assert "bitrix24 acme.bitrix24.ru contact 7  25.00 points  (deal-1)" in shown.stdout
    data = json.loads(invoke(config, "codes", "show", "WINTER-25", "--json").stdout)
    assert data["shared"] is True and data["uses"] == 1 and data["uses_left"] is None
    assert data["used_by"][0]["contact_id"] == "8" and data["used_by"][0]["points"] == "30.00"

    exported = invoke(config, "codes", "export", "mail")
    lines = list(csv.reader(io.StringIO(exported.stdout)))
    assert lines[0] == ["campaign", "code", "uses", "created_at"] and len(lines) == 9
    assert [row[2] for row in lines[1:] if row[1] == codes[0]] == ["1"]

    summary = invoke(config, "codes", "list", "mail")
    assert summary.stdout == ("mail: 25 points, valid any time; 8 code(s) generated, 1 used; "
                              "1 use(s) by 1 customer(s); 25.00 of 1000 points granted\n")
    both = json.loads(invoke(config, "codes", "list", "--json").stdout)
    assert [(s["campaign"], s["uses"], s["points_granted"]) for s in both] == [
        ("mail", 1, "25.00"), ("winter", 1, "30.00")]


def test_show_prints_times_in_the_programs_zone(tmp_path: Path) -> None:
    """As `rewards claims` and `account history` do: 22:30 UTC on 10 March is 08:30 on
    11 March in Vladivostok (UTC+10)."""
    config = setup(tmp_path)
    config.write_text(config.read_text(encoding="utf-8").replace(
        "[program]\n", '[program]\ntimezone = "Asia/Vladivostok"\n'), encoding="utf-8")
    accrue(config, "8", "1000", "deal-2", "winter25",
           at=datetime(2026, 3, 10, 22, 30, tzinfo=UTC))
    shown = invoke(config, "codes", "show", "WINTER25")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[1] == (
        "  2026-03-11 08:30  bitrix24 acme.bitrix24.ru contact 8  30.00 points  (deal-2)")
    assert "UTC" not in shown.stdout
    # The JSON keeps the instant, in UTC.
    data = json.loads(invoke(config, "codes", "show", "WINTER25", "--json").stdout)
    assert data["used_by"][0]["at"] == "2026-03-10T22:30:00+00:00"


def test_bad_input_names_what_to_fix(tmp_path: Path) -> None:
    config = setup(tmp_path)
    unknown = invoke(config, "codes", "generate", "summer", "--count", "5")
    assert unknown.exit_code == 2 and "no promo campaign 'summer'" in unknown.stderr
    assert "known: mail, winter" in unknown.stderr
    assert invoke(config, "codes", "generate", "mail", "--count", "0").exit_code == 2
    missing = invoke(config, "codes", "show", "ABCD-EFGH-JKMN")
    assert missing.exit_code == 1 and missing.stderr == "error: no promo code ABCDEFGHJKMN\n"
    assert invoke(config, "codes", "show", "?").exit_code == 1


def test_accrue_by_hand_with_a_code(tmp_path: Path) -> None:
    config = setup(tmp_path)
    args = ("accrue", "bitrix24", "acme.bitrix24.ru", "7", "1000", "--key", "pos-1")
    first = invoke(config, *args, "--promo-code", "winter-25")
    assert first.exit_code == 0, first.output
    assert "promo code WINTER25: +30.00 points (winter)" in first.stdout
    conflict = invoke(config, *args, "--promo-code", "OTHER1")
    assert conflict.exit_code == 1 and "other parameters" in conflict.stderr
    unknown = invoke(config, "accrue", "bitrix24", "acme.bitrix24.ru", "7", "10", "--key",
                     "pos-2", "--promo-code", "nope-nope")
    assert "promo code NOPENOPE: refused, unknown: no promo campaign has this code" \
        in unknown.stdout
