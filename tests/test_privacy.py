"""Erasing a customer's personal data: nothing that names or describes them is left in any
table, the amounts stay (verify balances, statistics count them), it is logged without
personal data, and repeating it changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from connector import mirror
from connector.card.models import CardLink
from connector.cli import cli
from connector.crm.models import ContactMirror, TriggerEvent
from connector.errors import LedgerError
from connector.inbox import InboxEvent
from connector.ledger.fingerprint import request_fingerprint
from connector.ledger.models import Account, Entry
from connector.ledger.views import AccountRef
from connector.lifecycle import anniversary_bonuses
from connector.privacy.erase import erase
from connector.privacy.models import Erasure
from connector.referrals.linking import Linker
from connector.referrals.models import ReferralEvent
from connector.sandbox.amocrm import webhook_body
from connector.sandbox.bitrix24_php import build_query
from connector.schema import Base
from connector.services import Services
from connector.stats import program_stats
from connector.triggers import Transition, due, record
from mappings import amocrm as amo
from mappings.phpquery import decode
from tests.conftest import Clock, fresh_services, make_settings

pytestmark = pytest.mark.storage

PORTAL = "acme.bitrix24.ru"
ANNA = AccountRef("bitrix24", PORTAL, "101")
BORIS = AccountRef("bitrix24", PORTAL, "102")  # Anna's friend: she brought him
VERA = AccountRef("bitrix24", PORTAL, "103")   # brought Anna
# What identifies Anna, put wherever the connector keeps CRM data; none may survive.
PERSONAL = ("Anna Pavlova", "+79161234567", "anna@example.com", "1990-05-17")
CARD_SECRET = "card-secret-0123456789abcdefghijklmnop"


def contact_event(contact_id: str, event: str = "ONCRMCONTACTUPDATE") -> bytes:
    return build_query({"event": event, "data": {"FIELDS": {"ID": contact_id}},
                        "ts": "1700000000", "auth": {"domain": PORTAL,
                                                     "application_token": "t0ken"}}).encode()


def store_event(services: Services, source: str, kind: str, body: bytes, key: str,
                portal: str = PORTAL) -> int:
    return services.inbox.put(source=source, kind=kind, dedup_key=key, body=body,
                              content_type="application/x-www-form-urlencoded",
                              portal=portal).id


def dump(services: Services) -> str:
    """Every row of every table, as text: what a database dump would show."""
    lines = []
    with services.db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(table.select()):
                lines.append(f"{table.name}: " + " | ".join(
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    for v in row))
    return "\n".join(lines)


@pytest.fixture
def services(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[Services]:
    settings = make_settings(tmp_path, database_url, card={"secret": CARD_SECRET},
                             program={"welcome_bonus": "100", "referral_bonus": "50",
                                      "anniversary_bonus": "30"},
                             server={"public_url": "https://loyalty.example.com"})
    services = fresh_services(settings, clock=clock)
    yield services
    services.close()


def anna_everywhere(services: Services, clock: Clock) -> None:
    """Anna's data as the connector would hold it after months of use."""
    ledger = services.ledger
    ledger.accrue(VERA, D("1000"), key="buy:vera")
    ledger.open_account(ANNA, birthday=date(1990, 5, 17))
    ledger.grant_bonus(ANNA, "welcome", key=f"bitrix24:{PORTAL}:welcome:101")
    ledger.link_referral(ANNA, VERA, via="contact field")
    ledger.settle_purchase(ANNA, f"bitrix24:{PORTAL}:deal:7", D("5000"),
                           source_data={"ID": "7", "CONTACT_ID": "101",
                                        "TITLE": "Anna Pavlova, +79161234567"})
    ledger.adjust(ANNA, D("-20"), key="cli:fix-1", reason="typo",
                  fingerprint=request_fingerprint("adjust", {
                      "crm": "bitrix24", "portal": PORTAL, "contact_id": "101",
                      "points": D("-20"), "reason": "typo"}))
    anna = ledger.account(ANNA)
    ledger.link_referral(BORIS, ANNA, via="api")
    ledger.settle_purchase(BORIS, f"bitrix24:{PORTAL}:deal:8", D("2000"))
    # A code given by someone else that named Anna's code but came too late.
    with services.db.transaction() as session:
        session.add(ReferralEvent(account_id=ledger.account(VERA).id, referrer_id=anna.id,
                                  code=anna.referral_code, outcome="purchased",
                                  detail="after the first purchase of Anna Pavlova",
                                  via="api", created_at=clock()))
    services.cards.link(ANNA)
    mirror.remember_deal(services.db, anna.id, "7")
    with services.db.transaction() as session:
        row = session.get(ContactMirror, anna.id)
        assert row is not None
        row.values = {"UF_CRM_LOYALTY_CARD_URL": "https://loyalty.example.com/card/x",
                      "NAME": "Anna Pavlova"}
    record(services.db, [Transition(anna.id, "loyalty_points_expiring", "lot:1")],
           program=services.program)
    store_event(services, "bitrix24", "ONCRMCONTACTUPDATE", contact_event("101"), "e1")
    store_event(services, "bitrix24", "ONCRMCONTACTUPDATE", contact_event("102"), "e2")
    # Bodies Bitrix24 never sends with personal data, but a sweep must find them anyway if
    # they name the contact.
    with services.db.transaction() as session:
        session.get(InboxEvent, 1).last_error = "Anna Pavlova: contact is locked"  # type: ignore[union-attr]


