"""`import customers` and `import bitrix24|amocrm --balance-field`, through the CLI, on every
configured database, against the fake CRMs for matching and write-back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from openpyxl import Workbook
from sqlalchemy import func, select

from connector.cli import cli
from connector.config import load_settings
from connector.imports.progress import TerminalProgress
from connector.ledger.models import Account, Entry, Lot
from connector.ledger.views import AccountRef
from connector.privacy.erase import erase
from connector.referrals.models import ReferralEvent
from connector.sandbox import FakeBitrix24Portal
from connector.sandbox.amocrm import FakeAmoCRM
from connector.services import Services
from tests.conftest import fresh_services

pytestmark = pytest.mark.storage

PORTAL = "acme.bitrix24.ru"
Run = Callable[..., Result]
HEADER = "contact_id,phone,email,balance,expires,tier,birthday,card_number,referrer\n"


def config_file(tmp_path: Path, database_url: str, extra: str = "",
                language: str = "en") -> Path:
    """The reports are read in English here (program.language = en); one test reads them in
    Russian, the default."""
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n[program]\nlanguage = '
                      f'"{language}"\n{extra}', encoding="utf-8")
    fresh_services(load_settings(config)).close()  # migrated, and empty on PostgreSQL
    return config


def runner(config: Path) -> Run:
    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), *args])
    return run


def services_of(config: Path) -> Services:
    return Services.build(load_settings(config))


def books(config: Path) -> dict[str, Any]:
    """Everything an import writes, to compare two states of the books."""
    services = services_of(config)
    try:
        with services.db.transaction(write=False) as session:
            return {
                "accounts": sorted(session.execute(select(
                    Account.contact_id, Account.balance, Account.overdraft, Account.tier,
                    Account.birthday, Account.card_number, Account.version,
                    Account.referred_by_id)).all()),
                "entries": sorted(session.execute(select(
                    Entry.account_id, Entry.kind, Entry.amount, Entry.balance_after,
                    Entry.idempotency_key)).all()),
                "lots": sorted(session.execute(select(
                    Lot.account_id, Lot.amount, Lot.remaining, Lot.expires_at)).all(),
                    key=str),
                "links": session.scalar(select(func.count()).select_from(ReferralEvent)),
            }
    finally:
        services.close()


def lines(result: Result) -> dict[int, str]:
    found = {}
    for line in result.stdout.splitlines():
        if line.startswith("line "):
            number, _, rest = line[5:].split(maxsplit=2)  # line N contact C action detail
            found[int(number)] = rest
    return found


@pytest.fixture
def plain(tmp_path: Path, database_url: str) -> Iterator[tuple[Path, Run]]:
    """No CRM enabled: rows name contacts by id, and say which CRM and portal."""
    config = config_file(tmp_path, database_url)
    yield config, runner(config)


@pytest.fixture(params=["in-lists", "whole"])
def lookups(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The plan reads the books by IN lists for a small file and in one read of every
    account for a large one (over WHOLE_PORTAL contacts): both ways give the same plan."""
    if request.param == "whole":
        monkeypatch.setattr("connector.imports.plan.WHOLE_PORTAL", 0)
    return str(request.param)


