"""GET /healthz: 200 when the database answers and is migrated, 503 otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from connector.config import Settings
from connector.db import Database
from connector.services import Services
from tests.conftest import make_settings
from webhooks import create_app


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
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"database": "ok"}}


def test_healthz_needs_no_token(client: FlaskClient) -> None:
    assert client.get("/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 200


def test_healthz_is_503_before_the_schema_is_migrated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/never-upgraded.db")
    with running(settings) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json["status"] == "unhealthy"
        assert response.json["checks"]["database"].startswith("database schema is at nothing")


def test_healthz_is_503_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()  # SQLite cannot open a directory as its file
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/a-directory")
    with running(settings) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json["checks"]["database"] == "database unreachable: OperationalError"