def test_erase_keeps_amounts_and_removes_every_personal_bit(services: Services,
                                                            clock: Clock) -> None:
    anna_everywhere(services, clock)
    before = services.ledger.account(ANNA)
    with services.db.transaction(write=False) as session:
        stats_before = program_stats(session, services.program, since=clock() - timedelta(
            days=30), until=clock() + timedelta(days=1)).as_json()
    assert any(mark in dump(services) for mark in PERSONAL)  # the sweep can see them

    report = erase(services.db, ANNA, reason="GDPR request #42", by="dpo@shop",
                   clock=services.ledger.clock)

    assert report.anonymous_id is not None and report.anonymous_id.startswith("erased-")
    assert report.removed["inbox_events"] == 1 and report.removed["card_link"] == 1
    gone = AccountRef("bitrix24", PORTAL, report.anonymous_id)
    after = services.ledger.account(gone)
    assert (after.balance, after.tier, after.purchase_count) == \
        (before.balance, before.tier, before.purchase_count)
    assert (after.card_number, after.referral_code) == (None, None)
    assert services.ledger.account_id(ANNA) is None
    assert services.ledger.verify() == (3, [])
    with services.db.transaction(write=False) as session:
        stats_after = program_stats(session, services.program, since=clock() - timedelta(
            days=30), until=clock() + timedelta(days=1)).as_json()
        assert stats_after == stats_before
        account = session.scalar(select(Account).where(Account.contact_id == gone.contact_id))
        assert account is not None and account.birthday is None
        assert account.referred_by_id == services.ledger.account_id(VERA)  # link counted
        entries = list(session.scalars(select(Entry).where(Entry.account_id == account.id)))
        assert all(e.source_data is None and e.request_hash is None for e in entries)
        assert {e.idempotency_key for e in entries} >= {
            f"bitrix24:{PORTAL}:welcome:{gone.contact_id}"}
        assert session.get(CardLink, account.id) is None
        assert session.get(ContactMirror, account.id) is None
        trigger = session.scalar(select(TriggerEvent).where(
            TriggerEvent.account_id == account.id))
        assert trigger is not None and trigger.status == "skipped"
        ours, boris = session.scalars(select(InboxEvent).order_by(InboxEvent.id))
        assert (ours.body, ours.status) == (b"", "skipped")
        assert boris.body == contact_event("102") and boris.status == "pending"
        [log] = session.scalars(select(Erasure))
        assert (log.account_id, log.anonymous_id, log.erased_by, log.reason) == \
            (account.id, gone.contact_id, "dpo@shop", "GDPR request #42")
    everything = dump(services)
    for mark in PERSONAL:
        assert mark not in everything
    # The contact id is gone from every place that named this account by it.
    assert ":101" not in everything.replace("erasures:", "")
    assert "contact_id': '101'" not in everything and "'101'" not in everything
    with pytest.raises(LedgerError, match="was erased"):
        services.cards.link(gone)


def test_erasing_again_changes_nothing(services: Services, clock: Clock) -> None:
    anna_everywhere(services, clock)
    first = erase(services.db, ANNA, reason="r", by="a", clock=services.ledger.clock)
    snapshot = dump(services)
    again = erase(services.db, ANNA, reason="r", by="a", clock=services.ledger.clock)
    assert again.nothing and again.erasure_id is None
    assert dump(services) == snapshot
    anonymous = AccountRef("bitrix24", PORTAL, first.anonymous_id or "")
    assert erase(services.db, anonymous, reason="r", by="a",
                 clock=services.ledger.clock).nothing
    # An event about the contact that arrived afterwards is scrubbed by the next run.
    store_event(services, "bitrix24", "ONCRMCONTACTUPDATE", contact_event("101"), "late")
    late = erase(services.db, ANNA, reason="r", by="a", clock=services.ledger.clock)
    assert (late.anonymous_id, late.removed) == (None, {"inbox_events": 1})
    with services.db.transaction(write=False) as session:
        assert [e.account_id for e in session.scalars(select(Erasure).order_by(Erasure.id))] \
            == [services.ledger.account_id(anonymous), None]


