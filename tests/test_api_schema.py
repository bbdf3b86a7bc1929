"""Schemathesis against /api/v1 in-process (WSGI), from the app's own OpenAPI description:
generated valid and invalid requests, with the bearer token, never get a 5xx, and every
answer matches the description (status, content type, body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, assume, settings

from connector.services import Services
from tests.conftest import fresh_services, make_settings
from webhooks import create_app
from webhooks.openapi import PATH, spec

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

TOKEN = "schema-admin-token"
CHECKS = [not_a_server_error, status_code_conformance,
          content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


def _app(tmp_path: Path) -> tuple[Flask, Services]:
    services = fresh_services(make_settings(tmp_path, server={"admin_token": TOKEN},
                                            program={"bonuses": {"review": "50"}},
                                            card={"secret": "schema-card-secret-" * 2}))
    return create_app(services=services), services


@pytest.fixture(scope="module")
def wsgi_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    # One app for every generated case: the ledger fills up as schemathesis goes, so
    # later cases also meet existing accounts and repeated keys.
    app, services = _app(tmp_path_factory.mktemp("schema"))
    yield app
    services.close()


# Built from the description itself, not fetched: the pytest plugin's lazy, fixture-based
# loader does not run under this pytest; the app under test is given to each call instead.
schema = schemathesis.openapi.from_dict(spec())


def serialized_away(query: dict[str, Any] | None) -> list[str]:
    """The query parameters of a generated case that the request never carries: an empty
    list (or None) is sent as no parameter at all. A negative case whose only invalid part
    is such an undeclared parameter (e.g. {"open": "0", "": []}, its missing Authorization
    header put back by this test's own) reaches the API as a valid request, which rightly
    answers 200: schemathesis would report it as negative data accepted."""
    return [name for name, value in (query or {}).items() if value is None or value == []]


@schema.parametrize()
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_conforms_to_its_description(case: schemathesis.Case, wsgi_app: Flask) -> None:
    assume(not serialized_away(case.query))
    case.call_and_validate(app=wsgi_app, headers={"Authorization": f"Bearer {TOKEN}"},
                           checks=CHECKS)


def test_the_description_is_served_without_a_token_and_is_valid(tmp_path: Path) -> None:
    app, services = _app(tmp_path)
    response = app.test_client().get(PATH)
    services.close()
    assert response.status_code == 200 and response.json == spec()
    loaded = schemathesis.openapi.from_dict(response.json)
    loaded.validate()  # against the OpenAPI 3.1 meta-schema
    operations = {(op.method.upper(), op.path) for op in
                  (result.ok() for result in loaded.get_all_operations())}
    api_rules = {(method, rule.rule.replace("<", "{").replace(">", "}"))
                 for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
                 and rule.rule != PATH
                 for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert operations == api_rules  # every route is described, and nothing else



def test_an_undescribed_query_parameter_is_refused_unless_it_is_never_sent(
        wsgi_app: Flask) -> None:
    """The case that once failed on GET /api/v1/claims: {"open": "0", "": []} is sent as
    ?open=0 (a valid request, 200); any undescribed parameter the request does carry, an
    empty-named one included, is a 400 the description lists."""
    client = wsgi_app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert serialized_away({"open": "0", "": []}) == [""]
    assert serialized_away({"open": "0"}) == []
    assert client.get("/api/v1/claims?open=0", headers=headers).status_code == 200
    for query in ("open=0&=", "open=0&=x", "open=0&x", "x=1"):
        refused = client.get(f"/api/v1/claims?{query}", headers=headers)
        assert refused.status_code == 400, query
        assert refused.json["error"] == "invalid_request"
        assert "unknown query parameter" in refused.json["detail"]
    assert "400" in spec()["paths"]["/api/v1/claims"]["get"]["responses"]
