"""Product rules end to end on Bitrix24: a won deal earns by its product rows (read with the
deal in one `batch`, the catalog's sections and properties in one more), and a changed row
list re-settles it, through events and through reconcile."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from connector.config import Settings
from connector.sandbox import FakeBitrix24Portal, ManualClock
from tests.conftest import Clock, fresh_services, make_settings
from tests.test_bitrix24_e2e import Harness, bind_events


def rules(portal: FakeBitrix24Portal) -> dict[str, Any]:
    return {
        "tiers": [{"name": "Bronze", "rate": "0.05"}],
        "product_rules": [
            {"name": "tobacco", "sections": ["14"], "exclude": True},
            {"name": "gift cards", "products": [str(portal.gift_card)], "exclude": True},
            {"name": "discounted", "discounted": True, "exclude": True},
            {"name": "featured brand", "property": "PROPERTY_104", "values": ["Acme"],
             "multiplier": "2"},
        ],
    }


def settings_for(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal) -> Settings:
    return make_settings(
        tmp_path, database_url, program=rules(portal),
        bitrix24={"enabled": True, "webhook_url": portal.webhook_url, "portal": portal.url,
                  "application_token": portal.application_token,
                  "member_id": portal.member_id, "timeout_seconds": 2})


@pytest.fixture
def portal(portal: FakeBitrix24Portal) -> FakeBitrix24Portal:
    fake = bind_events(portal)
    fake.cigarettes = fake.add_product("Cigarettes", "250", section_id=14)  # type: ignore[attr-defined]
    fake.gift_card = fake.add_product("Gift card", "3000")  # type: ignore[attr-defined]
    fake.acme = fake.add_product("Acme kettle", "1500",  # type: ignore[attr-defined]
                                 section_id=20, PROPERTY_104="Acme")
    fake.bread = fake.add_product("Bread", "100", section_id=20)  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def h(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
      clock: Clock) -> Iterator[Harness]:
    services = fresh_services(settings_for(tmp_path, database_url, portal), clock=clock)
    harness = Harness(portal, services, time, clock)
    harness.connector.installer.install()
    yield harness
    services.close()


def basket(p: Any) -> list[dict[str, Any]]:
    return [
        {"PRODUCT_ID": p.bread, "PRICE": 100, "QUANTITY": 20},                  # 2000 at 5%
        {"PRODUCT_ID": p.cigarettes, "PRICE": 250, "QUANTITY": 4},              # tobacco
        {"PRODUCT_ID": p.gift_card, "PRICE": 3000, "QUANTITY": 1},              # gift card
        {"PRODUCT_ID": p.acme, "PRICE": 1500, "QUANTITY": 1},                   # 1500 at 10%
        {"PRODUCT_ID": p.bread, "PRICE": 90, "QUANTITY": 10, "DISCOUNT_TYPE_ID": 1,
         "DISCOUNT_SUM": 10},                                                   # on sale
    ]


def test_a_won_deal_earns_by_its_rows_and_re_settles_when_they_change(h: Harness) -> None:
    p = h.portal
    anna = p.add_contact(NAME="Anna")
    deal = p.add_deal(contact_ids=[anna], STAGE_ID="NEW")
    p.set_deal_rows(deal, basket(p))
    assert p.deal(deal)["OPPORTUNITY"] == "8400.00"
    p.update_deal(deal, STAGE_ID="WON")
    h.process()
    assert h.balance(anna) == D("250.00")  # 2000*5% + 1500*10%; nothing on the rest
    account = h.services.ledger.account(h.ref(anna))
    assert account.purchase_total == D("8400.00")
    [accrual] = h.services.ledger.history(h.ref(anna))
    assert [r["rule"] for r in accrual.details["rows"]] == [
        None, "tobacco", "gift cards", "featured brand", "discounted"]
    # Each deal's rows came in the same batch as the deal, the catalog in one more.
    for call in p.calls_of("crm.deal.productrows.get"):
        assert call.batch is not None
    batches = [c.params.get("cmd") or {} for c in p.calls_of("batch")]
    together = [cmd for cmd in batches if f"deal_{deal}" in cmd and f"rows_{deal}" in cmd]
    assert together and all(
        str(cmd[f"rows_{deal}"]).startswith("crm.deal.productrows.get") for cmd in together)
    assert not any(f"rows_{deal}" in cmd and f"deal_{deal}" not in cmd for cmd in batches)
    assert {str(c.params["id"]) for c in p.calls_of("crm.product.get")} == {
        str(p.bread), str(p.cigarettes), str(p.gift_card), str(p.acme)}

    # The gift card is swapped for more Acme at the same total: the points follow the rows.
    rows = basket(p)
    rows[2] = {"PRODUCT_ID": p.acme, "PRICE": 1500, "QUANTITY": 2}
    p.set_deal_rows(deal, rows)
    assert p.deal(deal)["OPPORTUNITY"] == "8400.00"
    h.process()
    assert h.balance(anna) == D("550.00")  # + 3000*10%
    h.send("ONCRMDEALUPDATE", deal)  # a repeat changes nothing
    h.process()
    assert [e.kind for e in h.services.ledger.history(h.ref(anna))] == ["accrual", "accrual"]

    # Rows removed: the deal's amount earns at the tier's rate.
    p.set_deal_rows(deal, [])
    p.update_deal(deal, OPPORTUNITY="1000.00")
    h.process()
    assert h.balance(anna) == D("50.00")
    assert h.services.ledger.verify() == (1, [])


def test_reconcile_reads_the_rows_of_listed_deals(h: Harness) -> None:
    p = h.portal
    anna = p.add_contact(NAME="Anna")
    deal = p.add_deal(contact_ids=[anna], STAGE_ID="WON")
    p.set_deal_rows(deal, basket(p))
    p.drain_outbox()  # every event lost
    report = h.connector.reconcile()
    assert report.changed == 1 and h.balance(anna) == D("250.00")
    h.time.advance(60)
    p.set_deal_rows(deal, basket(p)[:1])  # only the bread is left
    p.drain_outbox()
    assert h.connector.reconcile().changed == 1
    assert h.balance(anna) == D("100.00")
    assert h.services.ledger.account(h.ref(anna)).purchase_total == D("2000.00")


def test_rows_are_not_read_without_product_rules(tmp_path: Path, database_url: str,
                                                 portal: FakeBitrix24Portal, time: ManualClock,
                                                 clock: Clock) -> None:
    settings = settings_for(tmp_path, database_url, portal)
    plain = settings.model_copy(update={"program": settings.program.model_copy(
        update={"product_rules": []})})
    services = fresh_services(plain, clock=clock)
    h = Harness(portal, services, time, clock)
    h.connector.installer.install()
    anna = portal.add_contact(NAME="Anna")
    deal = portal.add_deal(contact_ids=[anna], STAGE_ID="NEW")
    portal.set_deal_rows(deal, basket(portal))
    portal.update_deal(deal, STAGE_ID="WON")
    h.process()
    assert h.balance(anna) == D("420.00")  # 5% of the deal's 8400
    assert portal.calls_of("crm.deal.productrows.get") == []
    services.close()


def test_robot_redemption_is_capped_by_the_rows_that_earn(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    settings = settings_for(tmp_path, database_url, portal)
    eligible = settings.model_copy(update={"program": settings.program.model_copy(
        update={"redeem_eligible_only": True})})
    services = fresh_services(eligible, clock=clock)
    h = Harness(portal, services, time, clock)
    h.connector.installer.install()
    anna = portal.add_contact(NAME="Anna")
    h.process()
    services.ledger.adjust(h.ref(anna), D("9000"), key="seed", reason="test funds")
    deal = portal.add_deal(contact_ids=[anna], STAGE_ID="NEW")
    portal.set_deal_rows(deal, basket(portal))  # 8400 in all, 3500 of it earns
    portal.drain_outbox()
    body, content_type = portal.robot_body("loyalty_redeem", f"DEAL_{deal}", {"amount": "4000"})
    assert h.post("/bitrix24/robots", body, content_type) == 200
    h.process()
    [answer] = portal.bizproc_events
    assert answer["return_values"]["redeemed"] == "1750.00"  # half of 3500, not of 8400
    assert h.balance(anna) == D("7250.00")
    services.close()


def test_webhook_rule_redemption_is_capped_by_the_rows_that_earn(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    """The same cap through the "Webhook" automation rule (/bitrix24/actions/<secret>/redeem),
    which reads the deal's rows in its own batch."""
    secret = "Act10nsSecret0123456789"
    eligible = make_settings(
        tmp_path, database_url, program={**rules(portal), "redeem_eligible_only": True,
                                       "language": "en"},
        bitrix24={"enabled": True, "webhook_url": portal.webhook_url, "portal": portal.url,
                  "application_token": portal.application_token,
                  "member_id": portal.member_id, "timeout_seconds": 2,
                  "actions_secret": secret})
    services = fresh_services(eligible, clock=clock)
    h = Harness(portal, services, time, clock)
    h.connector.installer.install()
    anna = portal.add_contact(NAME="Anna")
    h.process()
    services.ledger.adjust(h.ref(anna), D("9000"), key="seed", reason="test funds")
    deal = portal.add_deal(contact_ids=[anna], STAGE_ID="NEW")
    portal.set_deal_rows(deal, basket(portal))  # 8400 in all, 3500 of it earns
    portal.drain_outbox()
    response = h.web.open(f"/bitrix24/actions/{secret}/redeem/4000?deal_id={deal}")
    assert response.status_code == 200, response.get_data(as_text=True)
    h.process()
    assert h.balance(anna) == D("7250.00")  # half of 3500, not of 8400
    [entry] = [e for e in services.ledger.history(h.ref(anna)) if e.kind == "redemption"]
    assert entry.points == D("-1750.00")
    assert any("redeemed 1,750.00 points" in c["comment"]
               for c in portal.timeline_comments)
    services.close()
