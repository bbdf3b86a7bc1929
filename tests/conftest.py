"""Shared fixtures: settings -> database -> ledger, and app -> client for the web tier.

Storage tests run on SQLite always and on PostgreSQL too when LOYALTY_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from waitress.server import create_server
from werkzeug.test import TestResponse

from connector.cli import cli
from connector.config import Settings, load_settings
from connector.db import Database
from connector.ledger.engine import Ledger
from connector.program import Program
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM
from connector.sealing import Sealer, key_source
from connector.services import Services
from connector.tables import Base
from webhooks import create_app

POSTGRES_URL = os.environ.get("LOYALTY_TEST_DATABASE_URL")
BACKENDS = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]
# PostgreSQL wants the key given (SQLite tests use the key file made beside the database);
# commands started as processes take it from the environment.
TOKEN = "test-admin-token"
ANNA = {"crm": "bitrix24", "portal": "acme.bitrix24.ru", "contact_id": "101"}
TEST_SECRET_KEY = "0f3HUz0BGtF7kSE2l1oVh0sZ9oFUQ5yHMBbd9U-8A4s="


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 10, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def account_path(ref: dict[str, str]) -> str:
    return f"/api/v1/accounts/{ref['crm']}/{ref['portal']}/{ref['contact_id']}"


def make_settings(tmp_path: Path, database_url: str | None = None, **sections: Any) -> Settings:
    sections.setdefault("database", {})
    sections["database"].setdefault("url", database_url or f"sqlite:///{tmp_path}/test.db")
    if POSTGRES_URL and sections["database"]["url"] == POSTGRES_URL:
        # Also for fixtures built before the environment below is set (module scope).
        sections.setdefault("secret_key", TEST_SECRET_KEY)
    return load_settings(None, **sections)


@pytest.fixture(scope="session", autouse=True)
def _empty_postgres() -> None:
    """A run starts from an empty PostgreSQL database: tables or a migration stamp left by
    another checkout (another revision chain) must not decide this run's outcome."""
    if not POSTGRES_URL:
        return
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read a developer's config.toml or LOYALTY_* overrides."""
    for name in list(os.environ):
        if name.startswith("LOYALTY_") and name != "LOYALTY_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    if POSTGRES_URL:
        monkeypatch.setenv("LOYALTY_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# The fake CRMs on the clock they and the harnesses move by hand (the CRM test modules'
# harnesses take `time` and `portal` or `account`; a module overrides them to fill the fakes).
@pytest.fixture
def time() -> ManualClock:
    return ManualClock()


@pytest.fixture
def portal(time: ManualClock) -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(clock=time) as fake:
        yield fake


@pytest.fixture
def account(time: ManualClock) -> Iterator[FakeAmoCRM]:
    with FakeAmoCRM(clock=time) as fake:
        yield fake


def _reset_postgres(db: Database) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with db.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        assert POSTGRES_URL is not None
        return POSTGRES_URL
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture
def program_settings() -> dict[str, Any]:
    """Override in a test module to change the program."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, program_settings: dict[str, Any]) -> Settings:
    return make_settings(tmp_path, database_url, program=program_settings,
                         server={"admin_token": TOKEN})


def fresh_services(settings: Settings, **kwargs: Any) -> Services:
    """Services on a migrated, empty database (PostgreSQL tables are truncated)."""
    services = Services.build(settings, **kwargs)
    services.migrate()
    if services.db.is_postgres:
        _reset_postgres(services.db)
    return services


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database)
    database.upgrade(sealer=Sealer(key_source(settings)))
    if database.is_postgres:
        _reset_postgres(database)
    yield database
    database.dispose()


@pytest.fixture
def ledger(db: Database, settings: Settings, clock: Clock) -> Ledger:
    return Ledger(db, Program(settings.program), clock=clock)


def count_settles(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources `ledger.settle_purchase` is called with, in order (it still runs)."""
    calls: list[str] = []
    real = ledger.settle_purchase

    def counted(ref: Any, source: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(source)
        return real(ref, source, *args, **kwargs)

    monkeypatch.setattr(ledger, "settle_purchase", counted)
    return calls


# The Flask tutorial's chain: `services` gives the app and its client.
@pytest.fixture
def app(services: Services) -> Flask:
    app = create_app(services=services)
    app.testing = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app on a real local server (for a browser), its base URL."""
    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(timeout=5)


# An API module's chain: `services` -> app -> client -> api (a module may provide its own
# `services`, e.g. with accounts already in the ledger).
@pytest.fixture
def services(settings: Settings, db: Database, clock: Clock) -> Iterator[Services]:
    # `db` has migrated (and on PostgreSQL emptied) the database these services use.
    services = Services.build(settings, clock=clock)
    yield services
    services.close()


class Api:
    """An admin client: the bearer token on every call, JSON bodies, an idempotency key."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def get(self, path: str) -> TestResponse:
        return self.client.get(path, headers=self.auth)

    def post(self, path: str, body: dict[str, Any] | None = None, *, key: str | None = None,
             headers: dict[str, str] | None = None) -> TestResponse:
        data = dict(body or {})
        if key is not None:
            data["key"] = key
        return self.client.post(path, json=data, headers={**self.auth, **(headers or {})})

    def post_raw(self, path: str, data: str | bytes,
                 content_type: str = "application/json") -> TestResponse:
        return self.client.post(path, data=data, content_type=content_type, headers=self.auth)

    def account(self, ref: dict[str, str] = ANNA) -> dict[str, Any]:
        response = self.get(account_path(ref))
        assert response.status_code == 200, response.json
        return response.json

    def balance(self, ref: dict[str, str] = ANNA) -> str:
        return self.account(ref)["balance"]

    def accrue(self, amount: str, *, key: str, ref: dict[str, str] = ANNA,
               **extra: Any) -> dict[str, Any]:
        response = self.post("/api/v1/accrue", {**ref, "amount": amount, **extra}, key=key)
        assert response.status_code == 201, response.json
        return response.json


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client)


def cli_on(tmp_path: Path, config_text: str) -> Callable[..., Result]:
    """The CLI on its own config file (config_text's {db}: a SQLite file in tmp_path), its
    database upgraded; call it with the command's arguments."""
    config = tmp_path / "config.toml"
    config.write_text(config_text.format(db=tmp_path / "cli.db"), encoding="utf-8")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    assert invoke("db", "upgrade").exit_code == 0
    return invoke
