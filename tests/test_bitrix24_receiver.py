"""POST /bitrix24/events and /bitrix24/robots: authenticate, store, answer at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from connector.config import Settings
from mappings.phpquery import encode
from tests.conftest import fresh_services, make_settings
from webhooks import create_app

TOKEN = "51856fefc120afa4b628cc82d3935cce"
MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def b24_settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url, bitrix24={
        "enabled": True, "webhook_url": "https://acme.bitrix24.ru/rest/1/hooksecret0001/",
        "application_token": TOKEN, "member_id": MEMBER})


@pytest.fixture
def app(b24_settings: Settings) -> Flask:
    return create_app(services=fresh_services(b24_settings))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def event_body(event: str = "ONCRMDEALUPDATE", entity: str = "759", *,
               token: str = TOKEN, member: str = MEMBER,
               domain: str = "acme.bitrix24.ru") -> str:
    return encode({"event": event, "event_handler_id": "201",
                   "data": {"FIELDS": {"ID": entity}}, "ts": "1736405807",
                   "auth": {"domain": domain, "member_id": member,
                            "application_token": token}})


def inbox(app: Flask) -> list[Any]:
    return app.extensions["loyalty"].inbox.list()


def test_an_event_is_stored_before_it_is_acknowledged(client: FlaskClient, app: Flask) -> None:
    body = event_body()
    response = client.post("/bitrix24/events", data=body, content_type=FORM)
    assert response.status_code == 200 and response.json["status"] == "accepted"
    [stored] = inbox(app)
    assert stored.id == response.json["id"] and stored.kind == "ONCRMDEALUPDATE"
    assert stored.body == body.encode() and stored.status == "pending"


def test_repeated_deliveries_are_all_kept(client: FlaskClient, app: Flask) -> None:
    for _ in range(2):
        assert client.post("/bitrix24/events", data=event_body(),
                           content_type=FORM).status_code == 200
    assert len(inbox(app)) == 2


@pytest.mark.parametrize(("body", "status", "code"), [
    (event_body(token="forged0000000000000000000000000"), 401, "unauthorized"),
    (event_body(member="someone-else"), 401, "unauthorized"),
    (event_body(token=""), 401, "unauthorized"),
    (event_body(domain="evil.example"), 401, "unauthorized"),
    (event_body(domain="acme.bitrix24.ru.evil.example"), 401, "unauthorized"),
    (event_body(domain="acme.bitrix24.ru@evil.example"), 401, "unauthorized"),
    (event_body(domain="evil.example/acme.bitrix24.ru"), 401, "unauthorized"),
    (event_body(domain="acme.bitrix24.ru:8443"), 401, "unauthorized"),
    ("event=ONCRMDEALUPDATE&data[FIELDS][ID]=x", 400, "invalid_event"),
    ("a" + "[b]" * 30 + "=1", 400, "malformed_body"),
    ("event=ONCRMDEALUPDATE&data[FIELDS]=1&data[FIELDS][ID]=5", 400, "invalid_event"),
    (b"event=\xff\xfe", 400, "malformed_body"),
    ("event=%FF%FE", 400, "malformed_body"),
], ids=["forged-token", "other-portal", "no-token", "other-domain", "domain-suffix",
        "domain-user-part", "domain-path", "domain-port", "bad-id", "deep-nesting",
        "mixed-keys", "invalid-utf8", "invalid-utf8-escaped"])
def test_bad_requests_are_refused_logged_and_stored_nowhere(
        client: FlaskClient, app: Flask, body: Any, status: int, code: str,
        caplog: pytest.LogCaptureFixture) -> None:
    response = client.post("/bitrix24/events", data=body, content_type=FORM)
    assert (response.status_code, response.json["error"]) == (status, code)
    assert TOKEN not in response.get_data(as_text=True)
    assert inbox(app) == []
    [logged] = [r for r in caplog.records if r.name == "webhooks.bitrix24"]
    assert f"refused: {status} {code}" in logged.getMessage()
    assert TOKEN not in logged.getMessage()


@pytest.mark.parametrize("domain", ["ACME.Bitrix24.RU", "https://acme.bitrix24.ru/",
                                    "acme.bitrix24.ru:443", "acme.bitrix24.ru."])
def test_the_portal_domain_is_compared_normalised(client: FlaskClient, domain: str) -> None:
    response = client.post("/bitrix24/events", data=event_body(domain=domain),
                           content_type=FORM)
    assert response.status_code == 200


def test_json_is_not_what_bitrix24_sends(client: FlaskClient, app: Flask) -> None:
    response = client.post("/bitrix24/events", json={"event": "ONCRMDEALUPDATE"})
    assert response.status_code == 415 and inbox(app) == []


def test_an_oversized_body_is_refused(client: FlaskClient, app: Flask) -> None:
    response = client.post("/bitrix24/events", data="x=" + "a" * 2_000_000, content_type=FORM)
    assert response.status_code == 413 and inbox(app) == []


def robot_body(token: str = TOKEN, event_token: str = "664fa13b|A40364|MS1ekdI0") -> str:
    return encode({
        "workflow_id": "664fa13bbbb410.99176768", "code": "loyalty_redeem",
        "document_id": ["crm", "CCrmDocumentDeal", "DEAL_123"],
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"], "event_token": event_token,
        "properties": {"amount": "100"}, "use_subscription": "Y", "timeout_duration": "660",
        "ts": "1716494651",
        "auth": {"domain": "acme.bitrix24.ru", "member_id": MEMBER,
                 "application_token": token}})


def test_a_robot_call_is_stored_once_per_event_token(client: FlaskClient, app: Flask) -> None:
    first = client.post("/bitrix24/robots", data=robot_body(), content_type=FORM)
    again = client.post("/bitrix24/robots", data=robot_body(), content_type=FORM)
    assert first.status_code == again.status_code == 200
    assert again.json == {**first.json, "duplicate": True}
    [stored] = inbox(app)
    assert stored.kind == "robot:loyalty_redeem"
    forged = client.post("/bitrix24/robots", data=robot_body(token="x" * 32), content_type=FORM)
    assert forged.status_code == 401 and len(inbox(app)) == 1


def install_body(domain: str = "acme.bitrix24.ru") -> str:
    return encode({"event": "ONAPPINSTALL", "data": {"VERSION": "1"}, "ts": "1",
                   "auth": {"domain": domain, "member_id": MEMBER, "application_token": TOKEN,
                            "access_token": "at", "refresh_token": "rt", "expires_in": "3600",
                            "client_endpoint": f"https://{domain}/rest/"}})


def test_app_install_is_accepted_before_a_token_is_known_from_the_portal_only(
        tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, bitrix24={
        "enabled": True, "client_id": "local.1", "client_secret": "app-secret-value",
        "portal": "acme.bitrix24.ru"})
    app = create_app(services=fresh_services(settings))
    client = app.test_client()
    assert client.post("/bitrix24/events", data=event_body(),
                       content_type=FORM).status_code == 401
    forged = client.post("/bitrix24/events", data=install_body("evil.example"),
                         content_type=FORM)
    assert (forged.status_code, forged.json["detail"]) == (
        401, "auth[domain] is not the configured portal")
    assert inbox(app) == []
    assert client.post("/bitrix24/events", data=install_body(),
                       content_type=FORM).status_code == 200


def test_receivers_are_absent_while_bitrix24_is_disabled(tmp_path: Path,
                                                        database_url: str) -> None:
    client = create_app(services=fresh_services(make_settings(tmp_path, database_url))
                        ).test_client()
    response = client.post("/bitrix24/events", data=event_body(), content_type=FORM)
    assert response.status_code == 404
