"""Promo codes through the JSON API: `promo_code` on /accrue (used with the purchase, once
per key) and on /preview (what it would give, or why not, nothing used)."""

from __future__ import annotations

from typing import Any

import pytest

from connector.codes import catalog
from connector.services import Services
from tests.conftest import Clock
from tests.test_api import ANNA, BORIS, Api


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"promo": [
        {"name": "winter", "code": "WINTER25", "points": "100", "budget": "150",
         "ends": "2026-04-01T00:00:00"},
        {"name": "double", "multiplier": "2"},
    ]}


def test_accrue_with_a_code_answers_what_it_gave_and_a_repeat_uses_it_once(api: Api) -> None:
    first = api.accrue("1000", key="a-1", promo_code="winter-25")
    assert first["promo"] == {"code": "WINTER25", "outcome": "applied", "campaign": "winter",
                              "points": "100.00", "detail": ""}
    assert first["points"] == "130.00"
    replay = api.post("/api/v1/accrue", {**ANNA, "amount": "1000", "promo_code": "winter-25"},
                      key="a-1")
    assert replay.status_code == 200 and replay.json["duplicate"] is True
    assert replay.json["promo"]["outcome"] == "applied"
    assert api.balance() == "130.00"
    conflict = api.post("/api/v1/accrue", {**ANNA, "amount": "1000", "promo_code": "OTHER1"},
                        key="a-1")
    assert conflict.status_code == 409 and conflict.json["error"] == "idempotency_conflict"


def test_refused_codes_say_why_and_the_purchase_still_counts(api: Api,
                                                             services: Services) -> None:
    api.accrue("10", key="a-1", promo_code="WINTER25")
    again = api.accrue("1000", key="a-2", promo_code="WINTER25")
    assert again["promo"]["outcome"] == "already_used" and again["points"] == "30.00"
    assert api.accrue("10", key="b-1", ref=BORIS, promo_code="nope-nope")["promo"][
        "outcome"] == "unknown"
    vera = {**ANNA, "contact_id": "103"}
    budget = api.accrue("10", key="v-1", ref=vera, promo_code="WINTER25")["promo"]
    assert budget["outcome"] == "budget_exhausted" and "50.00" in budget["detail"]
    [code] = catalog.generate(services.db, services.ledger.program, "double", 1,
                              now=services.ledger.clock())
    assert api.accrue("1000", key="b-2", ref=BORIS, promo_code=code)["promo"]["points"] \
        == "30.00"
    used = api.accrue("1000", key="v-2", ref=vera, promo_code=code)["promo"]
    assert (used["outcome"], used["campaign"]) == ("used_up", "double")
    assert budget["campaign"] == "winter"


def test_preview_says_what_a_code_would_give_without_using_it(api: Api, clock: Clock) -> None:
    body = {**ANNA, "amount": "1000", "promo_code": "winter25"}
    for _ in range(2):
        response = api.post("/api/v1/preview", body)
        assert response.status_code == 200, response.json
        assert response.json["promo"] == {"code": "WINTER25", "outcome": "valid",
                                          "campaign": "winter", "points": "100.00",
                                          "detail": ""}
        assert response.json["points_earned"] == "30.00"
    api.accrue("1000", key="a-1", promo_code="WINTER25")
    # A refusal names the campaign that refused, once the code is known.
    assert api.post("/api/v1/preview", body).json["promo"] == {
        "code": "WINTER25", "outcome": "already_used", "campaign": "winter", "points": "0.00",
        "detail": "this customer has already used campaign winter 1 time(s), its limit"}
    clock.advance(days=30)
    late = api.post("/api/v1/preview", {**BORIS, "amount": "10", "promo_code": "WINTER25"})
    assert late.json["promo"] == {"code": "WINTER25", "outcome": "expired",
                                  "campaign": "winter", "points": "0.00",
                                  "detail": "expired 2026-04-01 00:00"}
    unknown = api.post("/api/v1/preview", {**BORIS, "amount": "10", "promo_code": "NOPE42"})
    assert unknown.json["promo"]["outcome"] == "unknown"
    assert unknown.json["promo"]["campaign"] is None  # no campaign has it
    too_long = api.post("/api/v1/preview", {"amount": "10", "promo_code": "X" * 65})
    assert too_long.status_code == 400 and too_long.json["detail"].startswith("promo_code")
