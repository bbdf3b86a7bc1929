"""Bring a friend end to end, against the fake Bitrix24 portal and the fake amoCRM account:
the code reaches the referrer's contact, a newcomer's contact field links them before their
first purchase is settled, both bonuses are paid and the referrer's trigger fires."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connector.config import Settings
from connector.crm.models import TriggerEvent
from connector.ledger.views import AccountRef
from connector.referrals.models import ReferralEvent
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from connector.services import Services
from connector.triggers import REFERRAL_REWARDED
from tests.conftest import Clock
from tests.test_amocrm_e2e import FORM, SECRET, amo_settings, running, status
from tests.test_amocrm_e2e import Harness as AmoHarness
from tests.test_bitrix24_e2e import EVENTS_URL, installed_app
from tests.test_bitrix24_e2e import Harness as B24Harness

REFERRAL = {"referral_bonus": D(300), "referral_newcomer_bonus": D(100)}


def with_referrals(settings: Settings) -> Settings:
    program = settings.program.model_copy(update=REFERRAL)
    return settings.model_copy(update={"program": program})


def skipped(services: Services) -> list[tuple[str, str | None]]:
    with services.db.transaction(write=False) as session:
        return [(e.outcome, e.code) for e in session.scalars(
            select(ReferralEvent).where(ReferralEvent.outcome != "linked")
            .order_by(ReferralEvent.id))]


def rewarded(services: Services) -> list[int]:
    with services.db.transaction(write=False) as session:
        return list(session.scalars(select(TriggerEvent.account_id).where(
            TriggerEvent.code == REFERRAL_REWARDED)))


# -- Bitrix24 ------------------------------------------------------------------------------
@pytest.fixture
def b24(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> Iterator[B24Harness]:
    """An app setup (triggers need one), installed: fields, handlers, robots, triggers."""
    with installed_app(tmp_path, database_url, portal, time, clock,
                       adjust=with_referrals) as h:
        yield h


def test_bitrix24_install_creates_the_code_field_and_an_editable_referred_by(
        b24: B24Harness) -> None:
    fields = b24.services.settings.bitrix24.fields
    created = {f["FIELD_NAME"]: f for f in b24.portal.store.userfields.values()}
    assert created[fields["referral_code"]]["EDIT_IN_LIST"] == "N"
    assert created[fields["referred_by"]]["EDIT_IN_LIST"] == "Y"
    assert REFERRAL_REWARDED in b24.portal.triggers
    assert any(h["handler"] == EVENTS_URL for h in b24.portal.bound_events)


def test_bitrix24_bring_a_friend(b24: B24Harness) -> None:
    referred_by = b24.services.settings.bitrix24.fields["referred_by"]
    anna = b24.portal.add_contact(NAME="Anna")
    anna_deal = b24.won(anna, "1000.00")
    b24.process()
    code = b24.services.ledger.account(b24.ref(anna)).referral_code
    assert code and b24.field(anna, "referral_code") == code  # for the mailing

    # The deal's event comes before the contact's in one group: the link still comes first.
    boris = b24.portal.add_contact(NAME="Boris", **{referred_by: code.lower()})
    deal = b24.won(boris, "2000.00")
    b24.portal.drain_outbox()
    b24.send("ONCRMDEALADD", deal)
    b24.send("ONCRMCONTACTADD", boris)
    b24.process()
    assert b24.balance(anna) == D("430.00")  # 100 welcome + 30 + 300 referral
    assert b24.balance(boris) == D("260.00")  # 100 welcome + 60 + 100 newcomer
    view = b24.services.ledger.account(b24.ref(anna))
    assert view.referrals.as_json() == {"invited": 1, "converted": 1, "points_paid": "300.00"}
    fired = [(t["code"], str(t["owner_id"])) for t in b24.portal.fired_triggers]
    assert (REFERRAL_REWARDED, str(anna_deal)) in fired  # on the referrer's own deal

    # Every event about Vera was lost but her won deal's: her contact is read for the code.
    vera = b24.portal.add_contact(NAME="Vera", **{referred_by: code})
    b24.portal.drain_outbox()
    b24.send("ONCRMDEALADD", b24.won(vera, "1000.00"))
    b24.process()
    assert b24.services.ledger.account(b24.ref(vera)).referred_by == code
    assert b24.balance(anna) == D("730.00")

    # A code that names nobody blocks nothing and is recorded once.
    gleb = b24.portal.add_contact(NAME="Gleb", **{referred_by: "2222-2222"})
    b24.won(gleb, "1000.00")
    b24.process()
    b24.portal.update_contact(gleb, NAME="Gleb P.")
    b24.process()
    assert b24.balance(gleb) == D("130.00")
    assert skipped(b24.services) == [("unknown", "22222222")]
    assert rewarded(b24.services).count(view.id) == 2
    assert b24.services.ledger.verify()[1] == []


def test_bitrix24_robot_links_the_deal_contact_before_its_deal_is_settled(
        b24: B24Harness) -> None:
    anna = b24.portal.add_contact(NAME="Anna")
    b24.process()
    code = b24.services.ledger.account(b24.ref(anna)).referral_code
    assert code
    boris = b24.portal.add_contact(NAME="Boris")
    deal = b24.won(boris, "1000.00")  # won in the same group as the robot's call
    b24.robot("loyalty_referral", deal, {"code": code.lower()})
    b24.robot("loyalty_referral", deal, {"code": "2222 2222"})
    b24.process()
    linked, unknown = (e["return_values"] for e in b24.portal.bizproc_events)
    assert linked == {"outcome": "already", "message": "ok"}  # linked before the deal
    assert unknown["outcome"] == "unknown" and "no customer" in unknown["message"]
    assert b24.balance(anna) == D("400.00") and b24.balance(boris) == D("230.00")
    assert "loyalty_referral" in b24.portal.robots


# -- amoCRM ------------------------------------------------------------------------------
@pytest.fixture
def amo(tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock) -> Iterator[AmoHarness]:
    settings = with_referrals(amo_settings(tmp_path, database_url, account))
    with running(settings, account, time, clock) as h:
        yield h


def v4_field(account: FakeAmoCRM, code: str, value: str) -> dict[str, Any]:
    """A contact's custom field as API v4 shows it (custom_fields_values)."""
    field = next(f for f in account.state.custom_fields if f["code"] == code)
    return {"field_id": field["id"], "field_name": field["name"], "field_code": code,
            "field_type": "text", "values": [{"value": value}]}


