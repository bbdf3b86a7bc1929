"""A contact the CRM refuses for good (deleted, never there, an id it cannot take) is recorded
once and left alone, not retried every pass, until the contact changes in the CRM."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from connector import mirror
from connector.amocrm.writeback import refused_ids
from connector.bitrix24.writeback import refused_for_good
from connector.config import load_settings
from connector.ledger.views import AccountRef
from connector.sandbox import FakeBitrix24Portal
from connector.services import Services
from tests import test_amocrm_e2e as amo
from tests import test_bitrix24_e2e as b24

# The Bitrix24 harness and its portal (events bound); conftest gives the amoCRM account.
from tests.test_bitrix24_e2e import h as b24h  # noqa: F401
from tests.test_bitrix24_e2e import portal  # noqa: F401

REFUSED_LINE = "refused for good"


def touch(services: Services, ref: AccountRef, n: int) -> None:
    """An account change that write-back owes the contact."""
    services.ledger.adjust(ref, D("10"), key=f"touch:{ref.contact_id}:{n}", reason="test")


def update_commands(fake: FakeBitrix24Portal, contact_id: str) -> int:
    return sum(1 for call in fake.calls_of("crm.contact.update")
               if str(call.params.get("id")) == contact_id)


@pytest.mark.parametrize(("error", "permanent"), [
    ({"error": "", "error_description": "Contact is not found"}, True),  # crm-contact-update.md
    ({"error": "", "error_description": "Not found"}, True),
    ({"error": "", "error_description": "ID is not defined or invalid."}, True),
    ({"error": "", "error_description": "Access denied."}, False),  # rights can be granted
    ({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, False),
    ({"error": "ERROR_CORE", "error_description": "The field Work e-mail contains an invalid "
                                                  "address"}, False),
], ids=["deleted", "not-found", "invalid-id", "access-denied", "rate-limit", "bad-field"])
def test_bitrix24_errors_that_are_final_for_the_contact(error: dict[str, str],
                                                         permanent: bool) -> None:
    assert refused_for_good(error) is permanent


def test_bitrix24_deleted_or_invalid_contact_is_recorded_once_and_not_retried(
        b24h: b24.Harness, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    h = b24h
    anna, bob = h.portal.add_contact(NAME="Anna"), h.portal.add_contact(NAME="Bob")
    h.process()
    written_before = update_commands(h.portal, str(bob))  # the welcome bonus
    h.portal.delete_contact(bob)
    bad = AccountRef("bitrix24", h.services.settings.bitrix24.portal_key, "0")  # no such id
    h.services.ledger.open_account(bad)
    with caplog.at_level(logging.WARNING):
        for n in range(5):  # five passes, each with changes owed to all three
            for ref in (h.ref(anna), h.ref(bob), bad):
                touch(h.services, ref, n)
            counts = h.process()
            assert counts.get("contacts_refused", 0) == (2 if n == 0 else 0)
            assert counts["contacts_written"] == 1  # Anna's writes go on
    assert update_commands(h.portal, str(bob)) == written_before + 1  # the refused one
    assert update_commands(h.portal, "0") == 1
    refused = [line for line in caplog.messages if REFUSED_LINE in line]
    assert len(refused) == 2, refused
    found = {r.contact_id: r.error for r in mirror.refusals(h.services.db)}
    assert found == {str(bob): "Contact is not found", "0": "ID is not defined or invalid."}
    assert mirror.count_refused(h.services.db) == 2


def test_bitrix24_refusal_ends_when_the_contact_changes(b24h: b24.Harness) -> None:  # noqa: F811
    h = b24h
    bob = h.portal.add_contact(NAME="Bob")
    h.process()
    saved = h.portal.store.contacts.pop(bob)  # gone for a while (the recycle bin)
    touch(h.services, h.ref(bob), 1)
    assert h.process()["contacts_refused"] == 1
    touch(h.services, h.ref(bob), 2)
    assert h.process()["contacts_written"] == 0
    h.portal.store.contacts[bob] = saved  # restored under its id, and edited
    h.portal.update_contact(bob, NAME="Robert")
    counts = h.process()
    assert counts["contacts_written"] == 1
    assert h.field(bob, "balance") == "120"  # welcome 100 and the two changes of 10
    assert mirror.refusals(h.services.db) == []


# -- amoCRM ---------------------------------------------------------------------------------
def test_amocrm_validation_errors_on_the_id_are_final_for_that_contact() -> None:
    body = {"validation-errors": [
        {"request_id": "1", "errors": [{"code": "NotSupportedChoice", "path": "id",
                                        "detail": "not found"}]},
        {"request_id": "2", "errors": [{"code": "NotSupportedChoice",
                                        "path": "custom_fields_values.0.field_code",
                                        "detail": "The value you selected is not a valid "
                                                  "choice."}]}],
        "title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
        "detail": "Request validation failed"}
    assert refused_ids(body) == {1: "NotSupportedChoice: not found"}
    assert refused_ids({"title": "Bad Request", "status": 400}) == {}
    assert refused_ids("<html>") == {}


@pytest.fixture
def amoh(tmp_path, database_url, account, time, clock):  # type: ignore[no-untyped-def]
    with amo.running(amo.amo_settings(tmp_path, database_url, account), account, time,
                     clock) as h:
        yield h


def test_amocrm_missing_contact_is_left_out_and_the_rest_written(
        amoh: amo.Harness, caplog: pytest.LogCaptureFixture) -> None:
    h = amoh
    refs = [AccountRef("amocrm", amo.PORTAL, str(n)) for n in (101, 102, 103)]
    h.account.put_contact(101)
    h.account.put_contact(103)  # 102 was deleted (or never in this account)
    with caplog.at_level(logging.WARNING):
        for n in range(4):
            for ref in refs:
                touch(h.services, ref, n)
            report = h.connector.writeback.flush()
            assert report.refused == (1 if n == 0 else 0)
            assert report.contacts_written == 2 and report.failed == 0
    sent = [[item["id"] for item in patch] for patch in h.account.state.contact_patches]
    assert sent == [[101, 103]] * 4  # the refused batch went again without 102, at once
    # one refused request in all: the first pass's; the next three leave 102 out
    assert h.account.state.calls["PATCH /api/v4/contacts"] == 5
    assert len([m for m in caplog.messages if REFUSED_LINE in m]) == 1
    [refusal] = mirror.refusals(h.services.db)
    assert (refusal.contact_id, refusal.error) == ("102", "NotSupportedChoice: not found")


# -- what an admin sees --------------------------------------------------------------------
def test_account_views_show_the_refusal_and_retry_clears_it(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from connector.cli import cli
    from tests.test_cli import write_config

    config = write_config(tmp_path)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--config", str(config), *args])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    run("db", "upgrade")
    assert run("account", "refused") == "no contact refused by a CRM\n"
    services = Services.build(load_settings(str(config)))
    ref = AccountRef("bitrix24", "acme.bitrix24.ru", "42")
    account_id = services.ledger.open_account(ref)
    mirror.refuse(services.db, mirror.Dirty(account_id, "42", 1, {}), "Contact is not found",
                  datetime(2026, 3, 10, 9, 0, tzinfo=UTC))
    services.close()
    shown = run("account", "show", "bitrix24", "acme.bitrix24.ru", "42")
    # shown in the program's time zone (UTC+3 by default), kept in UTC
    assert ("write-back   refused for good by the CRM since 2026-03-10 12:00: Contact is not "
            "found (after restoring the contact: loyalty-connector account retry-writeback "
            "bitrix24 acme.bitrix24.ru 42)") in shown
    as_json = json.loads(run("account", "show", "bitrix24", "acme.bitrix24.ru", "42", "--json"))
    assert as_json["writeback_refused"] == {"at": "2026-03-10T09:00:00+00:00",
                                            "error": "Contact is not found"}
    assert run("account", "refused") == (
        "2026-03-10 12:00  bitrix24:acme.bitrix24.ru:contact:42  Contact is not found\n")
    [listed] = json.loads(run("account", "refused", "--json"))
    assert listed["contact_id"] == "42" and listed["error"] == "Contact is not found"
    assert run("account", "retry-writeback", "bitrix24", "acme.bitrix24.ru", "42") == (
        "bitrix24:acme.bitrix24.ru:contact:42: write-back pending again\n")
    assert run("account", "refused") == "no contact refused by a CRM\n"
    assert "write-back" not in run("account", "show", "bitrix24", "acme.bitrix24.ru", "42")
    again = runner.invoke(cli, ["--config", str(config), "account", "retry-writeback",
                                "bitrix24", "acme.bitrix24.ru", "42"])
    assert again.exit_code == 1
    assert again.stderr == ("error: write-back to bitrix24:acme.bitrix24.ru:contact:42 was "
                            "not refused\n")
