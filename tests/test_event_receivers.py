"""The two event receivers, POST /bitrix24/events and POST /amocrm/webhooks/<secret>: their
answers, errors, request ids and metrics, and that nothing refused is stored."""

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

AMO_SECRET = "EventsSecret0123456789"
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
def test_accepted_with_the_json_and_request_id(client: FlaskClient, app: Flask, path: str,
                                               body: str, answer: set[str]) -> None:
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
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert response.json["error"] == "method_not_allowed"
    assert "X-Request-Id" in response.headers


def test_a_disabled_bitrix24_is_404_for_options_too(tmp_path: Path,
                                                   database_url: str) -> None:
    app = create_app(services=fresh_services(make_settings(tmp_path, database_url)))
    for method in ("OPTIONS", "POST"):
        response = app.test_client().open("/bitrix24/events", method=method,
                                          data=event_body(), content_type=FORM)
        assert response.status_code == 404 and response.json["error"] == "not_found"
    assert stored(app) == 0


def test_a_wrong_secret_is_the_404_of_an_unknown_url(client: FlaskClient, app: Flask) -> None:
    wrong = client.post("/amocrm/webhooks/Wrong0secret000000000", data=AMO_BODY,
                        content_type=FORM)
    unknown = client.post("/no/such/page", data=AMO_BODY, content_type=FORM)
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.json == unknown.json and wrong.json["error"] == "not_found"
    assert stored(app) == 0


@pytest.mark.parametrize("path", ["/bitrix24/events", WEBHOOK])
def test_a_body_past_the_limit_is_a_json_413(client: FlaskClient, app: Flask,
                                             path: str) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post(path, data="x=" + "a" * limit, content_type=FORM)
    assert response.status_code == 413 and response.json["error"] == "body_too_large"
    assert "server.max_body_bytes" in response.json["detail"]
    assert stored(app) == 0


def test_a_streamed_body_cut_at_the_limit_is_a_413_not_an_event(app: Flask) -> None:
    """A body without Content-Length (chunked) is cut at the limit by werkzeug: a cut body
    must not pass for the whole one."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    environ = EnvironBuilder(path="/bitrix24/events", method="POST",
                             data=event_body().encode() + b"&x=" + b"a" * limit,
                             content_type=FORM).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    answer, status, _ = run_wsgi_app(app.wsgi_app, environ)
    assert status.startswith("413 ")
    assert json.loads(b"".join(answer))["error"] == "body_too_large"
    assert stored(app) == 0


def test_a_wrong_content_type_is_refused_before_the_body_is_read(client: FlaskClient,
                                                                app: Flask) -> None:
    huge = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    for path in ("/bitrix24/events", WEBHOOK):
        response = client.post(path, data=huge, content_type="text/plain")
        assert response.status_code == 415, path
        assert response.json["error"] == "unsupported_media_type"
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


@pytest.mark.parametrize("path", ["/bitrix24/events/", "/bitrix24/events/x",
                                  "/amocrm/webhooks/", f"{WEBHOOK}/more"])
def test_near_misses_are_404s(client: FlaskClient, app: Flask, path: str) -> None:
    response = client.post(path, data=event_body(), content_type=FORM)
    assert response.status_code == 404 and response.json["error"] == "not_found"
    assert stored(app) == 0


def test_requests_are_counted_under_the_route_without_its_secret(services: Services,
                                                                 app: Flask) -> None:
    web = app.test_client()
    web.post("/bitrix24/events", data=event_body(), content_type=FORM)
    web.post(WEBHOOK, data=AMO_BODY, content_type=FORM)
    web.post(WEBHOOK, data=AMO_BODY, content_type="text/plain")
    web.get(WEBHOOK)
    exposition = services.metrics.exposition().decode()
    counted = {line.split(" ")[0] for line in exposition.splitlines()
               if line.startswith("loyalty_http_requests_total{")}
    assert counted == {
        'loyalty_http_requests_total{endpoint="/bitrix24/events",status="200"}',
        'loyalty_http_requests_total{endpoint="/amocrm/webhooks/<secret>",status="200"}',
        'loyalty_http_requests_total{endpoint="/amocrm/webhooks/<secret>",status="415"}',
        'loyalty_http_requests_total{endpoint="unmatched",status="405"}',
    }
    assert AMO_SECRET not in exposition


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
