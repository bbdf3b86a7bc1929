"""Promo codes end to end against the fake Bitrix24 portal and the fake amoCRM account:
`install` creates the deal / lead field promo_code, a won deal or lead uses the code in it,
a robot or a pipeline action attaches a code to a purchase before it settles and answers
what came of it (robot return values, a lead note)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from connector.codes import catalog
from connector.config import Promo, Settings
from connector.ledger.views import AccountRef
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from tests.conftest import Clock, fresh_services
from tests.test_amocrm_e2e import FORM, SECRET, amo_settings, running, status
from tests.test_amocrm_e2e import Harness as AmoHarness
from tests.test_bitrix24_actions import SECRET as ACTIONS_SECRET
from tests.test_bitrix24_actions import comments, customer, rule
from tests.test_bitrix24_e2e import EVENTS_URL, b24_settings, installed_app
from tests.test_bitrix24_e2e import Harness as B24Harness

PROMO = [Promo(name="winter", code="WINTER25", points=D(100)),
         Promo(name="mail", multiplier=D(2))]


def with_promo(settings: Settings) -> Settings:
    program = settings.program.model_copy(update={"promo": PROMO})
    return settings.model_copy(update={"program": program})


# -- Bitrix24 ------------------------------------------------------------------------------
@pytest.fixture
def b24(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> Iterator[B24Harness]:
    """An app setup (robots need one), installed."""
    with installed_app(tmp_path, database_url, portal, time, clock, adjust=with_promo) as h:
        yield h


def test_bitrix24_install_creates_the_deal_field_and_the_robot(b24: B24Harness) -> None:
    field = b24.portal.store.userfield_named("UF_CRM_LOYALTY_PROMO_CODE", "CRM_DEAL")
    assert field is not None and field["USER_TYPE_ID"] == "string"
    assert field["EDIT_IN_LIST"] == "Y"
    assert "loyalty_promo" in b24.portal.robots
    again = b24.connector.installer.install()
    assert "deal field UF_CRM_LOYALTY_PROMO_CODE exists" in again.done


def test_bitrix24_a_won_deal_uses_the_code_in_its_field_once(b24: B24Harness) -> None:
    anna = b24.portal.add_contact(NAME="Anna")
    deal = b24.portal.add_deal(contact_ids=[anna], STAGE_ID="WON", OPPORTUNITY="1000.00",
                               UF_CRM_LOYALTY_PROMO_CODE="winter-25")
    b24.process()
    assert b24.balance(anna) == D("230.00")  # 100 welcome + 3% + the code's 100
    b24.send("ONCRMDEALUPDATE", deal)  # a replayed event: settled already, nothing used
    b24.process()
    assert b24.balance(anna) == D("230.00")
    view = catalog.show(b24.services.db, b24.services.ledger.program, "WINTER25")
    assert view.uses == 1 and view.used_by[0].source == f"bitrix24:{b24.ref(anna).portal}" \
        f":deal:{deal}"
    boris = b24.portal.add_contact(NAME="Boris")
    b24.portal.add_deal(contact_ids=[boris], STAGE_ID="WON", OPPORTUNITY="1000.00",
                        UF_CRM_LOYALTY_PROMO_CODE="NOSUCHCODE")
    b24.process()
    assert b24.balance(boris) == D("130.00")  # refused: the purchase still counts


def test_bitrix24_robot_attaches_a_code_and_says_what_came_of_it(b24: B24Harness) -> None:
    [code] = catalog.generate(b24.services.db, b24.services.ledger.program, "mail", 1,
                              now=b24.clock())
    anna = b24.portal.add_contact(NAME="Anna")
    b24.process()
    deal = b24.portal.add_deal(contact_ids=[anna], STAGE_ID="NEW", OPPORTUNITY="1000.00")
    b24.robot("loyalty_promo", deal, {"code": code.lower()})
    b24.process()
    [answer] = (e["return_values"] for e in b24.portal.bizproc_events)
    # The robot's message in program.language (Russian, the default); outcome stays a code.
    assert answer == {"outcome": "valid", "points": "30.00",
                      "message": f"промокод {code}: будет применён, когда сделка будет "
                                 "успешно закрыта"}
    b24.portal.update_deal(deal, STAGE_ID="WON")
    b24.process()
    assert b24.balance(anna) == D("160.00")  # welcome 100 + 30 + the code's 30

    # Won in the same group as the robot's call: the code is used by that accrual.
    boris = b24.portal.add_contact(NAME="Boris")
    won = b24.won(boris, "1000.00")
    b24.robot("loyalty_promo", won, {"code": "WINTER25"})
    b24.robot("loyalty_promo", won, {"code": code})
    b24.process()
    applied, used = (e["return_values"] for e in b24.portal.bizproc_events[1:])
    assert applied == {"outcome": "applied", "points": "100.00",
                       "message": "промокод WINTER25: 100,00 баллов (winter)"}
    assert used["outcome"] == "used_up" and "used 1 time(s)" in used["message"]
    assert b24.balance(boris) == D("230.00")

    late = b24.robot("loyalty_promo", won, {"code": "WINTER25"})
    assert late == 200
    b24.process()
    assert b24.portal.bizproc_events[-1]["return_values"]["outcome"] == "applied"
    assert b24.balance(boris) == D("230.00")
    assert b24.services.ledger.verify()[1] == []


@pytest.fixture
def rules(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
          clock: Clock) -> Iterator[B24Harness]:
    """A webhook setup with the "Webhook" automation rule's actions."""
    portal.bind_event("ONCRMDEALUPDATE", EVENTS_URL)
    portal.bind_event("ONCRMCONTACTADD", EVENTS_URL)
    settings = with_promo(b24_settings(tmp_path, database_url, portal,  # English comments
                                       actions_secret=ACTIONS_SECRET, language="en"))
    h = B24Harness(portal, fresh_services(settings, clock=clock), portal.clock, clock)
    yield h
    h.services.close()