def test_an_erased_account_is_never_written_back_triggered_or_celebrated(
        services: Services, clock: Clock) -> None:
    anna_everywhere(services, clock)
    report = erase(services.db, ANNA, reason="r", by="a", clock=services.ledger.clock)
    gone = AccountRef("bitrix24", PORTAL, report.anonymous_id or "")
    services.ledger.adjust(gone, D("5"), key="cli:after", reason="late correction")
    dirty = {d.contact_id for d in mirror.dirty(services.db, "bitrix24", PORTAL, 100)}
    assert gone.contact_id not in dirty and "102" in dirty
    claimed = mirror.claim(services.db, "bitrix24", PORTAL, 100, owner="t", now=clock(),
                           hold=timedelta(minutes=1))
    assert gone.contact_id not in {d.contact_id for d in claimed}
    record(services.db, [Transition(services.ledger.account_id(gone) or 0,
                                    "loyalty_points_expiring", "lot:99")],
           program=services.program)
    assert all(d.contact_id != gone.contact_id for d in due(services.db, "bitrix24",
                                                              PORTAL, 100))
    assert services.cards.publish("bitrix24", PORTAL) >= 1  # Boris and Vera's, not hers
    with services.db.transaction(write=False) as session:
        account_id = services.ledger.account_id(gone)
        assert session.get(CardLink, account_id) is None
    # The first purchase's anniversary passes for the others, not for the erased account.
    anniversary = clock().date().replace(year=clock().year + 1)
    assert anniversary_bonuses(services, today=anniversary) == 2
    assert services.ledger.account(gone).balance == D("285.00")


def test_an_erased_customers_purchase_is_never_moved_or_taken_back(
        services: Services, clock: Clock) -> None:
    anna_everywhere(services, clock)
    report = erase(services.db, ANNA, reason="r", by="a", clock=services.ledger.clock)
    gone = AccountRef("bitrix24", PORTAL, report.anonymous_id or "")
    balance = services.ledger.account(gone).balance
    # The contact deleted in the CRM: the deal now names nobody, or someone new.
    services.ledger.settle_purchase(None, f"bitrix24:{PORTAL}:deal:7", D("5000"))
    services.ledger.settle_purchase(None, f"bitrix24:{PORTAL}:deal:7", None)
    assert services.ledger.account(gone).balance == balance
    assert services.ledger.verify()[1] == []


def test_amocrm_events_about_the_contact_and_its_leads_are_scrubbed(
        services: Services) -> None:
    ref = AccountRef("amocrm", "acme.amocrm.ru", "555")
    services.ledger.settle_purchase(ref, amo.lead_source(ref.portal, 31), D("900"))
    contact = {"id": "555", "name": "Anna Pavlova", "type": "contact",
               "custom_fields": [{"id": "1", "code": "PHONE",
                                  "values": [{"value": "+79161234567"}]}]}
    other = {"id": "556", "name": "Boris", "type": "contact"}
    lead = {"id": "31", "name": "Anna Pavlova order", "status_id": "142"}
    keep = store_event(services, "amocrm", "webhook", webhook_body("contacts", "update",
                                                                   [other]), "a0",
                       portal=ref.portal)
    for n, body in enumerate([webhook_body("contacts", "update", [contact]),
                              webhook_body("leads", "status", [lead]),
                              webhook_body("contacts", "delete", [{"id": "555",
                                                                   "type": "contact"}])]):
        store_event(services, "amocrm", "webhook", body, f"a{n + 1}", portal=ref.portal)
    report = erase(services.db, ref, reason="r", by="a", clock=services.ledger.clock)
    assert report.removed["inbox_events"] == 3
    with services.db.transaction(write=False) as session:
        bodies = {e.id: e.body for e in session.scalars(select(InboxEvent))}
    assert bodies.pop(keep) == webhook_body("contacts", "update", [other])
    assert set(bodies.values()) == {b""}
    assert "Anna" not in dump(services) and "+7916" not in dump(services)


