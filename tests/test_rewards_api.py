"""The rewards catalogue and claims through /api/v1, Flask's test client against a real
database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from typing import Any

import pytest
from flask.testing import FlaskClient

from connector.config import Settings
from connector.ledger.views import AccountRef
from connector.services import Services
from tests.conftest import Clock, fresh_services

AUTH = {"Authorization": "Bearer test-admin-token"}
ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "42")
WHO = {"crm": ANNA.crm, "portal": ANNA.portal, "contact_id": ANNA.contact_id}


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"rewards": [{"id": "mug", "name": "Branded mug", "cost": 100, "stock": 1},
                        {"id": "lounge", "name": "Lounge pass", "cost": 10, "tier": "Gold"}]}


@pytest.fixture
def services(settings: Settings, clock: Clock) -> Iterator[Services]:
    built = fresh_services(settings, clock=clock)
    yield built
    built.close()


def test_list_create_update_disable(client: FlaskClient) -> None:
    listed = client.get("/api/v1/rewards", headers=AUTH)
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json["rewards"]] == ["lounge", "mug"]
    assert client.get("/api/v1/rewards").status_code == 401
    made = client.post("/api/v1/rewards", headers=AUTH, json={
        "id": "tote", "name": "Tote bag", "cost": "40.50", "stock": 5, "per_customer": 1,
        "tier": "Silver", "starts": "2026-03-01T00:00:00", "ends": "2026-04-01T00:00:00Z"})
    assert made.status_code == 201, made.json
    assert made.json["cost"] == "40.50" and made.json["stock_left"] == 5
    assert made.json["starts_at"] == "2026-02-28T21:00:00+00:00"  # Europe/Moscow midnight
    changed = client.patch("/api/v1/rewards/tote", headers=AUTH, json={"stock": 7})
    assert changed.status_code == 200 and changed.json["stock_left"] == 7
    assert changed.json["name"] == "Tote bag"
    off = client.post("/api/v1/rewards/tote/disable", headers=AUTH)
    assert off.status_code == 200 and off.json["active"] is False
    assert "tote" not in [r["id"] for r in client.get("/api/v1/rewards", headers=AUTH).json[
        "rewards"]]
    everything = client.get("/api/v1/rewards?all=1", headers=AUTH).json["rewards"]
    assert {"tote", "mug"} <= {r["id"] for r in everything}
    again = client.patch("/api/v1/rewards/tote", headers=AUTH, json={"active": True})
    assert again.json["active"] is True


def test_an_update_clears_a_field_sent_as_null_and_keeps_one_left_out(
        client: FlaskClient) -> None:
    made = client.post("/api/v1/rewards", headers=AUTH, json={
        "id": "tote", "name": "Tote bag", "cost": 40, "stock": 5, "per_customer": 1,
        "tier": "Gold", "starts": "2026-03-01T00:00:00", "ends": "2026-12-31T00:00:00"})
    assert made.status_code == 201, made.json
    cleared = client.patch("/api/v1/rewards/tote", headers=AUTH, json={
        "stock": None, "per_customer": None, "tier": None, "starts": None, "ends": None})
    assert cleared.status_code == 200, cleared.json
    assert {k: cleared.json[k] for k in ("stock", "stock_left", "per_customer", "tier",
                                         "starts_at", "ends_at")} == dict.fromkeys(
        ("stock", "stock_left", "per_customer", "tier", "starts_at", "ends_at"))
    assert cleared.json["name"] == "Tote bag" and cleared.json["cost"] == "40.00"
    listed = {r["id"]: r for r in client.get("/api/v1/rewards", headers=AUTH).json["rewards"]}
    assert listed["tote"]["stock"] is None and listed["tote"]["tier"] is None
    # Left out: kept. A name or cost cannot be cleared: null there still means "keep".
    limited = client.patch("/api/v1/rewards/tote", headers=AUTH, json={"stock": 3})
    kept = client.patch("/api/v1/rewards/tote", headers=AUTH, json={"name": None, "cost": None})
    assert limited.json["stock_left"] == 3 and kept.json["stock"] == 3
    assert kept.json["name"] == "Tote bag" and kept.json["cost"] == "40.00"


@pytest.mark.parametrize(("body", "field"), [
    ({"id": "Bad Id", "name": "x", "cost": 1}, "id"),
    ({"id": "x", "name": "x", "cost": 0}, "cost"),
    ({"id": "x", "name": "x", "cost": 1, "stock": "5"}, "stock"),
    ({"id": "x", "name": "x", "cost": 1, "tier": "Platinum"}, "tier"),
    ({"id": "x", "name": "x", "cost": 1, "colour": "red"}, "colour"),
    ({"id": "x", "name": "x", "cost": 1, "starts": "2026-05-01T00:00:00",
      "ends": "2026-04-01T00:00:00"}, "ends"),
])
def test_bad_definitions_are_refused_naming_the_field(client: FlaskClient, body: dict[str, Any],
                                                      field: str) -> None:
    response = client.post("/api/v1/rewards", headers=AUTH, json=body)
    assert response.status_code == 400 and field in response.json["detail"], response.json


def test_config_rewards_are_changed_in_the_configuration(client: FlaskClient) -> None:
    response = client.patch("/api/v1/rewards/mug", headers=AUTH, json={"cost": 1})
    assert response.status_code == 409 and response.json["reason"] == "configured"
    assert client.post("/api/v1/rewards/none/disable", headers=AUTH).status_code == 404
    taken = client.post("/api/v1/rewards", headers=AUTH,
                        json={"id": "mug", "name": "x", "cost": 1})
    assert taken.status_code == 409


def test_claim_hand_over_and_cancel(client: FlaskClient, services: Services) -> None:
    services.ledger.adjust(ANNA, D("150"), key="fund", reason="test")
    path = "/api/v1/rewards/mug/claim"
    claimed = client.post(path, headers={**AUTH, "Idempotency-Key": "pos-1"}, json=WHO)
    assert claimed.status_code == 201, claimed.json
    assert claimed.json["kind"] == "reward" and claimed.json["points"] == "-100.00"
    code = claimed.json["claim"]["code"]
    repeat = client.post(path, headers={**AUTH, "Idempotency-Key": "pos-1"}, json=WHO)
    assert repeat.status_code == 200 and repeat.json["duplicate"] is True
    assert repeat.json["claim"]["code"] == code
    other = client.post("/api/v1/rewards/lounge/claim",
                        headers={**AUTH, "Idempotency-Key": "pos-1"}, json=WHO)
    assert other.status_code == 409 and other.json["error"] == "idempotency_conflict"
    out = client.post(path, headers=AUTH, json={**WHO, "key": "pos-2"})
    assert out.status_code == 409
    assert out.json["error"] == "reward_refused" and out.json["reason"] == "stock"
    tier = client.post("/api/v1/rewards/lounge/claim", headers=AUTH, json={**WHO, "key": "g"})
    assert tier.status_code == 409 and tier.json["reason"] == "tier"
    assert "Gold" in tier.json["detail"]
    listed = client.get("/api/v1/claims?open=1", headers=AUTH).json["claims"]
    assert [c["code"] for c in listed] == [code]
    assert client.get("/api/v1/claims?opne=1", headers=AUTH).status_code == 400
    cancelled = client.post(f"/api/v1/claims/{code}/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert services.ledger.account(ANNA).balance == D("150.00")
    refused = client.post(f"/api/v1/claims/{code}/handed", headers=AUTH)
    assert refused.status_code == 409 and refused.json["reason"] == "cancelled"
    second = client.post(path, headers=AUTH, json={**WHO, "key": "pos-3"})
    assert second.status_code == 201
    code2 = second.json["claim"]["code"]
    handed = client.post(f"/api/v1/claims/{code2}/handed", headers=AUTH)
    assert handed.status_code == 200 and handed.json["handed_at"]
    assert client.get("/api/v1/claims?open=1", headers=AUTH).json["claims"] == []
    assert client.post("/api/v1/claims/NOPE234567/cancel", headers=AUTH).status_code == 404


def test_not_enough_points_and_no_account(client: FlaskClient, services: Services) -> None:
    none = client.post("/api/v1/rewards/mug/claim", headers=AUTH, json={**WHO, "key": "a"})
    assert none.status_code == 404 and none.json["error"] == "account_not_found"
    services.ledger.adjust(ANNA, D("50"), key="fund", reason="test")
    poor = client.post("/api/v1/rewards/mug/claim", headers=AUTH, json={**WHO, "key": "b"})
    assert poor.status_code == 409 and poor.json["reason"] == "points"
    assert poor.json["available"] == "50.00"


def test_the_dashboard_counts_claims(client: FlaskClient, services: Services,
                                     clock: Clock) -> None:
    services.ledger.adjust(ANNA, D("150"), key="fund", reason="test")
    services.claims.claim(ANNA, "mug", key="one", via="api")
    clock.advance(minutes=1)  # the period ends now, and excludes its end
    html = client.get("/dashboard", headers=AUTH).get_data(as_text=True)
    assert 'id="kpi-rewards">1<' in html and 'id="kpi-rewards-open">1<' in html
    assert "баллов потрачено на награды: 100" in html  # the default language, Russian
