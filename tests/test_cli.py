"""The `loyalty-connector` command, run in-process against a SQLite file."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import cli
from connector.config import DatabaseSettings, load_settings
from connector.db import Database
from connector.referrals.codes import luhn_valid
from connector.sandbox.amocrm import FakeAmoCRM
from connector.services import Services
from webhooks import create_app

Run = Callable[..., Result]
ANNA = ("bitrix24", "acme.bitrix24.ru", "101")
ANNA_REF = "bitrix24:acme.bitrix24.ru:contact:101"


def write_config(tmp_path: Path, extra: str = "", *, english: bool = True) -> Path:
    """The outputs are read in English here unless `extra` (which goes on in [program]) names
    the language, or `english` is false (program.language's default, Russian)."""
    language = "" if "language =" in extra or not english else 'language = "en"\n'
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n\n'
                    '[program]\nwelcome_bonus = 100\nbonuses = { review = 50 }\n' + language
                    + extra, encoding="utf-8")
    return path


@pytest.fixture
def fresh(tmp_path: Path) -> Run:
    """Runs the command with a config whose database is not migrated yet."""
    config = write_config(tmp_path)

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    return run


@pytest.fixture
def run(fresh: Run) -> Run:
    assert fresh("db", "upgrade").exit_code == 0
    return fresh


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def head() -> str:
    revision = Database(DatabaseSettings(url="sqlite://")).head_revision()
    assert revision is not None
    return revision