def test_a_webhook_carrying_other_customers_keeps_their_items_and_stays_waiting(
        services: Services) -> None:
    ref = AccountRef("amocrm", "acme.amocrm.ru", "555")
    services.ledger.settle_purchase(ref, amo.lead_source(ref.portal, 31), D("900"))
    contacts = [{"id": "555", "name": "Anna Pavlova", "type": "contact"},
                {"id": "556", "name": "Boris", "type": "contact"}]
    mixed = store_event(services, "amocrm", "webhook",
                        webhook_body("contacts", "update", contacts), "m1", portal=ref.portal)
    report = erase(services.db, ref, reason="r", by="a", clock=services.ledger.clock)
    assert report.removed["inbox_events"] == 1
    with services.db.transaction(write=False) as session:
        event = session.get(InboxEvent, mixed)
        assert event is not None
        assert event.status == "pending"
        hook = amo.parse_webhook(decode(event.body))
    assert [item["id"] for item in hook.contacts_updated] == ["556"]
    assert hook.subdomain == "example"
    assert "Anna" not in dump(services)


def test_contact_deletions_in_amocrm_webhooks_are_read_in_both_shapes() -> None:
    assert amo.parse_webhook({"contacts": {"delete": {"0": {"id": "7", "type": "contact"},
                                                      "1": {"id": "8", "type": "company"}}},
                              "account": {"subdomain": "x"}}).contacts_deleted == ["7"]
    # The format page's {"entity": {"action": "id"}} for a deletion.
    assert amo.parse_webhook({"contacts": {"delete": "9"}}).contacts_deleted == ["9"]


def test_cli_erase_prints_the_anonymous_id_and_is_idempotent(
        tmp_path: Path, database_url: str, services: Services, clock: Clock) -> None:
    anna_everywhere(services, clock)
    config = tmp_path / "erase.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n[program]\nlanguage = "en"\n',
                      encoding="utf-8")  # the outputs are read in English

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    missing = run("account", "erase", "bitrix24", PORTAL, "101")
    assert missing.exit_code == 2 and "--reason" in missing.output
    done = run("account", "erase", "bitrix24", PORTAL, "101", "--reason", "request 42",
               "--by", "dpo", "--json")
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    assert answer["erased"] is True and answer["anonymous_id"].startswith("erased-")
    assert answer["removed"]["card_link"] == 1
    shown = run("account", "show", "bitrix24", PORTAL, answer["anonymous_id"], "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["balance"] == "280.00"
    again = run("account", "erase", "bitrix24", PORTAL, "101", "--reason", "request 42")
    assert again.exit_code == 0
    assert again.stdout.startswith("nothing to erase for bitrix24:acme.bitrix24.ru:contact:101")
    verify = run("verify")
    assert verify.exit_code == 0 and verify.stdout.startswith("checked 3 accounts, 0 mismatches")
    with services.db.engine.connect() as connection:
        logged = connection.execute(text("SELECT erased_by, reason FROM erasures")).all()
    assert [tuple(row) for row in logged] == [("dpo", "request 42")]


def test_a_referred_customer_shows_the_erased_referrers_anonymous_id(
        tmp_path: Path, database_url: str, services: Services, clock: Clock) -> None:
    anna_everywhere(services, clock)  # Anna referred Boris
    config = tmp_path / "erase.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n'
                      '[program]\nlanguage = "en"\n', encoding="utf-8")

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    code = services.ledger.account(ANNA).referral_code
    assert code is not None and services.ledger.account(BORIS).referred_by == code
    report = erase(services.db, ANNA, reason="r", by="a", clock=services.ledger.clock)
    assert report.anonymous_id is not None
    shown = run("account", "show", "bitrix24", PORTAL, BORIS.contact_id)
    assert shown.exit_code == 0, shown.output
    assert f"referred by  {report.anonymous_id}\n" in shown.stdout
    as_json = run("account", "show", "bitrix24", PORTAL, BORIS.contact_id, "--json")
    assert json.loads(as_json.stdout)["referred_by"] == report.anonymous_id
    # Still referred: a preview of another code says taken, as before the erasure.
    vera_code = services.ledger.account(VERA).referral_code
    assert vera_code is not None
    assert Linker(services.db, services.ledger).check(BORIS, vera_code).outcome == "taken"


def test_erasure_log_times_are_the_ledgers_clock(services: Services, clock: Clock) -> None:
    anna_everywhere(services, clock)
    clock.now = datetime(2026, 4, 1, 12, tzinfo=UTC)
    erase(services.db, ANNA, reason="r", by="a", clock=services.ledger.clock)
    with services.db.transaction(write=False) as session:
        assert session.scalar(select(Erasure.erased_at)) == clock.now
