"""GET /healthz: 200 when the database answers and is migrated, 503 otherwise; the checks
behind the answer only for the metrics or admin token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from connector.config import Settings
from connector.db import Database
from connector.services import Services
from tests.conftest import fresh_services, make_settings
from webhooks import create_app

ADMIN = {"Authorization": "Bearer test-admin-token"}
METRICS_TOKEN = "metrics-token-0123456789"


@contextmanager
def running(settings: Settings) -> Iterator[FlaskClient]:
    services = Services.build(settings)
    try:
        yield create_app(services=services).test_client()
    finally:
        services.close()


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[FlaskClient]:
    with running(settings) as client:  # `db` has migrated the database
        yield client


def test_healthz_is_ok_on_a_migrated_database(client: FlaskClient) -> None:
    response = client.get("/healthz", headers=ADMIN)
    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"database": "ok"}}


def test_healthz_needs_no_token_and_shows_only_the_status_without_one(
        client: FlaskClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic dXNlcjp0ZXN0LWFkbWluLXRva2Vu"}):
        response = client.get("/healthz", headers=headers)
        assert (response.status_code, response.json) == (200, {"status": "ok"})


def test_healthz_is_503_before_the_schema_is_migrated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/never-upgraded.db",
                             server={"admin_token": "test-admin-token"})
    with running(settings) as client:
        response = client.get("/healthz", headers=ADMIN)
        assert response.status_code == 503
        assert response.json["status"] == "unhealthy"
        assert response.json["checks"]["database"].startswith("database schema is at nothing")
        anonymous = client.get("/healthz")
        assert (anonymous.status_code, anonymous.json) == (503, {"status": "unhealthy"})


def test_healthz_is_503_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()  # SQLite cannot open a directory as its file
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/a-directory",
                             server={"admin_token": "test-admin-token"})
    with running(settings) as client:
        response = client.get("/healthz", headers=ADMIN)
        assert response.status_code == 503
        assert response.json["checks"]["database"] == "database unreachable: OperationalError"
        assert client.get("/healthz").json == {"status": "unhealthy"}


def test_crm_credential_details_need_the_metrics_or_admin_token(
        tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, server={
        "admin_token": "test-admin-token", "metrics_token": METRICS_TOKEN}, bitrix24={
        "enabled": True, "client_id": "local.1", "client_secret": "app-secret-value",
        "portal": "acme.bitrix24.ru"})
    services = fresh_services(settings)
    try:
        client = create_app(services=services).test_client()
        anonymous = client.get("/healthz")
        assert (anonymous.status_code, anonymous.json) == (503, {"status": "unhealthy"})
        assert "authorized" not in anonymous.get_data(as_text=True)
        for token in (METRICS_TOKEN, "test-admin-token"):
            shown = client.get("/healthz", headers={"Authorization": f"Bearer {token}"})
            assert shown.status_code == 503
            assert shown.json["checks"]["bitrix24"].startswith("not authorized yet")
    finally:
        services.close()