def test_dry_run_reports_each_row_and_writes_nothing(plain: tuple[Path, Run],
                                                     tmp_path: Path, lookups: str) -> None:
    config, run = plain
    services = services_of(config)
    services.ledger.open_account(AccountRef("bitrix24", PORTAL, "900"), card_number="5550001")
    # 131 was referred by 130 before: 130 naming 131 as its referrer closes a cycle.
    services.ledger.link_referral(AccountRef("bitrix24", PORTAL, "131"),
                                  AccountRef("bitrix24", PORTAL, "130"))
    services.close()
    before = books(config)
    csv = tmp_path / "customers.csv"
    csv.write_text(HEADER + "\n".join([
        "101,,,150.50,2099-06-30,silver,17.05.1990,7001234567,",
        "102,,,80,,,,,101",
        "102,,,80,,,,,",
        "103,,,12.345,,,,,",
        "104,,,-5,,,,,",
        "105,,,10,2020-01-01,,,,",
        "106,,,10,,Platinum,,,",
        "107,,,10,,,,5550001,",
        "108,,,10,,,,7001234567,",
        "109,,,10,,,,,109",
        "110,,,10,,,,,ZZZZZZZZ",
        "abc,,,10,,,,,",
        ",+7 999 000-00-00,,5,,,,,",
        "111,,,10,,,2990-01-01,,",
        "120,,,10,,,,,121",
        "121,,,10,,,,,120",
        "130,,,10,,,,,131",
    ]) + "\n", encoding="utf-8")
    result = run("import", "customers", str(csv), "--crm", "bitrix24", "--portal", PORTAL)
    assert result.exit_code == 1, result.output  # some rows are refused
    report = lines(result)
    assert report[2].split()[1:3] == ["open", "new"]
    assert "opening balance 150.50 expiring 2099-06-30" in report[2]
    assert "tier Silver" in report[2] and "birthday 1990-05-17" in report[2]
    assert "referred by 101" in report[3]
    assert "duplicate row: contact 102 is on line 3 already" in report[4]
    assert "bad balance '12.345'" in report[5]
    assert "an opening balance is not negative" in report[6]
    assert "expiry date 2020-01-01 is not in the future" in report[7]
    assert "unknown tier 'Platinum'" in report[8]
    assert "card number 5550001 is taken by contact 900" in report[9]
    assert "card number 7001234567 is given on line 2 already" in report[10]
    assert "cannot refer themselves" in report[11]
    assert "referral code ZZZZZZZZ names nobody" in report[12]
    assert "bad contact id 'abc'" in report[13]
    assert "bitrix24 is not enabled: a contact cannot be found by phone" in report[14]
    assert "birthday 2990-01-01 is not a past date" in report[15]
    # A cycle within the file: the row closing it is refused, and so the one naming it.
    assert "referrer 120 is referred by contact 121 (directly or further up)" in report[17]
    assert "referrer contact 121 is on line 17, which is refused" in report[16]
    assert "referrer 131 is referred by contact 130 (directly or further up)" in report[18]
    assert sum("refused" in text.split()[1] for text in report.values()) == 15
    assert result.stdout.splitlines()[-1].startswith(
        f"dry run for bitrix24 {PORTAL}: 2 new, 0 updated, 0 unchanged, 15 refused")
    assert books(config) == before  # a dry run writes nothing
    assert result.stderr == ""  # no progress bar without a terminal


def test_the_report_speaks_the_program_language(tmp_path: Path, database_url: str) -> None:
    """Russian, the default: each row's reason and the summary; the JSON stays English."""
    config = config_file(tmp_path, database_url, language="ru")
    run = runner(config)
    csv = tmp_path / "customers.csv"
    csv.write_text(HEADER + "\n".join([
        "101,,,150.50,2099-06-30,Silver,,,",
        "101,,,10,,,,,",
        "102,,,-5,,,,,",
        "103,,,10,2020-01-01,,,,",
        "104,,,10,,Platinum,,,",
    ]) + "\n", encoding="utf-8")
    result = run("import", "customers", str(csv), "--crm", "bitrix24", "--portal", PORTAL)
    assert result.exit_code == 1, result.output
    output = result.stdout.splitlines()
    rows = {int(line.split()[1]): line for line in output if line.startswith("строка ")}
    assert rows[2].split()[2:5] == ["контакт", "101", "новый"], rows[2]
    assert "новый счёт: начальный баланс 150.50, сгорает 2099-06-30, уровень Silver" in rows[2]
    assert "отклонено" in rows[3] and "повтор: контакт 101 уже есть в строке 2" in rows[3]
    assert "начальный баланс не может быть отрицательным" in rows[4]
    assert "срок сгорания 2020-01-01 уже наступил" in rows[5]
    assert "неизвестный уровень 'Platinum' (уровни: Bronze, Silver, Gold)" in rows[6]
    assert output[-1].startswith(
        f"пробный запуск для bitrix24 {PORTAL}: новых: 1, обновлённых: 0, без изменений: 0, "
        "отклонённых: 4; ничего не записано")
    as_json = run("import", "customers", str(csv), "--crm", "bitrix24", "--portal", PORTAL,
                  "--json")
    details = [row["detail"] for row in json.loads(as_json.stdout)["rows"]]
    assert details[1] == "duplicate row: contact 101 is on line 2 already"


