"""webhooks.intake: the hot receivers answered below Flask, as the Flask routes answered."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, run_wsgi_app

from connector.config import Settings
from connector.services import Services
from tests.conftest import fresh_services, make_settings
from tests.test_bitrix24_receiver import FORM, MEMBER, TOKEN, event_body
from webhooks import create_app

AMO_SECRET = "IntakeSecret0123456789"
AMO_BODY = ("leads%5Bstatus%5D%5B0%5D%5Bid%5D=5&leads%5Bstatus%5D%5B0%5D%5Bstatus_id%5D=142"
            "&leads%5Bstatus%5D%5B0%5D%5Bpipeline_id%5D=1&account%5Bsubdomain%5D=acme")
WEBHOOK = f"/amocrm/webhooks/{AMO_SECRET}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path, database_url,
        bitrix24={"enabled": True, "webhook_url": "https://acme.bitrix24.ru/rest/1/hook0001/",
                  "application_token": TOKEN, "member_id": MEMBER},
        amocrm={"enabled": True, "base_url": "https://acme.amocrm.ru",
                "long_lived_token": "long-lived", "webhook_secret": AMO_SECRET})


@pytest.fixture
def services(settings: Settings) -> Services:
    return fresh_services(settings)


def stored(app: Flask) -> int:
    return sum(app.extensions["loyalty"].inbox.depth().values())


@pytest.mark.parametrize(("path", "body", "answer"), [
    ("/bitrix24/events", event_body(), {"status", "id"}),
    (WEBHOOK, AMO_BODY, {"status", "id", "duplicate"}),
])
def test_accepted_with_the_json_and_headers_flask_gave(client: FlaskClient, app: Flask,
                                                       path: str, body: str,
                                                       answer: set[str]) -> None:
    response = client.post(path, data=body, content_type=FORM,
                           headers={"X-Request-Id": "crm-delivery-7"})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert set(response.json) == answer and response.json["status"] == "accepted"
    assert response.headers["X-Request-Id"] == "crm-delivery-7"
    assert stored(app) == 1


def test_a_request_id_is_made_when_none_is_sent(client: FlaskClient) -> None:
    first = client.post("/bitrix24/events", data=event_body(), content_type=FORM)
    second = client.post("/bitrix24/events", data=event_body(), content_type=FORM)
    ids = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)


@pytest.mark.parametrize("path", ["/bitrix24/events", WEBHOOK])
def test_another_method_is_a_json_405_with_allow(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 405 and response.headers["Allow"] == "OPTIONS, POST"
    assert response.json["error"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/bitrix24/events", WEBHOOK])
def test_options_is_answered_as_flask_answers_it(client: FlaskClient, path: str) -> None:
    response = client.options(path)
    assert (response.status_code, response.headers["Allow"], response.data) == (
        200, "OPTIONS, POST", b"")


def test_a_disabled_bitrix24_is_404_for_options_too(tmp_path: Path,
                                                   database_url: str) -> None:
    app = create_app(services=fresh_services(make_settings(tmp_path, database_url)))
    for method in ("OPTIONS", "POST"):
        response = app.test_client().open("/bitrix24/events", method=method,
                                          data=event_body(), content_type=FORM)
        assert response.status_code == 404 and response.json["error"] == "not_found"


def test_head_gets_the_headers_without_a_body_on_a_kept_connection(
        services: Services) -> None:
    """A body after a HEAD answer would be read as the start of the next answer."""
    app = create_app(services=services)
    status: list[str] = []
    environ = EnvironBuilder(path="/bitrix24/events", method="HEAD").get_environ()
    chunks = list(app.wsgi_app(environ, lambda s, h, e=None: status.append(s)))
    assert status == ["405 METHOD NOT ALLOWED"] and b"".join(chunks) == b""


def test_a_wrong_content_type_is_refused_before_the_body_is_read(client: FlaskClient,
                                                                app: Flask) -> None:
    huge = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    for path in ("/bitrix24/events", WEBHOOK):
        response = client.post(path, data=huge, content_type="text/plain")
        assert response.status_code == 415, path
    assert stored(app) == 0


def test_a_client_gone_mid_body_is_a_400_not_a_logged_500(
        app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """Servers that stream the body (gunicorn, the development server) end it early."""
    body = event_body().encode()
    environ = EnvironBuilder(path="/bitrix24/events", method="POST", data=body[:20],
                             content_type=FORM).get_environ()
    environ["CONTENT_LENGTH"] = str(len(body))  # promised, never delivered
    with caplog.at_level(logging.ERROR):
        answer, status, _ = run_wsgi_app(app.wsgi_app, environ)
    assert status.startswith("400 ")
    assert json.loads(b"".join(answer))["error"] == "bad_request"
    assert caplog.records == [] and stored(app) == 0


def test_answers_are_written_as_flask_writes_json(client: FlaskClient) -> None:
    response = client.post(WEBHOOK, data=AMO_BODY, content_type=FORM)
    assert response.data.decode() == (
        f'{{"duplicate":false,"id":{response.json["id"]},"status":"accepted"}}\n')


@pytest.mark.parametrize("path", ["/bitrix24/events/", "/bitrix24/events/x",
                                  "/amocrm/webhooks/", f"{WEBHOOK}/more"])
def test_near_misses_are_flask_404s(client: FlaskClient, app: Flask, path: str) -> None:
    response = client.post(path, data=event_body(), content_type=FORM)
    assert response.status_code == 404 and response.json["error"] == "not_found"
    assert stored(app) == 0


@pytest.mark.parametrize(("path", "merged"), [
    ("/amocrm/webhooks//x", "/amocrm/webhooks/x"),
    ("/amocrm//webhooks/x", "/amocrm/webhooks/x"),
    ("/bitrix24//events", "/bitrix24/events"),
])
def test_doubled_slashes_are_redirected_with_the_requests_own_url(
        services: Services, path: str, merged: str) -> None:
    app = create_app(services=services)
    environ = EnvironBuilder(path=path, method="POST", base_url="https://crm.example.com/loy",
                             query_string="a=1", data=AMO_BODY, content_type=FORM,
                             headers={"X-Request-Id": "r-1"}).get_environ()
    _, status, headers = run_wsgi_app(app.wsgi_app, environ)
    assert status.startswith("308 ")
    assert headers["Location"] == f"https://crm.example.com/loy{merged}?a=1"
    assert headers["X-Request-Id"] == "r-1" and stored(app) == 0


def test_other_routes_pass_through_to_flask(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code in (200, 503) and "X-Request-Id" in response.headers


def test_a_storage_failure_is_a_logged_json_500_without_the_body(
        client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def down(**_: object) -> None:
        raise RuntimeError("the inbox write was interrupted")  # a database outage is a 503

    monkeypatch.setattr(app.extensions["loyalty"].inbox, "put", down)
    with caplog.at_level(logging.ERROR):
        response = client.post("/bitrix24/events", data=event_body(), content_type=FORM)
    assert response.status_code == 500 and response.json == {"error": "internal_error"}
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "unhandled RuntimeError on POST /bitrix24/events"
    assert TOKEN not in caplog.text


def test_the_intake_routes_are_listed_for_audits(app: Flask) -> None:
    rules = {rule.rule: rule.methods for rule in app.extensions["intake"].url_map.iter_rules()}
    assert rules == {"/bitrix24/events": {"OPTIONS", "POST"},
                     "/amocrm/webhooks/<secret>": {"OPTIONS", "POST"}}
    flask_rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert not flask_rules & set(rules)  # one way in for each
