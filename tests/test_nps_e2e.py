"""NPS answers end to end against the fake Bitrix24 portal and the fake amoCRM account:
`install` creates the deal / lead field nps, a deal or lead holding a score records it once,
the robot loyalty_nps and the rule / pipeline action nps/<score> record theirs and say so."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connector.config import Settings
from connector.ledger.views import AccountRef
from connector.nps.models import NPSAnswer
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from connector.services import Services
from tests.conftest import Clock, fresh_services
from tests.test_amocrm_e2e import FORM, SECRET, amo_settings, running, status
from tests.test_amocrm_e2e import Harness as AmoHarness
from tests.test_bitrix24_actions import SECRET as ACTIONS_SECRET
from tests.test_bitrix24_actions import comments, customer, rule
from tests.test_bitrix24_e2e import EVENTS_URL, b24_settings, installed_app
from tests.test_bitrix24_e2e import Harness as B24Harness


def with_nps(settings: Settings) -> Settings:
    program = settings.program.model_copy(update={"nps": settings.program.nps.model_copy(
        update={"bonus": D(50), "period_days": 90})})
    return settings.model_copy(update={"program": program})


def answers(services: Services) -> list[tuple[str, int, str]]:
    """(contact, score, source) of every stored answer, oldest first."""
    from connector.ledger.models import Account

    with services.db.transaction(write=False) as session:
        return [(contact, score, source) for contact, score, source in session.execute(
            select(Account.contact_id, NPSAnswer.score, NPSAnswer.source)
            .join(Account, Account.id == NPSAnswer.account_id).order_by(NPSAnswer.id))]


# -- Bitrix24 ------------------------------------------------------------------------------
@pytest.fixture
def b24(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> Iterator[B24Harness]:
    with installed_app(tmp_path, database_url, portal, time, clock, adjust=with_nps) as h:
        yield h


def test_bitrix24_install_creates_the_nps_deal_field_and_the_robot(b24: B24Harness) -> None:
    field = b24.portal.store.userfield_named("UF_CRM_LOYALTY_NPS", "CRM_DEAL")
    assert field is not None and field["USER_TYPE_ID"] == "integer"
    assert field["EDIT_IN_LIST"] == "Y"
    assert b24.portal.store.userfield_named("UF_CRM_LOYALTY_PROMO_CODE", "CRM_DEAL")
    assert "loyalty_nps" in b24.portal.robots
    assert b24.portal.robots["loyalty_nps"]["PROPERTIES"]["score"]["Type"] == "int"
    assert "deal field UF_CRM_LOYALTY_NPS exists" in b24.connector.installer.install().done
    removed = b24.connector.installer.uninstall()
    assert "removed deal field UF_CRM_LOYALTY_NPS" in removed.done
    assert b24.portal.store.userfield_named("UF_CRM_LOYALTY_NPS", "CRM_DEAL") is None


def test_bitrix24_a_deal_with_a_score_records_it_once(b24: B24Harness) -> None:
    anna = b24.portal.add_contact(NAME="Anna")
    deal = b24.portal.add_deal(contact_ids=[anna], STAGE_ID="NEW", OPPORTUNITY="1000.00",
                               UF_CRM_LOYALTY_NPS="9", TITLE="Anna Petrova +79001234567",
                               COMMENTS="lives at 1 Lenina St")
    b24.process()
    assert answers(b24.services) == [(str(anna), 9, "bitrix24:field")]
    assert b24.balance(anna) == D("150.00")  # welcome 100 + the answer's 50
    b24.portal.update_deal(deal, COMMENTS="called back")  # the same score: the same answer
    b24.send("ONCRMDEALUPDATE", deal)
    b24.process()
    assert len(answers(b24.services)) == 1
    b24.portal.update_deal(deal, UF_CRM_LOYALTY_NPS="4")  # a new answer; the period's bonus paid
    b24.process()
    assert answers(b24.services)[-1] == (str(anna), 4, "bitrix24:field")
    assert b24.balance(anna) == D("150.00")
    b24.portal.update_deal(deal, UF_CRM_LOYALTY_NPS="9")  # asked again: back to 9, a new answer
    b24.process()
    assert [score for _, score, _ in answers(b24.services)] == [9, 4, 9]
    with b24.services.db.transaction(write=False) as session:
        raw = session.scalars(select(NPSAnswer.raw).order_by(NPSAnswer.id)).first()
    assert raw is not None and raw["ID"] == str(deal) and raw["UF_CRM_LOYALTY_NPS"] == "9"
    assert raw["STAGE_ID"] == "NEW" and raw["CONTACT_ID"] == str(anna)
    # What may name the customer stays in the CRM, as with a purchase's record.
    assert "Anna" not in str(raw) and "Lenina" not in str(raw)

    boris = b24.portal.add_contact(NAME="Boris")
    b24.portal.add_deal(contact_ids=[boris], STAGE_ID="NEW", UF_CRM_LOYALTY_NPS="12")
    b24.process()  # not an answer: logged and left, the deal processed
    assert [a for a in answers(b24.services) if a[0] == str(boris)] == []


def test_bitrix24_a_funnel_outside_deal_categories_is_outside_nps(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    """bitrix24.deal_categories = ["0"]: a score on a deal of funnel 1 (left out of the
    program, as its purchases are) records nothing and earns no bonus; funnel 0's does."""
    with installed_app(tmp_path, database_url, portal, time, clock, adjust=with_nps,
                       deal_categories=["0"]) as h:
        anna = h.portal.add_contact(NAME="Anna")
        h.process()
        h.portal.add_deal(contact_ids=[anna], STAGE_ID="C1:NEW", CATEGORY_ID="1",
                          UF_CRM_LOYALTY_NPS="9")
        h.process()
        assert answers(h.services) == []
        assert h.balance(anna) == D("100.00")  # the welcome bonus alone
        h.portal.add_deal(contact_ids=[anna], STAGE_ID="NEW", CATEGORY_ID="0",
                          UF_CRM_LOYALTY_NPS="9")
        h.process()
        assert answers(h.services) == [(str(anna), 9, "bitrix24:field")]
        assert h.balance(anna) == D("150.00")