def test_apply_twice_gives_the_same_books_and_verify_is_clean(plain: tuple[Path, Run],
                                                              tmp_path: Path,
                                                              lookups: str) -> None:
    config, run = plain
    services = services_of(config)
    existing = AccountRef("bitrix24", PORTAL, "300")
    services.ledger.grant_bonus(existing, "welcome", key="b1", points=Decimal("20"))
    code = services.ledger.account(existing).referral_code
    services.close()
    csv = tmp_path / "customers.csv"
    csv.write_text(HEADER + "\n".join([
        "101,,,150.50,2099-06-30,Gold,1990-05-17,7001234567,",
        f"102,,,80,,,,,{code.lower()}",
        "103,,,0,,Silver,,,101",
        "300,,,25,,,,,",
    ]) + "\n", encoding="utf-8")
    first = run("import", "customers", str(csv), "--crm", "bitrix24", "--portal", PORTAL,
                "--apply")
    assert first.exit_code == 0, first.output
    assert "3 new, 1 updated, 0 unchanged, 0 refused; 3 opening entries, 255.50 points, " \
           "2 referrals linked" in first.stdout
    assert "verify: 4 accounts, 0 mismatches" in first.stdout
    after_first = books(config)
    second = run("import", "customers", str(csv), "--crm", "bitrix24", "--portal", PORTAL,
                 "--apply")
    assert second.exit_code == 0, second.output
    assert "0 new, 0 updated, 4 unchanged, 0 refused; 0 opening entries" in second.stdout
    assert books(config) == after_first
    verified = run("verify")
    assert verified.exit_code == 0 and "0 mismatches" in verified.stdout

    services = services_of(config)
    try:
        ann = services.ledger.account(AccountRef("bitrix24", PORTAL, "101"))
        assert (str(ann.balance), ann.tier, ann.card_number) == ("150.50", "Gold", "7001234567")
        assert ann.next_expiry_at is not None and ann.next_expiry_at.astimezone(
            services.program.zone).date() == date(2099, 6, 30)
        old = services.ledger.account(existing)
        assert str(old.balance) == "45.00"
        history = services.ledger.history(existing)
        assert [e.kind for e in history] == ["opening", "bonus"]
        assert services.ledger.account(AccountRef("bitrix24", PORTAL, "102")).referred_by \
            == code
        assert services.ledger.account(AccountRef("bitrix24", PORTAL, "103")).referred_by \
            == ann.referral_code
        with services.db.transaction(write=False) as session:
            versions = dict(session.execute(select(Account.contact_id, Account.version)).all())
        assert versions["101"] == 1 and versions["300"] >= 2  # the write-back sends them
    finally:
        services.close()

    changed = tmp_path / "changed.csv"
    changed.write_text(HEADER + "300,,,30,,,,,\n", encoding="utf-8")
    refused = run("import", "customers", str(changed), "--crm", "bitrix24", "--portal",
                  PORTAL, "--apply")
    assert refused.exit_code == 1
    assert "an opening balance of 25.00 was imported for contact 300 already" in refused.stdout
    assert books(config) == after_first


