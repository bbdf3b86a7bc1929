"""Pure amoCRM mappings, on payloads captured from real webhooks and the v4 docs."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest

from mappings import amocrm as amo
from mappings.phpquery import decode

# A won-lead status webhook (v2 keys), as captured in production.
STATUS = (
    "leads[status][0][id]=10701093&leads[status][0][name]=Семинар&leads[status][0][status_id]=142"
    "&leads[status][0][old_status_id]=20067736&leads[status][0][price]=22500"
    "&leads[status][0][pipeline_id]=9217056&leads[status][0][account_id]=17769199"
    "&leads[status][0][custom_fields][0][id]=66339"
    "&leads[status][0][custom_fields][0][values][0][value]=Сайт&account[subdomain]=apfitness")
CONTACT_UPDATE = (
    "account[subdomain]=etesttask&account[id]=32427762"
    "&contacts[update][0][id]=37054081&contacts[update][0][name]=Абиба"
    "&contacts[update][0][custom_fields][0][id]=735647"
    "&contacts[update][0][custom_fields][0][values][0][value]=150"
    "&contacts[update][0][custom_fields][0][code]=LOYALTY_BALANCE"
    "&contacts[update][0][custom_fields][1][id]=735649"
    "&contacts[update][0][custom_fields][1][values][0][value]=Gold"
    "&contacts[update][0][type]=contact"
    "&contacts[update][1][id]=99&contacts[update][1][type]=company")


def test_status_webhook_names_the_lead_to_reread() -> None:
    hook = amo.parse_webhook(decode(STATUS))
    assert (hook.subdomain, hook.leads_changed, hook.leads_deleted) == ("apfitness",
                                                                        ["10701093"], [])


def test_delete_and_dp_minimal_hooks() -> None:
    assert amo.parse_webhook(decode("leads[delete][0][id]=5&account[id]=1")).leads_deleted == \
        ["5"]
    dp = ("leads[status][0][id]=10754147&leads[status][0][status_id]=54423922"
          "&leads[status][0][pipeline_id]=6344290&account[id]=30307558&account[subdomain]=anyor")
    assert amo.parse_webhook(decode(dp)).leads_changed == ["10754147"]


def test_contact_update_skips_companies_and_reads_our_fields() -> None:
    hook = amo.parse_webhook(decode(CONTACT_UPDATE))
    [contact] = hook.contacts_updated
    values = amo.webhook_field_values(contact, {"735649": "LOYALTY_TIER"})
    assert values == {"LOYALTY_BALANCE": "150", "LOYALTY_TIER": "Gold"}


def test_unusable_bodies_are_refused() -> None:
    with pytest.raises(amo.PayloadError):
        amo.parse_webhook(decode("hello=world"))
    with pytest.raises(amo.PayloadError):
        amo.parse_webhook({"leads": "x"})


def lead(**fields: object) -> dict[str, object]:
    base = {"id": 3912171, "price": 12000, "status_id": 142, "pipeline_id": 3104455,
            "closed_at": 1590683337, "updated_at": 1590683337, "is_deleted": False,
            "_embedded": {"contacts": [{"id": 10971466, "is_main": False},
                                       {"id": 10971465, "is_main": True}]}}
    return {**base, **fields}


def test_won_lead_is_a_purchase_by_its_main_contact() -> None:
    state = amo.purchase_state(lead(), portal="example.amocrm.ru", pipelines=[])
    assert (state.contact_id, state.amount, state.source) == (
        "10971465", D("12000.00"), "amocrm:example.amocrm.ru:lead:3912171")


@pytest.mark.parametrize(("fields", "pipelines", "reason"), [
    ({"status_id": 143}, [], "not won"),
    ({"pipeline_id": 1}, [3104455], "pipeline 1"),
    ({"_embedded": {"contacts": []}}, [], "no contact"),
    ({"price": 0}, [], "zero"),
    ({"is_deleted": True}, [], "deleted"),
])
def test_what_is_not_a_purchase(fields: dict[str, object], pipelines: list[int],
                                reason: str) -> None:
    state = amo.purchase_state(lead(**fields), portal="p", pipelines=pipelines)
    assert state.amount is None and reason in (state.reason or "")


def test_contact_values_for_patch() -> None:
    fields = {"balance": "LOYALTY_BALANCE", "expiring_date": "LOYALTY_EXPIRING_DATE"}
    values = amo.contact_values(fields, balance=D("150.00"), available=D("150.00"),
                                tier="Gold", discount=D(0),
                                expiring_points=D(0), expiring_date=date(2026, 12, 1),
                                segment=None, card=None, zone=ZoneInfo("Europe/Moscow"))
    # midnight in Moscow: 2026-11-30T21:00Z
    assert values == {"LOYALTY_BALANCE": "150", "LOYALTY_EXPIRING_DATE": "1796072400"}
    assert amo.custom_fields_values({"A": "1", "B": ""}) == [
        {"field_code": "A", "values": [{"value": "1"}]}, {"field_code": "B", "values": None}]
    assert amo.changed_values({"A": "150", "B": "x"}, {"A": "150.00", "B": "y"}) == {"B": "x"}


def test_a_body_of_bare_numeric_keys_is_a_payload_error() -> None:
    with pytest.raises(amo.PayloadError, match="form fields"):
        amo.parse_webhook(decode(b"0=1&1=2"))


def test_an_absurd_price_is_no_purchase_and_no_crash() -> None:
    state = amo.purchase_state(lead(price="1e30"), portal="p", pipelines=[])
    assert state.amount is None and "zero" in (state.reason or "")


def test_catalog_rows_with_absurd_numbers_are_left_out() -> None:
    def element(price: str) -> dict[str, object]:
        return {"name": "x", "custom_fields_values": [
            {"field_code": "PRICE", "values": [{"value": price}]}]}
    links = [{"id": 1, "metadata": {"catalog_id": 9, "quantity": 1}},
             {"id": 2, "metadata": {"catalog_id": 9, "quantity": "1e30"}},
             {"id": 3, "metadata": {"catalog_id": 9, "quantity": 2}}]
    rows = amo.lead_rows({"_embedded": {"catalog_elements": links}},
                         {("9", "1"): element("1e30"), ("9", "2"): element("5"),
                          ("9", "3"): element("50.5")})
    assert rows is not None
    assert [(row.product_id, row.amount) for row in rows] == [("3", D("101.00"))]