def test_bitrix24_robot_records_the_score_and_answers(b24: B24Harness) -> None:
    anna = b24.portal.add_contact(NAME="Anna")
    b24.process()
    deal = b24.portal.add_deal(contact_ids=[anna], STAGE_ID="NEW", OPPORTUNITY="1000.00")
    b24.robot("loyalty_nps", deal, {"score": "10"})
    b24.robot("loyalty_nps", deal, {"score": "6"})
    b24.robot("loyalty_nps", deal, {"score": "eleven"})
    b24.process()
    first, second, bad = (e["return_values"] for e in b24.portal.bizproc_events)
    assert first == {"category": "promoter", "bonus": "50.00", "message": "ok"}
    assert second == {"category": "detractor", "bonus": "0", "message": "ok"}
    assert bad["message"].startswith("score: a whole number from 0 to 10")
    assert answers(b24.services) == [(str(anna), 10, "bitrix24:robot"),
                                     (str(anna), 6, "bitrix24:robot")]
    assert b24.balance(anna) == D("150.00")


@pytest.fixture
def rules(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
          clock: Clock) -> Iterator[B24Harness]:
    """A webhook setup with the "Webhook" automation rule's actions."""
    portal.bind_event("ONCRMDEALUPDATE", EVENTS_URL)
    portal.bind_event("ONCRMCONTACTADD", EVENTS_URL)
    settings = with_nps(b24_settings(tmp_path, database_url, portal,  # English comments
                                     actions_secret=ACTIONS_SECRET, language="en"))
    h = B24Harness(portal, fresh_services(settings, clock=clock), portal.clock, clock)
    yield h
    h.services.close()


def test_bitrix24_webhook_rule_records_the_score_on_the_timeline(rules: B24Harness) -> None:
    anna = customer(rules)
    deal = rules.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    assert rule(rules, "nps/8", deal).status_code == 200
    assert rule(rules, "nps/8", deal).json["duplicate"] is True  # once per deal and score
    refused = rule(rules, "nps/11", deal)
    assert refused.status_code == 400 and refused.json["error"] == "invalid_score"
    assert "0 to 10" in refused.json["detail"]
    rules.process()
    assert comments(rules, deal) == ["Loyalty: NPS answer 8 recorded, bonus +50.00 points"]
    assert answers(rules.services) == [(str(anna), 8, "bitrix24:action")]
    assert rules.balance(anna) == D("150.00")


# -- amoCRM ------------------------------------------------------------------------------
@pytest.fixture
def amo(tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock) -> Iterator[AmoHarness]:
    settings = with_nps(amo_settings(tmp_path, database_url, account))
    with running(settings, account, time, clock) as h:
        yield h


def nps_field(account: FakeAmoCRM, value: str) -> list[dict[str, Any]]:
    """The lead's NPS field as API v4 shows a numeric field: the value as a string."""
    field = next(f for f in account.state.lead_fields if f["code"] == "LOYALTY_NPS")
    return [{"field_id": field["id"], "field_name": field["name"], "field_code": "LOYALTY_NPS",
             "field_type": "numeric", "values": [{"value": value}]}]


def amo_ref(contact: int) -> AccountRef:
    return AccountRef("amocrm", "127.0.0.1", str(contact))