def test_bitrix24_webhook_rule_attaches_a_code_and_comments_on_the_deal(
        rules: B24Harness) -> None:
    anna = customer(rules)
    deal = rules.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    assert rule(rules, "promo/winter-25", deal).status_code == 200
    assert rule(rules, "promo/bad_code!", deal).status_code == 404
    rules.process()
    assert comments(rules, deal) == [
        "Loyalty: promo code WINTER25 (winter) is used when the deal is won"]
    rules.portal.update_deal(deal, STAGE_ID="WON")
    rules.process()
    assert rules.balance(anna) == D("230.00")  # welcome 100 + 30 + the code's 100
    won = rules.portal.add_deal(contact_ids=[anna], OPPORTUNITY="500.00", STAGE_ID="WON")
    rule(rules, "promo/WINTER25", won)
    rules.process()
    assert comments(rules, won) == [
        "Loyalty: promo code WINTER25: this customer has already used campaign winter "
        "1 time(s), its limit"]
    rules.portal.update_deal(won, COMMENTS="paid")  # its event settles it: no code used
    rules.process()
    assert rules.balance(anna) == D("245.00")


# -- amoCRM ------------------------------------------------------------------------------
@pytest.fixture
def amo(tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock) -> Iterator[AmoHarness]:
    settings = with_promo(amo_settings(tmp_path, database_url, account))
    with running(settings, account, time, clock) as h:
        yield h


def promo_field(account: FakeAmoCRM, value: str) -> list[dict[str, Any]]:
    """The lead's promo code as API v4 shows it (custom_fields_values)."""
    field = next(f for f in account.state.lead_fields if f["code"] == "LOYALTY_PROMO_CODE")
    return [{"field_id": field["id"], "field_name": field["name"],
             "field_code": "LOYALTY_PROMO_CODE", "field_type": "text",
             "values": [{"value": value}]}]


def amo_ref(contact: int) -> AccountRef:
    return AccountRef("amocrm", "127.0.0.1", str(contact))


def test_amocrm_install_creates_an_editable_lead_field(amo: AmoHarness) -> None:
    amo.account.state.lead_fields.clear()
    report = amo.connector.installer.install()
    [field] = [f for f in amo.account.state.lead_fields if f["code"] == "LOYALTY_PROMO_CODE"]
    assert (field["code"], field["type"], field["is_api_only"]) == \
        ("LOYALTY_PROMO_CODE", "text", False)
    assert "created lead field LOYALTY_PROMO_CODE (text)" in report.done
    assert "lead field LOYALTY_PROMO_CODE exists" in amo.connector.installer.install().done
    amo.connector.installer.uninstall()
    assert amo.account.state.lead_fields == []


def test_amocrm_a_won_lead_uses_the_code_in_its_field_once(amo: AmoHarness) -> None:
    amo.connector.installer.install()
    anna, boris = 10971465, 10971466
    amo.account.put_contact(anna)
    amo.account.put_lead(1, contact=anna, price=1000,
                         custom_fields_values=promo_field(amo.account, "winter-25"))
    amo.hook("leads", "status", status(1))
    amo.process()
    assert amo.balance(amo_ref(anna)) == D("130.00")
    amo.hook("leads", "update", status(1))  # the same lead again: settled, nothing used
    amo.process()
    assert amo.balance(amo_ref(anna)) == D("130.00")
    amo.account.put_contact(boris)
    amo.account.put_lead(2, contact=boris, price=1000,
                         custom_fields_values=promo_field(amo.account, "WINTER25"))
    amo.hook("leads", "status", status(2))
    amo.process()
    assert amo.balance(amo_ref(boris)) == D("130.00")  # a shared code: once per customer
    assert catalog.show(amo.services.db, amo.services.ledger.program, "WINTER25").uses == 2


def test_amocrm_pipeline_action_attaches_a_code_with_a_note(amo: AmoHarness) -> None:
    [code] = catalog.generate(amo.services.db, amo.services.ledger.program, "mail", 1,
                              now=amo.clock())
    anna, boris = 10971465, 10971466
    amo.account.put_contact(anna)
    amo.account.put_lead(7, contact=anna, price=1000, status=142)  # won with the action
    body = webhook_body("leads", "status", [status(7)])
    assert amo.web.post(f"/amocrm/actions/{SECRET}/promo/{code.lower()}", data=body,
                        content_type=FORM).status_code == 200
    assert amo.web.post(f"/amocrm/actions/{SECRET}/promo/bad_code!", data=body,
                        content_type=FORM).status_code == 404
    amo.process()
    assert amo.balance(amo_ref(anna)) == D("60.00")  # 30 + the code's x2
    amo.account.put_contact(boris)
    amo.account.put_lead(8, contact=boris, price=1000, status=142)
    assert amo.web.post(f"/amocrm/actions/{SECRET}/promo/{code}",
                        data=webhook_body("leads", "status", [status(8)]),
                        content_type=FORM).status_code == 200
    amo.process()
    assert amo.balance(amo_ref(boris)) == D("30.00")
    notes = [(n["entity_id"], n["params"]["text"]) for n in amo.account.state.notes]
    assert notes[0] == (7, f"Loyalty: promo code {code}: 30.00 points (mail)")
    assert notes[1][0] == 8 and notes[1][1].startswith(f"Loyalty: promo code {code}: the "
                                                       "code has been used 1 time(s)")
