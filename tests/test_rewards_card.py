"""Claiming a reward from the customer's card page, and the tier's perks shown there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from connector.config import Settings
from connector.ledger.views import AccountRef
from connector.services import Services
from tests.conftest import Clock, fresh_services, make_settings
from tests.test_card_page import HTML, text_of

SECRET = "card-secret-0123456789abcdefghijklmnop"
ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "7")
TIERS = [{"name": "Bronze", "rate": "0.03", "perks": ["Free coffee"]},
         {"name": "Gold", "min_spend": 100000, "rate": "0.07",
          "perks": ["Free delivery", "Personal manager"]}]


@pytest.fixture
def language() -> str:
    return "en"  # the wording read here is English; the Russian test says otherwise


@pytest.fixture
def settings(tmp_path: Path, database_url: str, language: str) -> Settings:
    return make_settings(
        tmp_path, database_url, server={"public_url": "https://loyalty.example.com"},
        card={"secret": SECRET, "rate_limit": "1000/minute"},
        program={"language": language, "tiers": TIERS, "rewards": [
            {"id": "mug", "name": "Branded mug", "cost": 300, "stock": 1},
            {"id": "lounge", "name": "Lounge pass", "cost": 10, "tier": "Gold"},
            {"id": "yacht", "name": "Yacht day", "cost": 100000}]})


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = fresh_services(settings, clock=Clock(datetime(2026, 3, 10, 9, 0, tzinfo=UTC)))
    built.ledger.adjust(ANNA, D("500"), key="fund", reason="test")
    yield built
    built.close()


@pytest.fixture
def url(services: Services) -> str:
    return services.cards.link(ANNA).url.removeprefix("https://loyalty.example.com")


def form(html: str, reward: str) -> tuple[str, str]:
    found = re.search(rf'<form method="post" action="([^"]+/{reward})"><input type="hidden" '
                      r'name="key" value="([^"]+)">', html)
    assert found is not None, html
    return found.group(1), found.group(2)


def test_the_page_offers_rewards_says_why_not_and_shows_perks(client: FlaskClient,
                                                              url: str) -> None:
    page = client.get(url, headers=HTML)
    assert page.status_code == 200
    text = text_of(page.get_data(as_text=True))
    assert "Perks of your tier Free coffee" in text and "Free delivery" not in text
    assert "Branded mug Get it for 300 points" in text
    assert "Lounge pass For Gold and above." in text
    assert "Yacht day Not enough points." in text
    assert "form-action 'self'" in page.headers["Content-Security-Policy"]


def test_claim_from_the_page_once_per_form_and_show_the_code(
        client: FlaskClient, url: str, services: Services) -> None:
    action, key = form(client.get(url, headers=HTML).get_data(as_text=True), "mug")
    claimed = client.post(action, data={"key": key}, headers=HTML)
    assert claimed.status_code == 201
    [claim] = services.claims.list()
    assert claim.via == "card" and claim.ref == ANNA
    text = text_of(claimed.get_data(as_text=True))
    assert f"Done! Branded mug: show code {claim.code} to staff." in text
    assert f"Waiting for you Branded mug code {claim.code}" in text
    again = client.post(action, data={"key": key}, headers=HTML)  # a reload of the answer
    assert again.status_code == 200
    assert services.ledger.account(ANNA).balance == D("200.00")
    assert len(services.claims.list()) == 1
    fresh = client.get(url, headers=HTML).get_data(as_text=True)
    assert "Branded mug Out of stock." in text_of(fresh)


def test_the_same_form_after_staff_cancelled_the_claim_says_so(
        client: FlaskClient, url: str, services: Services) -> None:
    action, key = form(client.get(url, headers=HTML).get_data(as_text=True), "mug")
    client.post(action, data={"key": key}, headers=HTML)
    code = services.claims.list()[0].code
    services.claims.cancel(code, actor="staff")
    again = client.post(action, data={"key": key}, headers=HTML)  # the tab left open, resent
    text = text_of(again.get_data(as_text=True))
    assert again.status_code == 200
    assert "Branded mug: this claim was cancelled and its points returned." in text
    assert "Done!" not in text and code not in text
    assert 'class="notice refused"' in again.get_data(as_text=True)
    as_json = client.post(action, data={"key": key}, headers={"Accept": "application/json"})
    assert as_json.status_code == 200 and as_json.json["ok"] is False
    assert as_json.json["claim"]["status"] == "cancelled"
    assert as_json.json["notice"] == ("Branded mug: this claim was cancelled and its points "
                                      "returned.")
    # Nothing was claimed again: the points went back once, the unit is offered again.
    assert services.ledger.account(ANNA).balance == D("500.00")
    assert len(services.claims.list()) == 1
    assert "Branded mug Get it for 300 points" in text


def test_the_same_form_after_the_reward_was_handed_over_says_so(
        client: FlaskClient, url: str, services: Services) -> None:
    action, key = form(client.get(url, headers=HTML).get_data(as_text=True), "mug")
    client.post(action, data={"key": key}, headers=HTML)
    services.claims.handed(services.claims.list()[0].code, actor="staff")
    again = client.post(action, data={"key": key}, headers=HTML)
    text = text_of(again.get_data(as_text=True))
    assert again.status_code == 200 and "Branded mug: handed over already." in text
    assert "Done!" not in text


@pytest.mark.parametrize(("language", "cancelled", "handed"), [
    ("ru", "Branded mug: получение отменено, баллы возвращены.", "Branded mug: уже выдано."),
    ("uk", "Branded mug: отримання скасовано, бали повернуто.", "Branded mug: уже видано.")])
def test_a_cancelled_or_handed_claim_is_told_in_the_programs_language(
        client: FlaskClient, url: str, services: Services, cancelled: str, handed: str) -> None:
    forms = []
    for staff in (services.claims.cancel, services.claims.handed):  # the points come back
        action, key = form(client.get(url, headers=HTML).get_data(as_text=True), "mug")
        client.post(action, data={"key": key}, headers=HTML)
        staff(services.claims.list()[0].code, actor="staff")
        forms.append((action, key))
    said = [text_of(client.post(action, data={"key": key}, headers=HTML)
                    .get_data(as_text=True)) for action, key in forms]
    assert [(cancelled in text, handed in text) for text in said] == [(True, False),
                                                                     (False, True)]


def test_refused_claims_say_why_and_bad_forms_are_refused(
        client: FlaskClient, url: str, services: Services) -> None:
    key = "k" * 20
    refused = client.post(f"{url}/rewards/lounge", data={"key": key}, headers=HTML)
    assert refused.status_code == 409
    assert "For Gold and above." in text_of(refused.get_data(as_text=True))
    as_json = client.post(f"{url}/rewards/yacht", data={"key": key},
                          headers={"Accept": "application/json"})
    assert as_json.status_code == 409 and as_json.json["detail"] == "Not enough points."
    assert client.post(f"{url}/rewards/mug", data={"key": "short"}).status_code == 400
    assert client.post(f"{url}/rewards/nothing", data={"key": key},
                       headers=HTML).status_code == 404
    assert client.post("/card/not-a-token/rewards/mug", data={"key": key}).status_code == 404
    assert services.ledger.account(ANNA).balance == D("500.00")


@pytest.mark.parametrize("language", ["ru"])
def test_the_rewards_in_russian_and_json_refusals_in_english(client: FlaskClient,
                                                             url: str) -> None:
    text = text_of(client.get(url, headers=HTML).get_data(as_text=True))
    assert "Привилегии уровня Free coffee" in text
    assert "Branded mug Получить за 300 баллов" in text
    assert "Lounge pass Доступно с уровня «Gold»." in text
    assert "Yacht day Не хватает баллов." in text
    key = "k" * 20
    refused = client.post(f"{url}/rewards/yacht", data={"key": key}, headers=HTML)
    assert refused.status_code == 409
    assert "Не хватает баллов." in text_of(refused.get_data(as_text=True))
    as_json = client.post(f"{url}/rewards/lounge", data={"key": key},
                          headers={"Accept": "application/json"})
    assert as_json.status_code == 409 and as_json.json["detail"] == "For Gold and above."
    action, form_key = form(client.get(url, headers=HTML).get_data(as_text=True), "mug")
    claimed = client.post(action, data={"key": form_key}, headers={"Accept": "application/json"})
    assert claimed.status_code == 201
    assert claimed.json["notice"] == (f"Done! Branded mug: show code "
                                      f"{claimed.json['claim']['code']} to staff.")