def test_amocrm_install_creates_the_numeric_lead_field(amo: AmoHarness) -> None:
    amo.account.state.lead_fields.clear()
    report = amo.connector.installer.install()
    made = {f["code"]: (f["type"], f["is_api_only"]) for f in amo.account.state.lead_fields}
    assert made == {"LOYALTY_PROMO_CODE": ("text", False), "LOYALTY_NPS": ("numeric", False)}
    assert "created lead field LOYALTY_NPS (numeric)" in report.done
    assert "lead field LOYALTY_NPS exists" in amo.connector.installer.install().done
    amo.connector.installer.uninstall()
    assert amo.account.state.lead_fields == []


def test_the_fake_amocrm_refuses_a_field_type_it_does_not_know(amo: AmoHarness) -> None:
    """POST /api/v4/leads/custom_fields: type and name are required, the type one of the
    documented ones (numeric, not "number" or "integer"); multitext on contacts only."""
    from connector.errors import CRMError

    before = list(amo.account.state.lead_fields)
    for wrong in ({"name": "NPS", "type": "number", "code": "X_NPS"},
                  {"name": "NPS", "type": "integer", "code": "X_NPS"},
                  {"name": "NPS", "code": "X_NPS"}, {"type": "numeric", "code": "X_NPS"},
                  {"name": "Phones", "type": "multitext", "code": "X_PHONES"}):
        with pytest.raises(CRMError, match="validation failed"):
            amo.client.request("POST", "/api/v4/leads/custom_fields", json=[wrong])
    assert amo.account.state.lead_fields == before
    amo.client.request("POST", "/api/v4/contacts/custom_fields",
                       json=[{"name": "Phones", "type": "multitext", "code": "X_PHONES"}])


def test_amocrm_a_lead_with_a_score_records_it_once(amo: AmoHarness) -> None:
    amo.connector.installer.install()
    anna = 10971465
    amo.account.put_contact(anna)
    amo.account.put_lead(1, contact=anna, price=1000, status=20067736,
                         custom_fields_values=nps_field(amo.account, "7"))
    amo.hook("leads", "update", status(1, 20067736))
    amo.process()
    amo.hook("leads", "update", status(1, 20067736))  # edited again: the same answer
    amo.process()
    assert answers(amo.services) == [(str(anna), 7, "amocrm:field")]
    assert amo.balance(amo_ref(anna)) == D("50.00")
    with amo.services.db.transaction(write=False) as session:
        raw = session.scalars(select(NPSAnswer.raw)).one()
    assert raw is not None and (raw["id"], raw["LOYALTY_NPS"]) == (1, "7")
    assert raw["contact_id"] == str(anna) and "Lead 1" not in str(raw)  # not the lead's name


def test_amocrm_a_pipeline_outside_pipelines_is_outside_nps(
        tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock) -> None:
    """amocrm.pipelines = [3104455]: a score on a lead of another pipeline (left out of the
    program, as its purchases are) records nothing; one in 3104455 does."""
    settings = with_nps(amo_settings(tmp_path, database_url, account, pipelines=[3104455]))
    with running(settings, account, time, clock) as h:
        h.connector.installer.install()
        anna = 10971465
        h.account.put_contact(anna)
        h.account.put_lead(1, contact=anna, price=1000, status=20067736, pipeline=5555555,
                           custom_fields_values=nps_field(h.account, "9"))
        h.hook("leads", "update", status(1, 20067736))
        h.process()
        assert answers(h.services) == []  # no account opened for it either
        h.account.put_lead(2, contact=anna, price=1000, status=20067736,
                           custom_fields_values=nps_field(h.account, "9"))
        h.hook("leads", "update", status(2, 20067736))
        h.process()
        assert answers(h.services) == [(str(anna), 9, "amocrm:field")]
        assert h.balance(amo_ref(anna)) == D("50.00")


def test_amocrm_pipeline_action_records_the_score_with_a_note(amo: AmoHarness) -> None:
    anna = 10971465
    amo.account.put_contact(anna)
    amo.account.put_lead(7, contact=anna, price=1000, status=20067736)
    body = webhook_body("leads", "status", [status(7, 20067736)])
    assert amo.web.post(f"/amocrm/actions/{SECRET}/nps/10", data=body,
                        content_type=FORM).status_code == 200
    refused = amo.web.post(f"/amocrm/actions/{SECRET}/nps/-1", data=body, content_type=FORM)
    assert refused.status_code == 400 and refused.json["error"] == "invalid_score"
    amo.process()
    assert answers(amo.services) == [(str(anna), 10, "amocrm:action")]
    notes = [(n["entity_id"], n["params"]["text"]) for n in amo.account.state.notes]
    assert notes == [(7, "Loyalty: NPS answer 10 recorded, bonus +50.00 points")]
    assert amo.balance(amo_ref(anna)) == D("50.00")