def v2_field(account: FakeAmoCRM, code: str, value: str) -> dict[str, Any]:
    """The same field in a v2 webhook body (custom_fields, with the field's code)."""
    field = next(f for f in account.state.custom_fields if f["code"] == code)
    return {"id": str(field["id"]), "name": field["name"], "code": code,
            "values": [{"value": value}]}


def test_amocrm_install_leaves_referred_by_editable(amo: AmoHarness) -> None:
    amo.account.state.custom_fields.clear()
    amo.connector.installer.install()
    api_only = {f["code"]: f["is_api_only"] for f in amo.account.state.custom_fields}
    assert api_only["LOYALTY_REFERRED_BY"] is False
    assert api_only["LOYALTY_REFERRAL_CODE"] is True


def test_amocrm_bring_a_friend(amo: AmoHarness) -> None:
    anna, boris, vera = 10971465, 10971466, 10971467
    amo.account.put_contact(anna)
    amo.account.put_lead(1, contact=anna, price=1000)
    amo.hook("leads", "status", status(1))
    amo.process()
    code = amo.services.ledger.account(AccountRef("amocrm", "127.0.0.1", str(anna))).referral_code
    assert code and amo.account.field_value(anna, "LOYALTY_REFERRAL_CODE") == code

    # The contact's webhook carries the code (v2 custom_fields); the lead won at once.
    field = v2_field(amo.account, "LOYALTY_REFERRED_BY", code.lower())
    amo.account.put_contact(boris, custom_fields_values=[
        v4_field(amo.account, "LOYALTY_REFERRED_BY", code.lower())])
    amo.account.put_lead(2, contact=boris, price=2000)
    amo.hook("leads", "status", status(2))
    amo.hook("contacts", "add", {"id": str(boris), "type": "contact", "custom_fields": [field]})
    amo.process()
    ref = AccountRef("amocrm", "127.0.0.1", str(boris))
    assert amo.balance(ref) == D("260.00")  # 100 welcome + 60 + 100 newcomer
    assert amo.balance() == D("330.00")  # 30 + 300 referral (no welcome: no contact hook)
    assert ("contacts", anna, REFERRAL_REWARDED) in amo.account.state.tags_added

    # No contact webhook at all: the won lead's contact is read through API v4.
    amo.account.put_contact(vera, custom_fields_values=[
        v4_field(amo.account, "LOYALTY_REFERRED_BY", code)])
    amo.account.put_lead(3, contact=vera, price=1000)
    amo.hook("leads", "status", status(3))
    amo.process()
    assert amo.services.ledger.account(
        AccountRef("amocrm", "127.0.0.1", str(vera))).referred_by == code
    assert amo.balance() == D("630.00")
    assert amo.account.state.calls["GET /api/v4/contacts"] >= 1
    view = amo.services.ledger.account(AccountRef("amocrm", "127.0.0.1", str(anna)))
    assert view.referrals.as_json() == {"invited": 2, "converted": 2, "points_paid": "600.00"}


def test_amocrm_self_referral_is_recorded_and_the_purchase_still_counts(
        amo: AmoHarness) -> None:
    anna = 10971465
    amo.account.put_contact(anna)
    amo.hook("contacts", "add", {"id": str(anna), "type": "contact"})
    amo.process()
    code = amo.services.ledger.account(AccountRef("amocrm", "127.0.0.1", str(anna))).referral_code
    assert code
    amo.hook("contacts", "update", {"id": str(anna), "type": "contact", "custom_fields": [
        v2_field(amo.account, "LOYALTY_REFERRED_BY", code)]})
    amo.account.put_lead(1, contact=anna, price=1000)
    amo.hook("leads", "status", status(1))
    amo.process()
    assert amo.balance() == D("130.00")
    assert skipped(amo.services) == [("self", code)]


def test_amocrm_pipeline_action_links_the_lead_contact_with_a_note(amo: AmoHarness) -> None:
    anna, boris = 10971465, 10971466
    amo.account.put_contact(anna)
    amo.hook("contacts", "add", {"id": str(anna), "type": "contact"})
    amo.process()
    code = amo.services.ledger.account(AccountRef("amocrm", "127.0.0.1", str(anna))).referral_code
    assert code
    amo.account.put_contact(boris)
    amo.account.put_lead(7, contact=boris, price=1000)  # already won when the action comes
    body = webhook_body("leads", "status", [status(7)])
    assert amo.web.post(f"/amocrm/actions/{SECRET}/referral/{code.lower()}", data=body,
                        content_type=FORM).status_code == 200
    assert amo.web.post(f"/amocrm/actions/{SECRET}/referral/bad_code!", data=body,
                        content_type=FORM).status_code == 404
    amo.process()
    assert amo.balance() == D("400.00")  # 100 welcome + 300 referral
    assert amo.balance(AccountRef("amocrm", "127.0.0.1", str(boris))) == D("130.00")
    assert [n["params"]["text"] for n in amo.account.state.notes] == [
        f"Loyalty: referral code {code.lower()}: linked"]
