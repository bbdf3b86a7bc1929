"""Bring a friend through the JSON API: `referral_code` on /accrue and /preview, and the
referral figures of an account."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

from connector.crm.models import TriggerEvent
from connector.ledger.views import AccountRef
from connector.services import Services
from connector.triggers import REFERRAL_REWARDED
from tests.test_api import ANNA, BORIS, Api, account_path

VERA = {**ANNA, "contact_id": "103"}


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"referral_bonus": "300", "referral_newcomer_bonus": "100"}


def test_accrue_with_a_code_links_first_and_pays_both_bonuses(
        api: Api, services: Services) -> None:
    api.accrue("1000", key="anna-1")
    code = api.account()["referral_code"]
    first = api.accrue("1000", key="boris-1", ref=BORIS, referral_code=code.lower())
    assert first["referral"] == {"outcome": "linked", "code": code, "detail": ""}
    assert first["details"]["referral"]["rewarded"] is True
    assert (api.balance(), api.balance(BORIS)) == ("330.00", "130.00")
    boris = api.account(BORIS)
    assert boris["referred_by"] == code and boris["referral_code"] != code
    assert api.account()["referrals"] == {"invited": 1, "converted": 1, "points_paid": "300.00"}
    with services.db.transaction(write=False) as session:
        assert list(session.scalars(select(TriggerEvent.account_id).where(
            TriggerEvent.code == REFERRAL_REWARDED))) == [api.account()["id"]]
    replay = api.post("/api/v1/accrue", {**BORIS, "amount": "1000",
                                         "referral_code": code.lower()}, key="boris-1")
    assert replay.status_code == 200 and replay.json["duplicate"] is True
    assert "referral" not in replay.json  # a repeat links nothing
    assert api.balance() == "330.00"


def test_a_refused_repeat_of_a_key_links_nobody(api: Api, services: Services) -> None:
    api.accrue("1000", key="order-1")  # Anna's purchase under the key
    api.accrue("1000", key="vera-1", ref=VERA)
    code = api.account(VERA)["referral_code"]
    # Boris, new, sends the same key with Vera's code: a conflict, and nothing of it stays.
    other = api.post("/api/v1/accrue", {**BORIS, "amount": "900", "referral_code": code},
                     key="order-1")
    assert (other.status_code, other.json["error"]) == (409, "idempotency_conflict")
    with services.db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM referral_events")).scalar() == 0
    assert services.ledger.account_id(AccountRef(**BORIS)) is None
    assert api.account(VERA)["referrals"]["invited"] == 0


@pytest.mark.parametrize(("code", "outcome"), [
    ("2222 2222", "unknown"), ("no such thing", "invalid")], ids=["unknown", "invalid"])
def test_a_code_that_cannot_link_never_refuses_the_purchase(api: Api, code: str,
                                                            outcome: str) -> None:
    result = api.accrue("1000", key="boris-1", ref=BORIS, referral_code=code)
    assert result["referral"]["outcome"] == outcome and result["referral"]["detail"]
    assert result["points"] == "30.00" and api.account(BORIS)["referred_by"] is None


def test_a_self_referral_is_answered_not_refused(api: Api) -> None:
    api.accrue("1000", key="anna-1")
    code = api.account()["referral_code"]
    result = api.accrue("1000", key="anna-2", referral_code=code)
    assert result["referral"]["outcome"] == "self" and api.balance() == "60.00"


def test_preview_checks_a_code_and_writes_nothing(api: Api) -> None:
    api.accrue("1000", key="anna-1")
    code = api.account()["referral_code"]
    valid = api.post("/api/v1/preview", {**VERA, "amount": "1000", "referral_code": code})
    assert valid.status_code == 200
    assert valid.json["referral"] == {"outcome": "valid", "code": code, "detail": "",
                                      "newcomer_bonus": "100.00"}
    unknown = api.post("/api/v1/preview", {"amount": "1000", "referral_code": "22222222"})
    assert unknown.json["referral"]["outcome"] == "unknown"
    assert api.get(account_path(VERA)).status_code == 404


def test_a_referral_code_that_is_not_text_is_400(api: Api) -> None:
    response = api.post("/api/v1/accrue", {**BORIS, "amount": "1", "referral_code": 5},
                        key="k")
    assert response.status_code == 400 and response.json["detail"].startswith("referral_code:")
    assert api.get(account_path(BORIS)).status_code == 404
