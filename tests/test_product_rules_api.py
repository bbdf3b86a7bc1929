"""POST /api/v1/preview and /redeem with a basket's rows: the product rules at the checkout."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from flask.testing import FlaskClient

from connector.ledger.views import AccountRef
from connector.services import Services

AUTH = {"Authorization": "Bearer test-admin-token"}
ANNA = {"crm": "bitrix24", "portal": "acme.bitrix24.ru", "contact_id": "101"}
REF = AccountRef(ANNA["crm"], ANNA["portal"], ANNA["contact_id"])
BASKET = [
    {"product_id": 100, "price": "1000", "quantity": 2},                       # 2000 at 5%
    {"product_id": "900", "price": "3000", "quantity": 1},                     # gift card
    {"product_id": "200", "price": 250, "quantity": "4", "section": "14"},     # tobacco
    {"product_id": "300", "price": "900", "quantity": 1, "discount": "100"},  # on sale
    {"product_id": "400", "price": "1000", "quantity": "1.5",
     "properties": {"BRAND": "Acme"}},                                         # 1500 at 10%
]


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {
        "tiers": [{"name": "Bronze", "rate": "0.05"}],
        "redeem_eligible_only": True,
        "product_rules": [
            {"name": "tobacco", "sections": ["14"], "exclude": True},
            {"name": "gift cards", "products": ["900"], "exclude": True},
            {"name": "discounted", "discounted": True, "exclude": True},
            {"name": "featured brand", "property": "BRAND", "values": ["Acme"],
             "multiplier": "2"},
        ],
    }


def post(client: FlaskClient, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers=AUTH)


def test_preview_earns_by_the_rows_and_caps_by_the_eligible_ones(
        client: FlaskClient, services: Services) -> None:
    services.ledger.adjust(REF, D("5000"), key="opening", reason="test balance")
    response = post(client, "/api/v1/preview", {**ANNA, "rows": BASKET})
    assert response.status_code == 200, response.json
    body = response.json
    # 2000*5% + 1500*10%; the amount is the basket's total
    assert (body["purchase_amount"], body["points_earned"]) == ("8400.00", "250.00")
    # the cap is half of the 3500 that earns points, not of 8400
    assert (body["eligible_amount"], body["max_redeem_points"]) == ("3500.00", "1750.00")


def test_preview_with_an_amount_and_rows_keeps_the_amount(client: FlaskClient) -> None:
    response = post(client, "/api/v1/preview", {"amount": "8000", "rows": BASKET[:1]})
    assert response.status_code == 200
    assert (response.json["purchase_amount"], response.json["points_earned"]) == \
        ("8000.00", "100.00")


def test_redeem_with_rows_is_capped_by_the_eligible_rows(client: FlaskClient,
                                                         services: Services) -> None:
    services.ledger.adjust(REF, D("5000"), key="opening", reason="test balance")
    over = post(client, "/api/v1/redeem", {**ANNA, "points": "1800", "rows": BASKET,
                                           "key": "pay-1"})
    assert over.status_code == 422 and over.json["max_redeemable"] == "1750.00"
    ok = post(client, "/api/v1/redeem", {**ANNA, "points": "1750", "rows": BASKET,
                                         "key": "pay-1"})
    assert ok.status_code == 201 and ok.json["balance"] == "3250.00"
    other = post(client, "/api/v1/redeem", {**ANNA, "points": "1750", "rows": BASKET[:2],
                                            "key": "pay-1"})
    assert other.status_code == 409  # the same key with other rows


@pytest.mark.parametrize("rows, field", [
    ("x", "rows"),
    ([], "rows"),
    ([{"price": "1", "quantity": 1}], "rows[0].product_id"),
    ([{"product_id": "1", "price": "-1", "quantity": 1}], "rows[0].price"),
    ([{"product_id": "1", "price": "1.001", "quantity": 1}], "rows[0].price"),
    ([{"product_id": "1", "price": "1", "quantity": 0}], "rows[0].quantity"),
    ([{"product_id": "1", "price": "1", "quantity": "1e3"}], "rows[0].quantity"),
    ([{"product_id": "1", "price": "1", "quantity": 1, "colour": "red"}], "rows[0].colour"),
    ([{"product_id": "1", "price": "1", "quantity": 1, "properties": ["x"]}],
     "rows[0].properties"),
])
def test_bad_rows_are_refused_naming_the_field(client: FlaskClient, rows: Any,
                                               field: str) -> None:
    response = post(client, "/api/v1/preview", {"rows": rows})
    assert response.status_code == 400, response.json
    assert response.json["detail"].startswith(f"{field}:"), response.json["detail"]


def test_rows_of_nothing_but_gifts_are_refused(client: FlaskClient) -> None:
    response = post(client, "/api/v1/preview",
                    {"rows": [{"product_id": "1", "price": 0, "quantity": 1}]})
    assert response.status_code == 400

