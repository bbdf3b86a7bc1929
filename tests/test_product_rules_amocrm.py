"""Product rules end to end on amoCRM: a won lead earns by its products (the lead read with
`with=catalog_elements`, the elements' prices and fields from their list), and changed
products re-settle it, through webhooks and through reconcile."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest

from connector.config import Settings
from connector.sandbox import ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from tests.conftest import Clock, make_settings
from tests.test_amocrm_e2e import ANNA, FORM, SECRET, Harness, running, status

CATALOG = 5331  # the products list
GIFTS = 5333    # a list of gift cards
BREAD, TOBACCO, KETTLE, GIFT = 901, 902, 903, 904


def settings_for(tmp_path: Path, database_url: str, account: FakeAmoCRM,
                 **program: object) -> Settings:
    return make_settings(
        tmp_path, database_url,
        amocrm={"enabled": True, "base_url": account.base_url, "subdomain": "example",
                "webhook_secret": SECRET, "long_lived_token": "long-lived-token",
                "timeout_seconds": 2},
        program={"tiers": [{"name": "Bronze", "rate": "0.05"}], "product_rules": [
            {"name": "gift cards", "sections": [str(GIFTS)], "exclude": True},
            {"name": "tobacco", "products": [str(TOBACCO)], "exclude": True},
            {"name": "featured brand", "property": "BRAND", "values": ["Acme"],
             "multiplier": "2"},
        ], **program})


@pytest.fixture
def account(account: FakeAmoCRM) -> FakeAmoCRM:
    account.put_element(BREAD, catalog_id=CATALOG, name="Bread", price="100")
    account.put_element(TOBACCO, catalog_id=CATALOG, name="Cigarettes", price="250")
    account.put_element(KETTLE, catalog_id=CATALOG, name="Kettle", price="1500", BRAND="Acme")
    account.put_element(GIFT, catalog_id=GIFTS, name="Gift card", price="3000")
    return account


@pytest.fixture
def h(tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
      clock: Clock) -> Iterator[Harness]:
    with running(settings_for(tmp_path, database_url, account), account, time, clock) as h:
        yield h


def test_a_won_lead_earns_by_its_products_and_re_settles_when_they_change(h: Harness) -> None:
    h.account.put_contact(10971465)
    h.account.put_lead(1, contact=10971465, price=7000)
    h.account.link_elements(1, [(BREAD, 20), (TOBACCO, 4), (KETTLE, 1), (GIFT, 1)])
    assert h.hook("leads", "status", status(1)) == 200
    h.process()
    assert h.balance() == D("250.00")  # 2000*5% + 1500*10%; nothing on tobacco and gifts
    assert h.services.ledger.account(ANNA).purchase_total == D("7000.00")
    assert h.account.state.calls["GET /api/v4/catalogs/{id}/elements"] == 2  # two lists

    # The gift card is swapped for two more kettles: the points follow the products.
    h.account.put_lead(1, contact=10971465, price=7000)
    h.account.link_elements(1, [(BREAD, 20), (TOBACCO, 4), (KETTLE, 3)])
    h.hook("leads", "update", status(1))
    h.process()
    assert h.balance() == D("550.00")
    h.hook("leads", "update", status(1))  # a repeat changes nothing
    h.process()
    assert [e.kind for e in h.services.ledger.history(ANNA)] == ["accrual", "accrual"]

    # The products removed: the lead's price earns at the tier's rate.
    h.account.put_lead(1, contact=10971465, price=1000)
    h.hook("leads", "update", status(1))
    h.process()
    assert h.balance() == D("50.00")
    assert h.services.ledger.verify() == (1, [])


def test_reconcile_reads_the_products_of_listed_leads(h: Harness) -> None:
    h.account.put_contact(10971465)
    h.account.put_lead(1, contact=10971465, price=7000)
    h.account.link_elements(1, [(BREAD, 20), (KETTLE, 1), (GIFT, 1)])
    report = h.connector.reconcile()  # every webhook lost
    assert report.changed == 1 and h.balance() == D("250.00")
    h.account.link_elements(1, [(BREAD, 20)])
    assert h.connector.reconcile().changed == 1
    assert h.balance() == D("100.00")


def test_pipeline_redemption_is_capped_by_the_products_that_earn(
        tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock) -> None:
    """A digital-pipeline action /redeem on a lead with a gift card and tobacco: with
    redeem_eligible_only, redeem_share counts the products that earn points only."""
    eligible = settings_for(tmp_path, database_url, account, redeem_eligible_only=True,
                            language="en")
    with running(eligible, account, time, clock) as h:
        h.account.put_contact(10971465)
        h.services.ledger.adjust(ANNA, D("9000"), key="seed", reason="test funds")
        h.account.put_lead(5, contact=10971465, price=7500, status=20067736)
        # 2000 of bread and 1500 of kettle earn; 1000 of tobacco and a 3000 gift card do not.
        h.account.link_elements(5, [(BREAD, 20), (TOBACCO, 4), (KETTLE, 1), (GIFT, 1)])
        body = webhook_body("leads", "status", [status(5, 20067736)])
        redeem = h.web.post(f"/amocrm/actions/{SECRET}/redeem/4000", data=body,
                            content_type=FORM)
        assert redeem.status_code == 200
        h.process()
        assert h.balance() == D("7250.00")  # half of 3500, not of 7500
        texts = [note["params"]["text"] for note in h.account.state.notes]
        assert texts == ["Loyalty: redeemed 1,750.00 points, balance 7,250.00"]