# -- configuration and the schema ----------------------------------------------------------
def test_config_may_come_after_the_command(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    upgrade = CliRunner().invoke(cli, ["db", "upgrade", "--config", config])
    assert ok(upgrade) == f"database at revision {head()} (head)\n"
    assert ok(CliRunner().invoke(cli, ["db", f"--config={config}", "current"])) == \
        f"database at revision {head()} (head)\n"
    shown = CliRunner().invoke(cli, ["account", "show", *ANNA, "--config", config])
    assert shown.exit_code == 1 and "no loyalty account" in shown.stderr
    assert not (tmp_path / "loyalty.db").exists()  # the named config's database, not ./


def test_config_errors_name_each_key_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('colour = "red"\n[program]\nredeem_share = 1.5\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(bad), "verify"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "config: program.redeem_share: Input should be less than or equal to 1 (got 1.5)",
        "config: colour: unknown setting (check the spelling against config.example.toml)"
        " (got 'red')",
    ]
    assert "Traceback" not in result.output and result.stdout == ""


def test_missing_config_file_and_default_config_toml(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.toml"), "db", "current"])
    assert result.exit_code == 2
    assert result.stderr == f"config: config file {tmp_path / 'nope.toml'}: not found\n"
    write_config(tmp_path)  # tests run in tmp_path: ./config.toml is the default
    assert ok(CliRunner().invoke(cli, ["db", "upgrade"])) == \
        f"database at revision {head()} (head)\n"
    assert (tmp_path / "cli.db").is_file()


def test_help_needs_no_valid_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("nonsense = 1\n", encoding="utf-8")
    assert "accrue" in ok(CliRunner().invoke(cli, ["--help"]))


def test_unmigrated_database_says_to_run_db_upgrade(fresh: Run, tmp_path: Path) -> None:
    # No database yet: said, with the config it came from, and no empty file left behind.
    result = fresh("account", "show", *ANNA)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: no database at {tmp_path}/cli.db (config: {tmp_path}/config.toml): run "
        "`loyalty-connector db upgrade` (or serve) to make it, or name the config that holds "
        "database.url with --config\n")
    assert fresh("db", "current").exit_code == 1
    assert not (tmp_path / "cli.db").exists()
    sqlite3.connect(tmp_path / "cli.db").close()  # a file, but no schema in it
    result = fresh("account", "show", *ANNA)
    assert result.exit_code == 1
    assert result.stderr == (f"error: database schema is at nothing, expected {head()}: "
                             "run `loyalty-connector db upgrade`\n")
    current = fresh("db", "current")
    assert current.exit_code == 1
    assert current.stdout == f"database at revision nothing, head is {head()}\n"
    assert ok(fresh("db", "upgrade")) == f"database at revision {head()} (head)\n"
    assert ok(fresh("db", "current")) == f"database at revision {head()} (head)\n"


def test_no_database_is_said_in_the_program_language(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'language = "ru"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "account", "show", *ANNA])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: нет базы данных {tmp_path}/cli.db (конфигурация: {config}): создайте её "
        "командой `loyalty-connector db upgrade` (или serve) либо укажите через --config "
        "конфигурацию с database.url\n")
    assert not (tmp_path / "cli.db").exists()


# -- changing balances ---------------------------------------------------------------------
def test_balance_changes_and_the_account_in_russian(tmp_path: Path) -> None:
    """The default language: kinds, words and figures the Russian way, the points word
    agreeing with the number (1 балл, 2 балла, 5 баллов, 2,5 балла)."""
    config = write_config(tmp_path, english=False)

    def run(*args: str) -> str:
        return ok(CliRunner().invoke(cli, ["--config", str(config), *args]))

    run("db", "upgrade")
    assert run("adjust", *ANNA, "1", "--reason", "r", "--key", "a:1") == \
        f"корректировка +1,00 балл для {ANNA_REF}, баланс 1,00\n"
    assert run("adjust", *ANNA, "2", "--reason", "r", "--key", "a:2") == \
        f"корректировка +2,00 балла для {ANNA_REF}, баланс 3,00\n"
    assert run("adjust", *ANNA, "5", "--reason", "r", "--key", "a:3") == \
        f"корректировка +5,00 баллов для {ANNA_REF}, баланс 8,00\n"
    assert run("adjust", *ANNA, "2.5", "--reason", "r", "--key", "a:4") == \
        f"корректировка +2,50 балла для {ANNA_REF}, баланс 10,50\n"
    assert run("adjust", *ANNA, "2.5", "--reason", "r", "--key", "a:4").endswith(
        "(уже записано)\n")
    assert run("accrue", *ANNA, "1000", "--key", "deal:1") == \
        f"начисление +30,00 баллов для {ANNA_REF}, баланс 40,50\n"
    shown = run("account", "show", *ANNA).splitlines()
    assert "баланс        40,50" in shown
    assert "сумма покупок 1\u00a0000,00 за последние 365 дней" in shown
    assert "след. уровень Silver, осталось купить на 29\u00a0000,00" in shown
    history = run("account", "history", *ANNA).splitlines()
    assert "начисление" in history[0] and "+30,00" in history[0] and "40,50" in history[0]
    assert run("verify") == "проверено счетов: 1, расхождений: 0\n"

def test_accrue_and_its_duplicate(run: Run) -> None:
    assert ok(run("accrue", *ANNA, "1000", "--key", "deal:1", "--comment", "shop")) == \
        f"accrual +30.00 points for {ANNA_REF}, balance 30.00\n"
    assert ok(run("accrue", *ANNA, "1000.00", "--key", "deal:1", "--comment", "shop")) == \
        f"accrual +30.00 points for {ANNA_REF}, balance 30.00 (already recorded)\n"
    other = run("accrue", *ANNA, "2000", "--key", "deal:1", "--comment", "shop")
    assert other.exit_code == 1
    assert other.output == ("error: key 'cli:deal:1' was already used by an earlier accrual "
                            "request with other parameters; send a new key for a new request\n")
    history = json.loads(ok(run("account", "history", *ANNA, "--json")))
    assert [(e["kind"], e["points"], e["key"], e["actor"], e["comment"]) for e in history] == [
        ("accrual", "30.00", "cli:deal:1", "cli", "shop")]


def test_portal_may_be_written_as_the_config_names_it_or_dash(tmp_path: Path) -> None:
    config = write_config(tmp_path, (
        '[bitrix24]\nenabled = true\n'
        'webhook_url = "https://acme.bitrix24.ru:8443/rest/1/hook0000secret/"\n'
        '[amocrm]\nenabled = true\nbase_url = "https://example.amocrm.ru"\n'
        'long_lived_token = "t"\nwebhook_secret = "Wh00kSecret0123456789"\n'))

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    ok(run("db", "upgrade"))
    ok(run("accrue", "bitrix24", "acme.bitrix24.ru", "101", "1000", "--key", "k1"))
    for spelling in ("-", "https://ACME.bitrix24.ru:8443/", "acme.bitrix24.ru:8443"):
        shown = json.loads(ok(run("account", "show", "bitrix24", spelling, "101", "--json")))
        assert shown["ref"]["portal"] == "acme.bitrix24.ru:8443"
    ok(run("accrue", "amocrm", "example", "7", "500", "--key", "k2"))
    shown = json.loads(ok(run("account", "show", "amocrm", "-", "7", "--json")))
    assert shown["ref"]["portal"] == "example.amocrm.ru"
    other = run("account", "show", "bitrix24", "other.bitrix24.ru", "101")
    assert other.exit_code == 1 and "no loyalty account" in other.stderr


def test_amounts_are_exact_or_refused(run: Run) -> None:
    result = run("accrue", *ANNA, "10.005", "--key", "k")
    assert result.exit_code == 2
    assert "'10.005' has more than two decimal places" in result.stderr
    negative = run("accrue", *ANNA, "-5", "--key", "k")
    assert negative.exit_code == 1
    assert negative.stderr == "error: purchase amount must be positive\n"
    assert run("accrue", "hubspot", "acme", "1", "10", "--key", "k").exit_code == 2


def test_redeem_insufficient_capped_and_partial(run: Run) -> None:
    ok(run("accrue", *ANNA, "10000", "--key", "deal:1"))  # +300
    short = run("redeem", *ANNA, "500", "--key", "pay:1")
    assert short.exit_code == 1
    assert short.stderr == "error: 300.00 points are spendable, 500.00 requested\n"
    capped = run("redeem", *ANNA, "200", "--key", "pay:2", "--purchase-amount", "300")
    assert capped.exit_code == 1
    assert capped.stderr == "error: at most 150.00 points may pay for a purchase of 300.00\n"
    assert ok(run("redeem", *ANNA, "200", "--key", "pay:3", "--purchase-amount", "300",
                  "--partial")) == f"redemption -150.00 points for {ANNA_REF}, balance 150.00\n"


def test_adjust_accepts_negative_points(run: Run) -> None:
    assert ok(run("adjust", *ANNA, "80", "--reason", "gift", "--key", "adj:1")) == \
        f"adjustment +80.00 points for {ANNA_REF}, balance 80.00\n"
    assert ok(run("adjust", *ANNA, "-50", "--reason", "typo", "--key", "adj:2")) == \
        f"adjustment -50.00 points for {ANNA_REF}, balance 30.00\n"
    assert ok(run("adjust", *ANNA, "--reason", "x", "--key", "adj:3", "--", "-5.5")) == \
        f"adjustment -5.50 points for {ANNA_REF}, balance 24.50\n"
    too_much = run("adjust", *ANNA, "-100", "--reason", "typo", "--key", "adj:4")
    assert too_much.exit_code == 1
    assert too_much.stderr == "error: balance is 24.50, cannot remove 100.00\n"
    assert run("adjust", *ANNA, "5", "--key", "adj:5").exit_code == 2  # --reason is required


def test_bonus_named_custom_amount_and_unknown(run: Run) -> None:
    assert ok(run("bonus", *ANNA, "welcome", "--key", "welcome:101")) == \
        f"bonus +100.00 points for {ANNA_REF}, balance 100.00\n"
    assert ok(run("bonus", *ANNA, "review", "--key", "review:1", "--points", "7")) == \
        f"bonus +7.00 points for {ANNA_REF}, balance 107.00\n"
    unknown = run("bonus", *ANNA, "lottery", "--key", "l:1")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: bonus 'lottery' is not configured (known: ")
    assert ok(run("bonus", *ANNA, "birthday", "--key", "bd:1")) == \
        f"nothing recorded for {ANNA_REF}: bonus is 0 in the program\n"


def test_reverse_takes_back_a_purchase_named_by_its_key(run: Run) -> None:
    ok(run("accrue", *ANNA, "2000", "--key", "order:7"))  # +60
    ok(run("accrue", *ANNA, "1000", "--key", "order:8"))  # +30
    assert ok(run("reverse", *ANNA, "order:7", "--key", "order:7:return")) == \
        f"reversal -60.00 points for {ANNA_REF}, balance 30.00\n"
    assert ok(run("reverse", *ANNA, "order:7", "--key", "order:7:return")).endswith(
        "(already recorded)\n")
    missing = run("reverse", "amocrm", "x", "1", "order:7", "--key", "r")
    assert missing.exit_code == 1
    assert missing.stderr == "error: no loyalty account for amocrm:x:contact:1\n"


# -- reading -------------------------------------------------------------------------------
def test_account_show_and_history(run: Run) -> None:
    ok(run("accrue", *ANNA, "1000", "--key", "deal:1"))
    ok(run("bonus", *ANNA, "welcome", "--key", "welcome"))
    lines = ok(run("account", "show", *ANNA)).splitlines()
    assert lines[0] == f"account      {ANNA_REF} (id 1)"
    card = lines[1].split()[1]
    assert lines[1] == f"card         {card}" and len(card) == 10 and luhn_valid(card)
    assert lines[2:9] == [
        "balance      130.00",
        "available    130.00",
        "pending      0.00",
        "tier         Bronze",
        "discount     0%",
        "spend        1,000.00 in the last 365 days",
        "next tier    Silver, 29,000.00 more spend",
    ]
    assert lines[9].startswith("next expiry  130.00 on ")
    assert lines[10] == "purchases    1, total 1,000.00"
    code = lines[12].split()[1]
    assert lines[12:15] == [f"referral     {code}", "referred by  -",
                            "referrals    0 invited, 0 converted, 0.00 points paid"]
    view = json.loads(ok(run("account", "show", *ANNA, "--json")))
    assert (view["balance"], view["tier"], view["next_tier"], view["card_number"]) == (
        "130.00", "Bronze", "Silver", card)
    assert (view["referral_code"], view["referred_by"], view["referrals"]) == (
        code, None, {"invited": 0, "converted": 0, "points_paid": "0.00"})
    assert view["spend_to_next_tier"] == "29000.00" and view["next_expiry_points"] == "130.00"
    rows = ok(run("account", "history", *ANNA, "--limit", "1")).splitlines()
    assert len(rows) == 1 and rows[0].split()[3:] == ["bonus", "+100.00", "130.00", "cli:welcome"]
    entries = json.loads(ok(run("account", "history", *ANNA, "--json")))
    assert [(e["kind"], e["points"], e["balance_after"]) for e in entries] == [
        ("bonus", "100.00", "130.00"), ("accrual", "30.00", "30.00")]
    missing = run("account", "show", "bitrix24", "acme.bitrix24.ru", "999")
    assert missing.exit_code == 1
    assert missing.stderr == "error: no loyalty account for bitrix24:acme.bitrix24.ru:contact:999\n"


def test_verify_finds_a_corrupted_balance(run: Run, tmp_path: Path) -> None:
    ok(run("accrue", *ANNA, "1000", "--key", "deal:1"))
    ok(run("accrue", "bitrix24", "acme.bitrix24.ru", "102", "500", "--key", "deal:2"))
    assert ok(run("verify")) == "checked 2 accounts, 0 mismatches\n"
    with sqlite3.connect(tmp_path / "cli.db") as connection:
        connection.execute("UPDATE accounts SET balance = balance + 1 WHERE contact_id = '101'")
    result = run("verify")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "checked 2 accounts, 1 mismatches",
        f"account 1 ({ANNA_REF}): stored balance 30.01, sum of entries 30.00, "
        "lots less overdraft 30.00",
    ]


def test_stats_json_table_and_periods(run: Run, tmp_path: Path) -> None:
    write_config(tmp_path, english=False)  # the same database, the default language
    ok(run("accrue", *ANNA, "1000", "--key", "deal:1"))
    ok(run("accrue", *ANNA, "3000", "--key", "deal:2"))
    ok(run("accrue", "amocrm", "shop", "7", "2000", "--key", "deal:3"))
    ok(run("redeem", *ANNA, "20", "--key", "pay:1"))
    figures = json.loads(ok(run("stats", "--json")))
    assert (figures["accounts_total"], figures["accounts_new"]) == (2, 2)
    assert (figures["accrued"], figures["redeemed"], figures["outstanding"]) == (
        "180.00", "-20.00", "160.00")
    assert (figures["purchases"], figures["purchase_amount"], figures["average_check"]) == (
        3, "6000.00", "2000.00")
    assert (figures["active_customers"], figures["repeat_rate"]) == (2, "0.5000")
    assert figures["retention"] is None and figures["tiers"] == {
        "Bronze": 2, "Silver": 0, "Gold": 0}
    table = ok(run("stats", "--days", "7")).splitlines()
    # The default language, Russian.
    assert "начислено      +180,00" in table and "средний чек    2\u00a0000,00" in table
    old = json.loads(ok(run("stats", "--since", "2020-01-01", "--until", "2020-02-01",
                            "--json")))
    assert old["since"] == "2019-12-31T21:00:00+00:00"  # midnight in Europe/Moscow
    assert (old["accrued"], old["purchases"], old["accounts_total"]) == ("0.00", 0, 2)
    assert run("stats", "--since", "2020-01-01").exit_code == 2
    assert run("stats", "--days", "3", "--since", "2020-01-01",
               "--until", "2020-02-01").exit_code == 2
    assert run("stats", "--since", "2020-02-01", "--until", "2020-01-01").exit_code == 2


def test_run_job_records_its_result_and_jobs_lists_it(run: Run) -> None:
    ok(run("accrue", *ANNA, "1000", "--key", "d1"))
    assert "never run" in ok(run("jobs")).split("expire_points", 1)[1].splitlines()[0]
    assert ok(run("run-job", "rfm_segments")).startswith("rfm_segments: scored 1, changed 1")
    assert ok(run("run-job", "expire_points")) == "expire_points: count 0\n"
    listed = {row["id"]: row for row in json.loads(ok(run("jobs", "--json")))}
    assert listed["rfm_segments"]["last_status"] == "ok"
    assert listed["rfm_segments"]["last_result"] == {"scored": 1, "changed": 1, "new": 1}
    assert listed["rfm_segments"]["next_run"] is not None
    assert listed["process_inbox"]["role"] == "worker"
    assert listed["birthday_bonuses"]["last_status"] is None
    line = next(li for li in ok(run("jobs")).splitlines() if li.startswith("rfm_segments"))
    assert "every 1d" in line and "last: ok" in line and "new 1" in line
    shown = ok(run("account", "show", *ANNA))
    assert "segment" in shown and "new (RFM 333)" in shown


def test_run_job_with_an_unknown_name_is_one_line(run: Run) -> None:
    result = run("run-job", "expire")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no job named 'expire' (known: process_inbox, ")


# -- amoCRM authorization ------------------------------------------------------------------
def test_install_amocrm_prints_the_authorization_link_until_authorized(tmp_path: Path) -> None:
    with FakeAmoCRM() as account:
        config = write_config(tmp_path, (
            f'\n[amocrm]\nenabled = true\nbase_url = "{account.base_url}"\n'
            f'subdomain = "example"\nclient_id = "{account.client_id}"\n'
            f'client_secret = "{account.client_secret}"\n'
            'redirect_uri = "https://loyalty.example/amocrm/oauth/callback"\n'
            'webhook_secret = "Wh00kSecret0123456789"\ntimeout_seconds = 2\n'))

        def run(*args: str) -> Result:
            return CliRunner().invoke(cli, ["--config", str(config), *args])

        ok(run("db", "upgrade"))
        refused = run("install", "amocrm")
        assert refused.exit_code == 1 and refused.stdout == ""
        link = re.fullmatch(
            r"error: amocrm: not authorized: open (https://www\.amocrm\.ru/oauth\?\S+) as an "
            r"account administrator and allow access \(the link works once, within 30 "
            r"minutes\), then run install again\n", refused.stderr)
        assert link is not None, refused.stderr
        assert account.state.http_requests == 0  # nothing tried with no tokens
        services = Services.build(load_settings(config))
        web = create_app(services=services).test_client()
        callback = web.get("/amocrm/oauth/callback", query_string=account.consent(link[1]))
        assert callback.status_code == 200, callback.json
        installed = run("install", "amocrm")
        assert "created contact field LOYALTY_BALANCE (numeric)" in ok(installed)
        services.close()


def test_account_show_lists_referral_codes_that_did_not_link(run: Run,
                                                             tmp_path: Path) -> None:
    from connector.config import ProgramSettings
    from connector.ledger.engine import Ledger
    from connector.ledger.views import AccountRef
    from connector.program import Program
    from connector.referrals.linking import Linker

    db = Database(DatabaseSettings(url=f"sqlite:///{tmp_path}/cli.db"))
    ledger = Ledger(db, Program(ProgramSettings()))
    Linker(db, ledger).link(AccountRef(*ANNA), "2222-2222", via="api")
    db.dispose()
    lines = ok(run("account", "show", *ANNA)).splitlines()
    assert lines[-1].startswith("code given   22222222 (api, ")
    assert lines[-1].endswith("): unknown, no customer has this referral code")
    view = json.loads(ok(run("account", "show", *ANNA, "--json")))
    [skipped] = view["referral_skipped"]
    assert (skipped["code"], skipped["outcome"], skipped["via"]) == ("22222222", "unknown", "api")
