"""Managers claim rewards from the CRMs, end to end against the fakes: Bitrix24's robot and
"Webhook" rule action, amoCRM's pipeline action; staff are told through the trigger (the
portal's trigger in Bitrix24; a note and a task in amoCRM)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from connector.config import Settings
from connector.ledger.views import AccountRef
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from tests.conftest import Clock, fresh_services, make_settings
from tests.test_amocrm_e2e import SECRET as AMO_SECRET
from tests.test_amocrm_e2e import Harness as AmoHarness
from tests.test_amocrm_e2e import status
from tests.test_bitrix24_e2e import EVENTS_URL, Harness

ACTIONS = "Act10nsSecret0123456789"
FORM = "application/x-www-form-urlencoded"
REWARDS = [{"id": "mug", "name": "Branded mug", "cost": 60, "stock": 5, "per_customer": 1}]
TIERS = [{"name": "Bronze", "rate": "0.03", "perks": ["Free coffee", "Parking"]},
         {"name": "Gold", "min_spend": 100000, "rate": "0.07", "perks": ["Free delivery"]}]


def b24(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal) -> Settings:
    bitrix24 = {"enabled": True, "webhook_url": portal.webhook_url, "portal": portal.url,
                "application_token": portal.application_token, "member_id": portal.member_id,
                "timeout_seconds": 2, "actions_secret": ACTIONS,
                "triggers": {"loyalty_reward_claimed": {"code": "rewardclaim"}}}
    return make_settings(tmp_path, database_url, bitrix24=bitrix24,
                         program={"welcome_bonus": "100", "rewards": REWARDS,
                                  "tiers": TIERS, "language": "en"})  # English texts


@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(clock=ManualClock()) as fake:
        for event in ("ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMCONTACTADD"):
            fake.bind_event(event, EVENTS_URL)
        fake.add_webhook_trigger("rewardclaim")
        yield fake


@pytest.fixture
def h(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
      clock: Clock) -> Iterator[Harness]:
    harness = Harness(portal, fresh_services(b24(tmp_path, database_url, portal), clock=clock),
                      portal.clock, clock)
    yield harness
    harness.services.close()


def comments(h: Harness, deal: int) -> list[str]:
    return [c["comment"] for c in h.portal.timeline_comments
            if (c["entity_type"], c["entity_id"]) == ("deal", deal)]


def test_bitrix24_rule_action_claims_once_per_deal_and_fires_the_trigger(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    h.process()  # welcome: 100 points
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    assert h.web.get(f"/bitrix24/actions/{ACTIONS}/reward/mug?deal_id={deal}").status_code \
        == 200
    assert h.web.post(f"/bitrix24/actions/{ACTIONS}/reward/mug?deal_id={deal}").get_json()[
        "duplicate"] is True
    h.process()
    assert h.balance(anna) == D("40.00")
    [claim] = h.services.claims.list()
    assert claim.via == "bitrix24:action" and claim.ref == h.ref(anna)
    [text] = comments(h, deal)
    assert f"code {claim.code}" in text and "Branded mug" in text
    assert [(t["code"], t["target"]) for t in h.portal.fired_webhook_triggers] == [
        ("rewardclaim", f"DEAL_{deal}")]
    other = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="10.00")
    h.web.get(f"/bitrix24/actions/{ACTIONS}/reward/mug?deal_id={other}")
    h.process()
    [refusal] = comments(h, other)
    assert refusal == "Loyalty: Branded mug: at most 1 per customer, and this customer has " \
                      "claimed 1"
    assert len(h.portal.fired_webhook_triggers) == 1
    assert h.web.get(f"/bitrix24/actions/{ACTIONS}/reward/Bad!?deal_id=1").status_code == 404


def test_bitrix24_robot_returns_the_claim_code(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    h.process()
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    body, content_type = h.portal.robot_body("loyalty_reward", f"DEAL_{deal}",
                                             {"reward": "mug"})
    assert h.post("/bitrix24/robots", body, content_type) == 200
    assert h.post("/bitrix24/robots", body, content_type) == 200  # delivered twice
    h.robot("loyalty_reward", deal, {"reward": "mug"})  # a second robot run: limit 1
    h.process()
    first, second = (e["return_values"] for e in h.portal.bizproc_events)
    [claim] = h.services.claims.list()
    assert first == {"code": claim.code, "balance": "40.00", "message": "ok"}
    assert "per customer" in second["message"]
    assert h.balance(anna) == D("40.00")
    assert len(h.portal.fired_webhook_triggers) == 1


# -- amoCRM ----------------------------------------------------------------------------------
@pytest.fixture
def account() -> Iterator[FakeAmoCRM]:
    with FakeAmoCRM(clock=ManualClock()) as fake:
        yield fake


@pytest.fixture
def amo(tmp_path: Path, database_url: str, account: FakeAmoCRM,
        clock: Clock) -> Iterator[AmoHarness]:
    amocrm: dict[str, Any] = {"enabled": True, "base_url": account.base_url,
                              "subdomain": "example", "webhook_secret": AMO_SECRET,
                              "long_lived_token": "long-lived-token", "timeout_seconds": 2}
    settings = make_settings(tmp_path, database_url, amocrm=amocrm,
                             program={"rewards": REWARDS, "tiers": TIERS, "language": "en"})
    services = fresh_services(settings, clock=clock)
    yield AmoHarness(account, services, account.clock, clock)
    services.close()


def test_amocrm_pipeline_action_claims_and_staff_get_a_note_and_a_task(
        amo: AmoHarness) -> None:
    contact = 10971465
    ref = AccountRef("amocrm", "127.0.0.1", str(contact))
    amo.account.put_contact(contact)
    amo.account.put_lead(5, contact=contact, price=1000, status=20067736)
    amo.services.ledger.adjust(ref, D("100"), key="seed", reason="test funds")
    body = webhook_body("leads", "status", [status(5, 20067736)])
    claimed = amo.web.post(f"/amocrm/actions/{AMO_SECRET}/reward/mug", data=body,
                           content_type=FORM)
    assert claimed.status_code == 200
    amo.process()
    [claim] = amo.services.claims.list()
    assert claim.via == "amocrm:action" and amo.balance(ref) == D("40.00")
    texts = [note["params"]["text"] for note in amo.account.state.notes]
    lead_note = f"Loyalty: reward Branded mug claimed, code {claim.code}: 60.00 points, " \
                f"balance 40.00. Hand it over, then: loyalty-connector rewards handed {claim.code}"
    assert lead_note in texts
    [staff_note] = [t for t in texts if t != lead_note]
    assert claim.code in staff_note and "rewards handed" in staff_note
    [task] = amo.account.state.tasks
    assert (task["entity_type"], task["entity_id"]) == ("contacts", contact)
    assert claim.code in task["text"] and task["complete_till"] > 0
    assert ("contacts", contact, "loyalty_reward_claimed") in amo.account.state.tags_added
    again = amo.web.post(f"/amocrm/actions/{AMO_SECRET}/reward/mug", data=body,
                         content_type=FORM)
    assert again.status_code == 200
    amo.process()
    assert amo.balance(ref) == D("40.00") and len(amo.account.state.tasks) == 1
    refusal = amo.account.state.notes[-1]["params"]["text"]
    assert refusal.endswith("at most 1 per customer, and this customer has claimed 1")


def test_bitrix24_install_creates_the_perks_field_and_write_back_fills_it(h: Harness) -> None:
    report = h.connector.installer.install()
    assert any("UF_CRM_LOYALTY_PERKS" in line and "created contact field" in line
               for line in report.lines()), report.lines()
    anna = h.portal.add_contact(NAME="Anna")
    h.process()
    assert h.field(anna, "perks") == "Free coffee; Parking"
    h.portal.add_deal(contact_ids=[anna], STAGE_ID="WON", OPPORTUNITY="150000.00")
    h.process()
    assert h.services.ledger.account(h.ref(anna)).tier == "Gold"
    assert h.field(anna, "perks") == "Free delivery"


def test_amocrm_write_back_fills_the_perks_field(amo: AmoHarness) -> None:
    contact = 10971465
    amo.account.put_contact(contact)
    amo.account.put_lead(1, contact=contact, price=1000)
    amo.hook("leads", "status", status(1))
    amo.process()
    [patch] = amo.account.state.contact_patches[-1]
    values = {f["field_code"]: f["values"][0]["value"] for f in patch["custom_fields_values"]}
    assert values["LOYALTY_PERKS"] == "Free coffee; Parking"
