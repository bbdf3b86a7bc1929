"""Schemathesis against /api/v1 in-process (WSGI), from the app's own OpenAPI description:
generated valid and invalid requests, with the bearer token, never get a 5xx, and every
answer matches the description (status, content type, body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from hypothesis import HealthCheck, settings

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


@schema.parametrize()
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_conforms_to_its_description(case: schemathesis.Case, wsgi_app: Flask) -> None:
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

