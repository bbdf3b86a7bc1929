"""Pure Bitrix24 mappings, on payloads shaped as the official docs show them."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal as D

import pytest

from mappings import bitrix24 as b24
from mappings.phpquery import QueryError, decode, encode

# ONCRMDEALUPDATE as documented (api-reference/crm/deals/events/on-crm-deal-update.md),
# form-encoded the way the portal sends it.
DEAL_UPDATE = (
    "event=ONCRMDEALUPDATE&event_handler_id=201&data%5BFIELDS%5D%5BID%5D=759&ts=1736405807"
    "&auth%5Baccess_token%5D=s6p6eclrvim6da22ft9ch94ekreb52lv&auth%5Bexpires_in%5D=3600"
    "&auth%5Bscope%5D=crm&auth%5Bdomain%5D=some-domain.bitrix24.com"
    "&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bstatus%5D=F"
    "&auth%5Bclient_endpoint%5D=https%3A%2F%2Fsome-domain.bitrix24.com%2Frest%2F"
    "&auth%5Bmember_id%5D=a223c6b3710f85df22e9377d6c4f7553"
    "&auth%5Bapplication_token%5D=51856fefc120afa4b628cc82d3935cce"
)


def test_event_is_decoded_from_the_form_body() -> None:
    event = b24.parse_event(decode(DEAL_UPDATE))
    assert (event.name, event.entity_id, event.ts) == ("ONCRMDEALUPDATE", "759", "1736405807")
    assert event.auth.application_token == "51856fefc120afa4b628cc82d3935cce"
    assert event.auth.member_id == "a223c6b3710f85df22e9377d6c4f7553"
    assert "s6p6" not in repr(event.auth)


@pytest.mark.parametrize(("body", "message"), [
    ("event=ONCRMDEALUPDATE&auth[domain]=x", "data[FIELDS][ID]"),
    ("event=ONCRMDEALUPDATE&data[FIELDS][ID]=abc&auth[domain]=x&auth[member_id]=m"
     "&auth[application_token]=t", "data[FIELDS][ID]"),
    ("event=ONSOMETHINGELSE&data[FIELDS][ID]=1", "not handled"),
    ("data[FIELDS][ID]=1", "event"),
    ("event=ONCRMDEALADD&data[FIELDS][ID]=1", "auth"),
])
def test_bad_events_name_the_key(body: str, message: str) -> None:
    with pytest.raises(b24.PayloadError, match=re.escape(message)):
        b24.parse_event(decode(body))



def test_hostile_nesting_is_refused() -> None:
    with pytest.raises(QueryError):
        decode("a" + "[x]" * 20 + "=1")
    with pytest.raises(QueryError):
        decode("a[]=1&a[x]=2")


def test_robot_call() -> None:
    body = encode({
        "workflow_id": "664fa13bbbb410.99176768", "code": "loyalty_redeem",
        "document_id": ["crm", "CCrmDocumentDeal", "DEAL_123"],
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
        "event_token": "664fa13bbbb410.99176768|A40364_79843|MS1ekdI0",
        "properties": {"amount": "333", "comment": "за отзыв"},
        "use_subscription": "Y", "timeout_duration": "660", "ts": "1716494651",
        "auth": {"domain": "acme.bitrix24.ru", "member_id": "m1", "application_token": "t1"},
    })
    robot = b24.parse_robot(decode(body))
    assert (robot.code, robot.deal_id) == ("loyalty_redeem", "123")
    assert robot.properties == {"amount": "333", "comment": "за отзыв"}


def deal(**fields: str) -> dict[str, str]:
    base = {"ID": "42", "CONTACT_ID": "7", "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
            "CATEGORY_ID": "0", "OPPORTUNITY": "19999.99", "CURRENCY_ID": "RUB",
            "DATE_MODIFY": "2026-11-23T10:00:00+03:00"}
    return {**base, **fields}


def test_won_deal_is_a_purchase() -> None:
    state = b24.purchase_state(deal(), portal="acme", categories=[])
    assert (state.source, state.contact_id, state.amount) == ("bitrix24:acme:deal:42", "7",
                                                               D("19999.99"))
    assert state.occurred_at is not None and state.occurred_at.utcoffset() is not None


@pytest.mark.parametrize(("fields", "categories", "reason"), [
    ({"STAGE_SEMANTIC_ID": "P"}, [], "not won"),
    ({"STAGE_SEMANTIC_ID": "F", "STAGE_ID": "LOSE"}, [], "not won"),
    ({"CATEGORY_ID": "3"}, ["0", "1"], "funnel 3"),
    ({"CONTACT_ID": ""}, [], "no contact"),
    ({"CONTACT_ID": "0"}, [], "no contact"),
    ({"OPPORTUNITY": "0.00"}, [], "zero"),
])
def test_what_is_not_a_purchase(fields: dict[str, str], categories: list[str],
                                reason: str) -> None:
    state = b24.purchase_state(deal(**fields), portal="acme", categories=categories)
    assert state.amount is None and state.reason is not None and reason in state.reason


def test_contact_values_and_what_changed() -> None:
    fields = {"balance": "UF_CRM_B", "tier": "UF_CRM_T", "expiring_date": "UF_CRM_D"}
    wanted = b24.contact_values(fields, balance=D("150.00"), available=D("150.00"),
                                tier="Gold", discount=D("5"),
                                expiring_points=D("0"), expiring_date=date(2026, 12, 1),
                                segment=None, card="0000000018")
    assert wanted == {"UF_CRM_B": "150", "UF_CRM_T": "Gold", "UF_CRM_D": "2026-12-01"}
    in_crm = {"UF_CRM_B": "150.00", "UF_CRM_T": "Silver", "UF_CRM_D": "2026-12-01T00:00:00+03:00"}
    assert b24.changed_values(wanted, in_crm) == {"UF_CRM_T": "Gold"}
    assert b24.changed_values(wanted, {}) == wanted


def test_birthday_is_the_portal_date() -> None:
    assert b24.birthday({"BIRTHDATE": "2001-11-11T00:00:00+03:00"}) == date(2001, 11, 11)
    assert b24.birthday({"BIRTHDATE": ""}) is None


def test_a_body_of_bare_numeric_keys_is_a_payload_error() -> None:
    for parse in (b24.parse_event, b24.parse_robot):
        with pytest.raises(b24.PayloadError, match="named form fields"):
            parse(decode(b"0"))


@pytest.mark.parametrize("given", ["٣", "²", "0", "-5", "1" * 19, " ", "1e3", "12a"])
def test_an_event_id_must_be_ascii_digits_of_a_64_bit_id(given: str) -> None:
    body = encode({"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": given}},
                   "auth": {"domain": "acme.bitrix24.ru", "application_token": "t"}})
    with pytest.raises(b24.PayloadError, match=r"ID\]?: missing"):
        b24.parse_event(decode(body.encode()))


@pytest.mark.parametrize("opportunity", ["1e30", "9999999999999.99", "NaN", "-Infinity"])
def test_an_absurd_opportunity_is_no_purchase_and_no_crash(opportunity: str) -> None:
    state = b24.purchase_state(deal(OPPORTUNITY=opportunity), portal="acme", categories=[])
    assert state.amount is None and "not a usable number" in (state.reason or "")


def test_product_rows_with_absurd_numbers_are_left_out() -> None:
    rows = b24.product_rows([
        {"PRODUCT_ID": "1", "PRICE": "1e30", "QUANTITY": "1"},
        {"PRODUCT_ID": "2", "PRICE": "100.00", "QUANTITY": "1e30"},
        {"PRODUCT_ID": "3", "PRICE": "100.00", "QUANTITY": "2", "DISCOUNT_SUM": "1e40"},
    ])
    assert [(row.product_id, row.amount, row.discount) for row in rows] == [
        ("3", D("200.00"), D(0))]