def test_xlsx_with_numbers_and_dates_in_cells(plain: tuple[Path, Run], tmp_path: Path) -> None:
    config, run = plain
    book = Workbook()
    sheet = book.active
    sheet.append(["Contact ID", "Balance", "Expires", "Birthday", "Card number"])
    sheet.append([501, 99.9, date(2099, 1, 31), date(1985, 2, 3), 7000000001])
    sheet.append([502, 40, None, None, None])
    sheet.append([503, "lots", None, None, None])
    path = tmp_path / "customers.xlsx"
    book.save(path)
    result = run("import", "customers", str(path), "--crm", "amocrm", "--portal",
                 "example.amocrm.ru", "--apply", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert [(row["line"], row["action"]) for row in data["rows"]] == [
        (2, "open"), (3, "open"), (4, "refused")]
    assert data["summary"]["points"] == "139.90" and data["summary"]["mismatches"] == []
    services = services_of(config)
    try:
        view = services.ledger.account(AccountRef("amocrm", "example.amocrm.ru", "501"))
        assert (str(view.balance), view.card_number, view.birthday) == (
            "99.90", "7000000001", date(1985, 2, 3))
    finally:
        services.close()


def test_bad_file_is_bad_usage(plain: tuple[Path, Run], tmp_path: Path) -> None:
    _, run = plain
    missing = run("import", "customers", str(tmp_path / "nope.csv"), "--crm", "bitrix24",
                  "--portal", PORTAL)
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    headless = tmp_path / "x.csv"
    headless.write_text("name,phone\nAnn,+79990000000\n", encoding="utf-8")
    result = run("import", "customers", str(headless), "--crm", "bitrix24", "--portal", PORTAL)
    assert result.exit_code == 2 and "no balance column" in result.stderr
    no_crm = run("import", "customers", str(headless))
    assert no_crm.exit_code == 2 and "--crm" in no_crm.stderr


# -- Bitrix24 -------------------------------------------------------------------------------
@pytest.fixture
def bitrix24(tmp_path: Path, database_url: str) -> Iterator[tuple[FakeBitrix24Portal, Run]]:
    with FakeBitrix24Portal() as portal:
        config = config_file(tmp_path, database_url, (
            f'[bitrix24]\nenabled = true\nwebhook_url = "{portal.webhook_url}"\n'
            f'portal = "{PORTAL}"\napplication_token = "{portal.application_token}"\n'))
        run = runner(config)
        assert run("install", "bitrix24").exit_code == 0
        yield portal, run


def test_bitrix24_phone_and_email_matching_then_write_back(
        bitrix24: tuple[FakeBitrix24Portal, Run], tmp_path: Path) -> None:
    portal, run = bitrix24
    ann = portal.add_contact(NAME="Ann", PHONE="+7 (999) 000-00-01")
    bob = portal.add_contact(NAME="Bob", EMAIL="Bob@Example.com")
    twin1 = portal.add_contact(NAME="Twin", PHONE="+79990000002")
    portal.add_contact(NAME="Twin", PHONE="8-999-000-00-02")  # other digits: not a twin
    twin2 = portal.add_contact(NAME="Twin", PHONE="79990000002")
    csv = tmp_path / "c.csv"
    csv.write_text("phone,email,balance\n"
                   "+79990000001,,150\n"
                   ",bob@example.com,70\n"
                   "+7 999 000 00 02,,10\n"
                   ",nobody@example.com,10\n"
                   "+79990000001,bob@example.com,10\n", encoding="utf-8")
    batches = len(portal.calls_of("batch"))
    dry = run("import", "customers", str(csv))
    # Two phones in one batch call, two e-mails in another (up to 50 values a call).
    assert len(portal.calls_of("batch")) - batches == 2
    report = lines(dry)
    assert report[2].split()[:2] == [str(ann), "open"]
    assert report[3].split()[:2] == [str(bob), "open"]
    assert f"matches 2 contacts ({twin1}, {twin2})" in report[4]
    assert "unknown contact: no contact in the CRM has e-mail nobody@example.com" in report[5]
    assert "not the same contact" in report[6]
    applied = run("import", "customers", str(csv), "--apply")
    assert applied.exit_code == 1, applied.output  # three rows refused
    assert "written back: 2 contacts" in applied.stdout
    assert portal.contact(ann)["UF_CRM_LOYALTY_BALANCE"] == "150"
    assert portal.contact(bob)["UF_CRM_LOYALTY_BALANCE"] == "70"
    again = run("import", "customers", str(csv), "--apply")
    assert "written back: 0 contacts" in again.stdout


def test_bitrix24_balance_field(bitrix24: tuple[FakeBitrix24Portal, Run]) -> None:
    portal, run = bitrix24
    made = requests.post(f"{portal.webhook_url}crm.contact.userfield.add.json", json={
        "fields": {"FIELD_NAME": "OLD_POINTS", "USER_TYPE_ID": "double"}}, timeout=5)
    assert made.status_code == 200, made.text
    kept = [portal.add_contact(NAME=f"C{n}", UF_CRM_OLD_POINTS=str(10 * n)) for n in range(60)]
    portal.add_contact(NAME="none")
    bad = portal.add_contact(NAME="bad", UF_CRM_OLD_POINTS="-3")
    dry = run("import", "bitrix24", "--balance-field", "UF_CRM_OLD_POINTS")
    assert dry.exit_code == 1
    assert "59 new, 0 updated, 0 unchanged, 1 refused" in dry.stdout  # 0 is no balance
    assert f"contact {bad}" in dry.stdout
    applied = run("import", "bitrix24", "--balance-field", "UF_CRM_OLD_POINTS", "--apply")
    assert "59 opening entries, 17700.00 points" in applied.stdout
    assert "written back: 59 contacts" in applied.stdout
    assert portal.contact(kept[7])["UF_CRM_LOYALTY_BALANCE"] == "70"
    missing = run("import", "bitrix24", "--balance-field", "UF_CRM_NOPE")
    assert missing.exit_code == 2 and "no such contact field" in missing.stderr


# -- amoCRM ---------------------------------------------------------------------------------
@pytest.fixture
def amocrm(tmp_path: Path, database_url: str) -> Iterator[tuple[FakeAmoCRM, Run]]:
    with FakeAmoCRM() as account:
        config = config_file(tmp_path, database_url, (
            f'[amocrm]\nenabled = true\nbase_url = "{account.base_url}"\n'
            'subdomain = "example"\nlong_lived_token = "long-lived-token"\n'
            'webhook_secret = "Wh00kSecret0123456789"\ntimeout_seconds = 2\n'))
        for code in load_settings(config).amocrm.fields.values():
            account.state.custom_fields.append({"id": 700000 + len(
                account.state.custom_fields), "code": code, "type": "text", "name": code})
        yield account, runner(config)


def amo_fields(**values: str) -> list[dict[str, Any]]:
    return [{"field_id": 600000 + n, "field_code": code, "field_name": code,
             "values": [{"value": value, "enum_code": "WORK"}]}
            for n, (code, value) in enumerate(values.items())]


def test_amocrm_phone_and_email_matching_then_write_back(
        amocrm: tuple[FakeAmoCRM, Run], tmp_path: Path) -> None:
    account, run = amocrm
    account.put_contact(11, custom_fields_values=amo_fields(PHONE="+7 999 000-00-01"))
    account.put_contact(12, custom_fields_values=amo_fields(EMAIL="Bob@Example.com"))
    # A looser search also finds this one (its number holds the digits asked): not a match.
    account.put_contact(13, custom_fields_values=amo_fields(PHONE="+7 999 000-00-011"))
    csv = tmp_path / "c.csv"
    csv.write_text("phone,email,balance\n+79990000001,,150\n,bob@example.com,70\n"
                   ",carol@example.com,5\n", encoding="utf-8")
    applied = run("import", "customers", str(csv), "--apply")
    report = lines(applied)
    assert report[2].split()[:2] == ["11", "open"] and report[3].split()[:2] == ["12", "open"]
    assert "unknown contact" in report[4]
    assert "written back: 2 contacts" in applied.stdout
    assert account.field_value(11, "LOYALTY_BALANCE") == "150"
    assert account.field_value(12, "LOYALTY_BALANCE") == "70"


def test_amocrm_balance_field_by_code_or_id(amocrm: tuple[FakeAmoCRM, Run]) -> None:
    account, run = amocrm
    account.state.custom_fields.append({"id": 812345, "code": None, "type": "numeric",
                                        "name": "Баллы"})
    for contact in range(1, 301):  # two pages of 250
        account.put_contact(contact, custom_fields_values=[
            {"field_id": 812345, "field_code": None, "field_name": "Баллы",
             "values": [{"value": str(contact)}]}] if contact % 3 else None)
    applied = run("import", "amocrm", "--balance-field", "812345", "--apply")
    assert applied.exit_code == 0, applied.output
    assert "200 new, 0 updated, 0 unchanged, 0 refused" in applied.stdout
    assert "written back: 200 contacts" in applied.stdout
    assert account.field_value(2, "LOYALTY_BALANCE") == "2"
    again = run("import", "amocrm", "--balance-field", "812345", "--apply")
    assert "0 new, 0 updated, 200 unchanged" in again.stdout
    assert run("verify").exit_code == 0
    unknown = run("import", "amocrm", "--balance-field", "NOPE")
    assert unknown.exit_code == 2 and "no contact field" in unknown.stderr


def test_progress_bar_only_on_a_terminal(plain: tuple[Path, Run], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, run = plain
    csv = tmp_path / "c.csv"
    csv.write_text("contact_id,balance\n" + "".join(f"{n},5\n" for n in range(1, 30)),
                   encoding="utf-8")
    quiet = run("import", "customers", str(csv), "--crm", "amocrm", "--portal", "x.amocrm.ru",
                "--apply")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    monkeypatch.setattr(TerminalProgress, "wanted", staticmethod(lambda: True))
    csv.write_text("contact_id,balance\n" + "".join(f"{n},5\n" for n in range(30, 60)),
                   encoding="utf-8")
    shown = run("import", "customers", str(csv), "--crm", "amocrm", "--portal", "x.amocrm.ru",
                "--apply")
    # click draws the bar itself only on a real terminal; here its label shows it was made.
    assert shown.exit_code == 0 and "writing" in shown.stderr


def test_erase_leaves_no_contact_id_in_an_imported_opening(plain: tuple[Path, Run],
                                                            tmp_path: Path) -> None:
    config, run = plain
    csv = tmp_path / "customers.csv"
    csv.write_text(HEADER + "4242,,,150.50,,,,,\n", encoding="utf-8")
    assert run("import", "customers", str(csv), "--crm", "bitrix24", "--portal", PORTAL,
               "--apply").exit_code == 0
    services = services_of(config)
    try:
        report = erase(services.db, AccountRef("bitrix24", PORTAL, "4242"), reason="asked",
                       by="test", clock=services.ledger.clock)
        assert report.anonymous_id is not None
        with services.db.transaction(write=False) as session:
            [(key, source)] = session.execute(select(Entry.idempotency_key, Entry.source)
                                              .where(Entry.kind == "opening")).all()
        assert "4242" not in key and "4242" not in source
        assert report.anonymous_id in key and key == source
        assert services.ledger.verify()[1] == []
    finally:
        services.close()


def test_bitrix24_unreachable_refuses_only_the_rows_needing_a_lookup(
        tmp_path: Path, database_url: str) -> None:
    """The portal down: rows naming a contact id are applied, rows by phone / e-mail are
    refused with the reason, and the write-back is left to the worker."""
    with FakeBitrix24Portal() as portal:
        config = config_file(tmp_path, database_url, (
            f'[bitrix24]\nenabled = true\nwebhook_url = "{portal.webhook_url}"\n'
            f'portal = "{PORTAL}"\napplication_token = "{portal.application_token}"\n'
            "max_retries = 1\n"))
        run = runner(config)
        assert run("install", "bitrix24").exit_code == 0
        ann = portal.add_contact(NAME="Ann", PHONE="+79990000001")
        bob = portal.add_contact(NAME="Bob")
        csv = tmp_path / "c.csv"
        csv.write_text("contact_id,phone,email,balance\n"
                       f"{bob},,,70\n"
                       ",+79990000001,,150\n"
                       ",,ann@example.com,10\n"
                       "601,,,5\n", encoding="utf-8")
        portal.down()
        applied = run("import", "customers", str(csv), "--apply")
        assert applied.exit_code == 1, applied.output  # two rows refused
        report = lines(applied)
        assert report[2].split()[:2] == [str(bob), "open"]
        assert report[5].split()[:2] == ["601", "open"]
        for line, what in ((3, "phone +79990000001"), (4, "e-mail ann@example.com")):
            assert report[line].split()[:2] == ["-", "refused"]
            assert f"could not look up {what}: bitrix24 is unreachable (batch: cannot " \
                   "reach the portal" in report[line]
            assert "import these rows again later" in report[line]
        assert "2 new, 0 updated, 0 unchanged, 2 refused; 2 opening entries, 75.00 points" \
            in applied.stdout
        assert "verify: 2 accounts, 0 mismatches" in applied.stdout
        assert "written back: not now (batch: cannot reach the portal" in applied.stdout
        # Once it answers, the same file again does the rest (the others are unchanged).
        portal.up()
        again = run("import", "customers", str(csv), "--apply")
        assert "1 new, 0 updated, 2 unchanged, 1 refused" in again.stdout, again.output
        assert lines(again)[3].split()[:2] == [str(ann), "open"]
        assert "no contact in the CRM has e-mail ann@example.com" in lines(again)[4]
