"""The JSON admin API under /api/v1, driven through Flask's test client on a real ledger."""

from __future__ import annotations

import json
import logging
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from connector.config import Settings
from connector.services import Services
from tests.conftest import ANNA, TOKEN, Api, account_path, make_settings
from webhooks import create_app

BORIS = {**ANNA, "contact_id": "102"}


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {
        "tiers": [
            {"name": "Bronze", "min_spend": "0", "rate": "0.05"},
            {"name": "Silver", "min_spend": "10000", "rate": "0.10", "discount_percent": "5"},
        ],
        "welcome_bonus": "100",
        "bonuses": {"review": "50"},
    }


def assert_invalid(response: TestResponse, field: str, *, error: str = "invalid_request",
                   status: int = 400) -> None:
    assert response.status_code == status, response.json
    assert response.json["error"] == error
    assert response.json["detail"].startswith(f"{field}:"), response.json["detail"]


# -- authentication ------------------------------------------------------------------------
@pytest.mark.parametrize("authorization", [
    None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN, "Bearer ", f"Bearer {TOKEN}x",
], ids=["missing", "wrong", "basic-scheme", "no-scheme", "empty", "longer"])
def test_requests_without_the_admin_token_are_refused(client: FlaskClient,
                                                      authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for response in (client.get(account_path(ANNA), headers=headers),
                     client.post("/api/v1/accrue", json={**ANNA, "amount": "10", "key": "k"},
                                 headers=headers)):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json["error"] == "unauthorized"
        assert TOKEN not in response.get_data(as_text=True)


def test_authentication_comes_before_reading_the_body(client: FlaskClient) -> None:
    response = client.post("/api/v1/accrue", data=b"x" * 2_000_000,
                           content_type="application/json")
    assert response.status_code == 401


def test_api_is_disabled_without_an_admin_token(tmp_path: Path) -> None:
    services = Services.build(make_settings(tmp_path))
    client = create_app(services=services).test_client()
    response = client.get(account_path(ANNA), headers={"Authorization": "Bearer anything"})
    services.close()
    assert response.status_code == 403
    assert response.json == {
        "error": "api_disabled",
        "detail": "set server.admin_token (or LOYALTY_SERVER__ADMIN_TOKEN) to enable /api/v1"}


# -- reading -------------------------------------------------------------------------------
def test_account_shows_balance_tier_spend_and_expiry(api: Api) -> None:
    api.accrue("1000", key="order-1")
    account = api.account()
    assert account["ref"] == ANNA
    assert (account["balance"], account["available"], account["pending"]) == \
        ("50.00", "50.00", "0.00")
    assert (account["tier"], account["qualifying_spend"]) == ("Bronze", "1000.00")
    assert (account["next_tier"], account["spend_to_next_tier"]) == ("Silver", "9000.00")
    assert account["next_expiry_points"] == "50.00"
    assert account["next_expiry_at"] == "2027-03-10T09:00:00+00:00"  # 365 days after the clock
    assert account["purchase_count"] == 1 and account["purchase_total"] == "1000.00"
    assert len(account["card_number"]) == 10 and "history" not in account


def test_account_with_history_lists_the_latest_entries(api: Api) -> None:
    api.accrue("1000", key="order-1")
    api.post("/api/v1/bonus", {**ANNA, "name": "review"}, key="review-1")
    account = api.get(account_path(ANNA) + "?history=1").json
    assert [(e["kind"], e["points"], e["balance_after"]) for e in account["history"]] == [
        ("bonus", "50.00", "100.00"), ("accrual", "50.00", "50.00")]
    assert account["history"][1]["actor"] == "api"
    assert account["history"][1]["key"] == "api:order-1"
    assert account["history"][1]["purchase_amount"] == "1000.00"


def test_history_pages_backwards_by_entry_id(api: Api) -> None:
    ids = [api.accrue("100", key=f"order-{n}")["entry_id"] for n in range(3)]
    first = api.get(account_path(ANNA) + "/history?limit=2").json
    assert [e["id"] for e in first["entries"]] == [ids[2], ids[1]]
    assert first["next_before"] == ids[1]
    second = api.get(account_path(ANNA) + f"/history?limit=2&before={ids[1]}").json
    assert [e["id"] for e in second["entries"]] == [ids[0]]
    assert second["next_before"] is None


def test_card_number_finds_the_account(api: Api) -> None:
    api.accrue("1000", key="order-1")
    card = api.account()["card_number"]
    by_card = api.get(f"/api/v1/cards/{card}")
    assert by_card.status_code == 200
    assert by_card.json["ref"] == ANNA and by_card.json["balance"] == "50.00"


@pytest.mark.parametrize("path", [account_path(ANNA), account_path(ANNA) + "/history",
                                  "/api/v1/cards/0000000000"])
def test_unknown_account_is_404(api: Api, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert response.json["error"] == "account_not_found"


def test_preview_for_a_new_customer_earns_at_the_first_tier(api: Api) -> None:
    response = api.post("/api/v1/preview", {"amount": "1000"})
    assert response.status_code == 200
    assert response.json == {
        "purchase_amount": "1000.00", "tier": "Bronze", "discount_percent": "0",
        "points_earned": "50.00", "max_redeem_points": "0.00", "max_redeem_amount": "0.00",
        "campaigns": []}


def test_preview_uses_the_account_tier_and_balance_and_writes_nothing(api: Api) -> None:
    api.accrue("10000", key="order-1")  # 500 points, and the spend reaches Silver
    response = api.post("/api/v1/preview", {**ANNA, "amount": "1200.50"})
    assert response.status_code == 200
    assert (response.json["tier"], response.json["discount_percent"]) == ("Silver", "5")
    assert response.json["points_earned"] == "120.00"  # 10%, rounded down to whole points
    assert response.json["max_redeem_points"] == "500.00"  # the balance, under the 50% cap
    assert api.balance() == "500.00"
    assert len(api.get(account_path(ANNA) + "/history").json["entries"]) == 1


def test_preview_needs_all_account_fields_or_none(api: Api) -> None:
    response = api.post("/api/v1/preview", {"crm": "bitrix24", "portal": "acme", "amount": "5"})
    assert_invalid(response, "contact_id")


# -- changing ------------------------------------------------------------------------------
def test_accrue_then_replay_returns_the_same_entry(api: Api) -> None:
    body = {**ANNA, "amount": "1000", "category": "shoes", "comment": "till 3"}
    first = api.post("/api/v1/accrue", body, key="order-1")
    assert first.status_code == 201
    assert first.json["kind"] == "accrual" and first.json["duplicate"] is False
    assert (first.json["points"], first.json["balance"]) == ("50.00", "50.00")
    again = api.post("/api/v1/accrue", body, key="order-1")
    assert again.status_code == 200
    assert again.json == {**first.json, "duplicate": True}
    assert api.balance() == "50.00"


def test_idempotency_key_may_come_as_a_header(api: Api) -> None:
    body = {**ANNA, "amount": "1000"}
    first = api.post("/api/v1/accrue", body, headers={"Idempotency-Key": "order-1"})
    again = api.post("/api/v1/accrue", body, key="order-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["entry_id"] == first.json["entry_id"] and again.json["duplicate"]
    clash = api.post("/api/v1/accrue", body, key="order-2",
                     headers={"Idempotency-Key": "order-1"})
    assert_invalid(clash, "key")


def test_the_longest_key_is_accepted_and_replays(api: Api) -> None:
    key = "k" * 255
    first = api.post("/api/v1/accrue", {**ANNA, "amount": "100"}, key=key)
    again = api.post("/api/v1/accrue", {**ANNA, "amount": "100"}, key=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert api.balance() == "5.00"


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/bonus", {**ANNA, "name": "review"}),
    ("/api/v1/accrue", {**BORIS, "amount": "1000"}),
], ids=["another-operation", "another-account"])
def test_key_reused_for_another_request_is_a_conflict(api: Api, path: str,
                                                      body: dict[str, Any]) -> None:
    api.accrue("1000", key="order-1")
    response = api.post(path, body, key="order-1")
    assert response.status_code == 409
    assert response.json["error"] == "idempotency_conflict"
    assert api.balance() == "50.00"


def test_same_key_with_other_parameters_is_a_conflict(api: Api) -> None:
    api.accrue("1000", key="order-1")
    first = api.post("/api/v1/redeem", {**ANNA, "points": "10"}, key="pay-1")
    assert first.status_code == 201
    response = api.post("/api/v1/redeem", {**ANNA, "points": "20"}, key="pay-1")
    assert response.status_code == 409
    assert response.json["error"] == "idempotency_conflict"
    assert "other parameters" in response.json["detail"]
    partial = api.post("/api/v1/redeem", {**ANNA, "points": "10", "partial": True}, key="pay-1")
    assert partial.status_code == 409
    assert api.balance() == "40.00"


@pytest.mark.parametrize("points", [10, "10", "10.00", "10.0"])
def test_the_same_request_written_another_way_replays(api: Api, points: Any) -> None:
    api.accrue("1000", key="order-1")
    first = api.post("/api/v1/redeem", {**ANNA, "points": "10", "partial": False,
                                        "comment": None}, key="pay-1")
    again = api.post("/api/v1/redeem", {**ANNA, "points": points}, key="pay-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == {**first.json, "duplicate": True}
    assert api.balance() == "40.00"


def test_entries_without_a_fingerprint_still_replay(api: Api, services: Services) -> None:
    """Keys used before fingerprints were kept (request_hash NULL) answer as they did."""
    first = api.post("/api/v1/accrue", {**ANNA, "amount": "1000"}, key="order-1")
    with services.db.transaction() as session:
        session.execute(text("UPDATE entries SET request_hash = NULL"))
    again = api.post("/api/v1/accrue", {**ANNA, "amount": "2000"}, key="order-1")
    assert again.status_code == 200 and again.json["entry_id"] == first.json["entry_id"]
    assert api.balance() == "50.00"


def test_redeem_within_the_cap(api: Api) -> None:
    api.accrue("1000", key="order-1")
    response = api.post("/api/v1/redeem", {**ANNA, "points": "20", "purchase_amount": "100"},
                        key="pay-1")
    assert response.status_code == 201
    assert (response.json["kind"], response.json["points"], response.json["balance"]) == \
        ("redemption", "-20.00", "30.00")
    assert api.balance() == "30.00"


def test_redeem_above_the_cap_is_422_with_the_maximum(api: Api) -> None:
    api.accrue("10000", key="order-1")
    response = api.post("/api/v1/redeem", {**ANNA, "points": "80", "purchase_amount": "100"},
                        key="pay-1")
    assert response.status_code == 422
    assert response.json["error"] == "redemption_cap_exceeded"
    assert response.json["max_redeemable"] == "50.00"
    assert api.balance() == "500.00"


def test_redeem_above_the_balance_is_409(api: Api) -> None:
    api.accrue("10000", key="order-1")
    response = api.post("/api/v1/redeem", {**ANNA, "points": "600"}, key="pay-1")
    assert response.status_code == 409
    assert response.json["error"] == "insufficient_points"
    assert response.json["available"] == "500.00"
    assert api.balance() == "500.00"


def test_partial_redemption_takes_what_the_cap_allows(api: Api) -> None:
    api.accrue("10000", key="order-1")
    response = api.post("/api/v1/redeem", {**ANNA, "points": "80", "purchase_amount": "100",
                                           "partial": True}, key="pay-1")
    assert response.status_code == 201
    assert (response.json["points"], response.json["balance"]) == ("-50.00", "450.00")
    assert response.json["details"]["requested"] == "80.00"
    assert api.balance() == "450.00"


def test_redeem_for_an_unknown_account_is_404(api: Api) -> None:
    response = api.post("/api/v1/redeem", {**ANNA, "points": "1"}, key="pay-1")
    assert response.status_code == 404
    assert response.json["error"] == "account_not_found"


def test_adjust_adds_and_removes_points(api: Api) -> None:
    plus = api.post("/api/v1/adjust", {**ANNA, "points": "25.50", "reason": "goodwill"},
                    key="adj-1")
    minus = api.post("/api/v1/adjust", {**ANNA, "points": -10, "reason": "typo"}, key="adj-2")
    assert (plus.status_code, plus.json["balance"]) == (201, "25.50")
    assert (minus.status_code, minus.json["points"], minus.json["balance"]) == \
        (201, "-10.00", "15.50")
    too_much = api.post("/api/v1/adjust", {**ANNA, "points": "-100", "reason": "x"}, key="a3")
    assert (too_much.status_code, too_much.json["error"]) == (409, "insufficient_points")
    assert api.balance() == "15.50"


@pytest.mark.parametrize(("body", "points"), [
    ({"name": "welcome"}, "100.00"),
    ({"name": "review"}, "50.00"),
    ({"name": "apology", "points": "7.5", "comment": "late delivery"}, "7.50"),
], ids=["builtin", "configured", "custom-amount"])
def test_bonus_grants_points(api: Api, body: dict[str, str], points: str) -> None:
    response = api.post("/api/v1/bonus", {**ANNA, **body}, key="bonus-1")
    assert response.status_code == 201
    assert (response.json["kind"], response.json["points"]) == ("bonus", points)
    assert api.balance() == points


def test_unknown_bonus_is_400(api: Api) -> None:
    response = api.post("/api/v1/bonus", {**ANNA, "name": "nonesuch"}, key="bonus-1")
    assert response.status_code == 400
    assert response.json["error"] == "unknown_bonus"


@pytest.mark.parametrize("source", [{"source": "order-7"}, {}], ids=["named", "by-key"])
def test_reverse_undoes_a_purchase(api: Api, source: dict[str, str]) -> None:
    api.accrue("1000", key="order-7", **source)
    api.accrue("200", key="order-8")
    response = api.post("/api/v1/reverse", {**ANNA, "source": "order-7"}, key="return-7")
    assert response.status_code == 201
    assert (response.json["kind"], response.json["points"], response.json["balance"]) == \
        ("reversal", "-50.00", "10.00")
    assert api.account()["purchase_total"] == "200.00"


def test_reverse_of_nothing_is_refused_and_writes_nothing(api: Api) -> None:
    api.accrue("1000", key="order-1")
    before = api.get(account_path(ANNA) + "/history").json["entries"]
    response = api.post("/api/v1/reverse", {**ANNA, "source": "order-7"}, key="return-7")
    assert response.status_code == 409
    assert (response.json["error"], response.json["source"]) == ("nothing_to_reverse",
                                                                 "order-7")
    assert api.get(account_path(ANNA) + "/history").json["entries"] == before
    # The purchase arrives late: the same reversal, same key, now undoes it.
    api.accrue("1000", key="order-7")
    late = api.post("/api/v1/reverse", {**ANNA, "source": "order-7"}, key="return-7")
    assert late.status_code == 201 and late.json["points"] == "-50.00"
    # Done once: a second reversal under another key has nothing left.
    twice = api.post("/api/v1/reverse", {**ANNA, "source": "order-7"}, key="return-7b")
    assert (twice.status_code, twice.json["error"]) == (409, "nothing_to_reverse")
    assert api.balance() == "50.00"


def test_reverse_on_an_unknown_account_is_404(api: Api) -> None:
    response = api.post("/api/v1/reverse", {**BORIS, "source": "order-7"}, key="return-7")
    assert (response.status_code, response.json["error"]) == (404, "account_not_found")


# -- bad input -----------------------------------------------------------------------------
RAW = "__raw__"


@pytest.mark.parametrize(("field", "raw"), [
    ("amount", None),
    ("amount", '"10.123"'),
    ("amount", "10.123"),
    ("amount", '"-5"'),
    ("amount", "0"),
    ("amount", "1e15"),
    ("amount", '"1e30"'),
    ("amount", "true"),
    ("amount", "[1]"),
    ("amount", '"ten"'),
    ("crm", '"Bitrix24"'),
    ("crm", '"crm\\n"'),
    ("portal", json.dumps("x" * 256)),
    ("contact_id", '""'),
    ("contact_id", json.dumps("9" * 65)),
    ("comment", "5"),
    ("key", json.dumps("k" * 256)),
    ("ammount", '"5"'),
], ids=["missing", "three-places-string", "three-places-number", "negative", "zero",
        "huge-number", "huge-string", "bool", "list", "word", "crm-case", "crm-newline",
        "portal-long", "contact-empty", "contact-long", "comment-number", "key-long",
        "unknown-field"])
def test_accrue_rejects_bad_fields(api: Api, field: str, raw: str | None) -> None:
    body: dict[str, Any] = {**ANNA, "amount": "100", "key": "order-1"}
    if raw is None:
        del body[field]
    else:
        body[field] = RAW
    response = api.post_raw("/api/v1/accrue", json.dumps(body).replace(f'"{RAW}"', raw or ""))
    assert_invalid(response, field)
    assert api.get(account_path(ANNA)).status_code == 404  # nothing was written


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/accrue", {**ANNA, "amount": "10"}, "key"),
    ("/api/v1/redeem", {**ANNA, "points": "5", "partial": "yes", "key": "k"}, "partial"),
    ("/api/v1/redeem", {**ANNA, "points": "5", "purchase_amount": "-1", "key": "k"},
     "purchase_amount"),
    ("/api/v1/adjust", {**ANNA, "points": "0", "reason": "x", "key": "k"}, "points"),
    ("/api/v1/adjust", {**ANNA, "points": "5", "reason": "  ", "key": "k"}, "reason"),
    ("/api/v1/adjust", {**ANNA, "points": "5", "key": "k"}, "reason"),
    ("/api/v1/bonus", {**ANNA, "name": "no spaces", "key": "k"}, "name"),
    ("/api/v1/bonus", {**ANNA, "name": "review", "points": "-1", "key": "k"}, "points"),
    ("/api/v1/reverse", {**ANNA, "key": "k"}, "source"),
    ("/api/v1/preview", {"amount": "1.001"}, "amount"),
], ids=["no-key", "partial-string", "negative-purchase", "zero-adjust", "blank-reason",
        "no-reason", "bonus-name", "negative-bonus", "no-source", "preview-amount"])
def test_other_endpoints_reject_bad_fields(api: Api, path: str, body: dict[str, Any],
                                           field: str) -> None:
    assert_invalid(api.post(path, body), field)


@pytest.mark.parametrize(("query", "field"), [
    ("/history?limit=0", "limit"), ("/history?limit=201", "limit"),
    ("/history?limit=ten", "limit"), ("/history?before=-1", "before"),
    ("?history=maybe", "history"),
])
def test_bad_query_parameters_are_400(api: Api, query: str, field: str) -> None:
    api.accrue("100", key="order-1")
    assert_invalid(api.get(account_path(ANNA) + query), field)


def test_bad_path_parts_are_400(api: Api) -> None:
    assert_invalid(api.get(account_path({**ANNA, "crm": "BITRIX"})), "crm")
    assert_invalid(api.get(account_path({**ANNA, "contact_id": "1" * 65})), "contact_id")


@pytest.mark.parametrize(("data", "error", "field"), [
    ("[1, 2]", "invalid_request", "body"),
    ('"text"', "invalid_request", "body"),
    ('{"amount": ', "invalid_json", "body"),
    ('{"amount": NaN}', "invalid_json", "body"),
    ("", "invalid_json", "body"),
    (b"\xff\xfe{", "invalid_json", "body"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json", "body"),
], ids=["array", "string", "truncated", "nan", "empty", "bad-utf8", "deep"])
def test_bodies_that_are_not_json_objects_are_400(api: Api, data: str | bytes, error: str,
                                                  field: str) -> None:
    assert_invalid(api.post_raw("/api/v1/accrue", data), field, error=error)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
def test_non_json_content_type_is_415(api: Api, content_type: str) -> None:
    response = api.post_raw("/api/v1/accrue", "amount=10", content_type=content_type)
    assert response.status_code == 415
    assert response.json["error"] == "unsupported_media_type"


def test_body_over_the_limit_is_413(api: Api, settings: Settings) -> None:
    padding = "x" * settings.server.max_body_bytes
    response = api.post("/api/v1/accrue", {**ANNA, "amount": "10", "comment": padding}, key="k")
    assert response.status_code == 413
    assert response.json["error"] == "body_too_large"
    assert "server.max_body_bytes" in response.json["detail"]


# -- errors as JSON ------------------------------------------------------------------------
def test_unknown_route_is_json_404(api: Api) -> None:
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"


def test_wrong_method_is_json_405_with_allow(api: Api) -> None:
    response = api.get("/api/v1/accrue")
    assert response.status_code == 405
    assert response.json["error"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_unexpected_error_is_500_and_logged_without_secrets(
        api: Api, services: Services, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services.ledger, "account", broken)
    with caplog.at_level(logging.ERROR, logger="webhooks.errors"):
        response = api.get(account_path(ANNA))
    assert response.status_code == 500
    assert response.json == {"error": "internal_error"}
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert TOKEN not in caplog.text and "disk on fire" in caplog.text


def test_json_provider_keeps_amounts_exact(app: Flask) -> None:
    assert app.json.loads('{"amount": 0.10, "n": 3}') == {"amount": D("0.10"), "n": 3}
    assert json.loads(app.json.dumps({"amount": D("0.10")})) == {"amount": "0.10"}
