"""CRM tokens at rest: sealed in the database with a key kept outside it; the key file, the
PostgreSQL rule, rotation in one transaction, and the migration that seals rows in clear."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr
from sqlalchemy import select, text

from connector.cli import cli
from connector.config import Settings
from connector.crm.credentials import Tokens
from connector.crm.models import Credential
from connector.errors import ConfigError, CRMAuthError, SealError
from connector.sealing import Sealer, key_source
from connector.sealing.keys import KeySource, write_key_file
from connector.sealing.rotation import rotate_key
from connector.services import Services
from tests.conftest import fresh_services, make_settings

ACCESS, REFRESH, APPLICATION = "at-6c1f0e9b2d", "rt-93ad7c55e1", "app-b0e4d2c9f7"
PG_URL = "postgresql+psycopg://loyalty@127.0.0.1:5432/nowhere"


def some_tokens(access: str = ACCESS, refresh: str = REFRESH) -> Tokens:
    return Tokens(access_token=access, refresh_token=refresh, expires_at=None,
                  application_token=APPLICATION)


def stored(services: Services) -> list[dict[str, Any]]:
    with services.db.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT crm, access_token, refresh_token, application_token FROM crm_credentials "
            "ORDER BY id"))
        return [dict(row._mapping) for row in rows]


def file_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **sections: Any) -> Settings:
    """SQLite with the key file beside it (the default), whatever the test run's environment."""
    monkeypatch.delenv("LOYALTY_SECRET_KEY", raising=False)
    return make_settings(tmp_path, f"sqlite:///{tmp_path}/loyalty.db", **sections)


# -- sealed at rest --------------------------------------------------------------------------
def test_tokens_are_stored_sealed_and_read_back(settings: Settings) -> None:
    services = fresh_services(settings)
    store = services.amocrm_credentials
    store.save(some_tokens())
    [row] = stored(services)
    raw = " ".join(str(value) for value in row.values())
    for token in (ACCESS, REFRESH, APPLICATION):
        assert token not in raw
    assert services.sealer.open(row["access_token"]) == ACCESS
    loaded = store.load()
    assert loaded is not None
    assert (loaded.access_token, loaded.refresh_token, loaded.application_token) == (
        ACCESS, REFRESH, APPLICATION)
    assert store.application_token() == APPLICATION
    refreshed = store.refresh(ACCESS, lambda refresh: some_tokens(f"new-{refresh}", "rt-next"))
    assert refreshed.access_token == f"new-{REFRESH}"
    assert store.load() == refreshed
    assert "rt-next" not in str(stored(services))
    services.close()


def test_another_key_cannot_read_them_and_says_what_to_do(settings: Settings) -> None:
    services = fresh_services(settings)
    services.amocrm_credentials.save(some_tokens())
    services.close()
    stranger = Fernet.generate_key().decode()
    other = Services.build(settings.model_copy(update={"secret_key": SecretStr(stranger)}))
    with pytest.raises(CRMAuthError) as caught:
        other.amocrm_credentials.load()
    assert caught.value.code == "unreadable"
    assert ("stored tokens cannot be read: a stored value does not open with "
            "LOYALTY_SECRET_KEY; restore the key (see README, Security)") in caught.value.detail
    assert stranger not in caught.value.detail and ACCESS not in caught.value.detail
    with pytest.raises(CRMAuthError):
        other.amocrm_credentials.application_token()
    with pytest.raises(CRMAuthError):
        other.amocrm_credentials.refresh(ACCESS, lambda _: some_tokens())
    assert other.amocrm_credentials.status() == ("active", None)  # not taken for revoked
    other.close()


# -- where the key comes from ----------------------------------------------------------------
def test_key_file_is_made_on_first_start_with_mode_0600_and_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = file_settings(tmp_path, monkeypatch)
    path = tmp_path / "loyalty.db.key"
    services = Services.build(settings)
    assert not path.exists()  # building alone (doctor, inbox list) makes nothing
    services.migrate()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text()
    services.bitrix24_credentials.save(some_tokens())
    services.close()
    again = Services.build(settings)
    again.migrate()
    assert path.read_text() == key
    loaded = again.bitrix24_credentials.load()
    assert loaded is not None and loaded.access_token == ACCESS
    [row] = stored(again)
    assert Fernet(key.strip().encode()).decrypt(row["access_token"].encode()) == ACCESS.encode()
    again.close()


def test_a_configured_key_file_on_sqlite_is_made_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys" / "loyalty.key"
    services = fresh_services(file_settings(tmp_path, monkeypatch, secret_key_file=str(path)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert services.sealer.describe() == f"key file {path}"
    services.close()


def test_postgresql_without_a_key_refuses_to_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOYALTY_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        Services.build(make_settings(tmp_path, PG_URL))
    assert caught.value.problems == [
        "secret_key: postgresql needs the key that encrypts stored CRM tokens: set "
        "LOYALTY_SECRET_KEY (make one: loyalty-connector secrets new-key) or secret_key_file"]
    missing = tmp_path / "absent.key"
    with pytest.raises(ConfigError) as caught:
        Services.build(make_settings(tmp_path, PG_URL, secret_key_file=str(missing)))
    assert caught.value.problems == [
        f"secret_key_file: {missing} does not exist (on PostgreSQL the key is never made "
        "automatically: write one there with loyalty-connector secrets new-key, or set "
        "LOYALTY_SECRET_KEY)"]
    assert not missing.exists()
    config = tmp_path / "pg.toml"
    config.write_text(f'[database]\nurl = "{PG_URL}"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "db", "upgrade"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "config: secret_key: postgresql needs the key that encrypts stored CRM tokens: set "
        "LOYALTY_SECRET_KEY (make one: loyalty-connector secrets new-key) or secret_key_file"]


def test_environment_key_wins_and_a_bad_one_is_one_config_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("LOYALTY_SECRET_KEY", key)
    services = Services.build(make_settings(tmp_path, PG_URL))
    assert services.sealer.describe() == "LOYALTY_SECRET_KEY"
    assert services.sealer.keys == [key.encode()]
    services.close()
    monkeypatch.setenv("LOYALTY_SECRET_KEY", f"{key},not-a-key-0123")
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "config: secret_key: key 2 of 2 is not a Fernet key (44 characters of url-safe "
        "base64; make one: loyalty-connector secrets new-key)"]
    assert "not-a-key-0123" not in result.output and key not in result.output


def test_an_in_memory_database_keeps_its_key_in_memory(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOYALTY_SECRET_KEY", raising=False)
    source = key_source(make_settings(tmp_path, "sqlite://"))
    assert source.path is None and len(source.env_keys) == 1
    assert list(tmp_path.iterdir()) == []


# -- rotation --------------------------------------------------------------------------------
def test_rotation_with_the_key_file_reseals_everything_in_one_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = file_settings(tmp_path, monkeypatch)
    services = fresh_services(settings)
    services.bitrix24_credentials.save(some_tokens())
    services.amocrm_credentials.save(some_tokens("at-amo", "rt-amo"))
    running = Services.build(settings)  # another process, started before the rotation
    assert running.bitrix24_credentials.load() is not None
    path = tmp_path / "loyalty.db.key"
    [old] = services.sealer.keys
    rotated = rotate_key(services.db, services.sealer)
    assert (rotated.rows, rotated.values) == (2, 6)
    new, previous = services.sealer.keys
    assert previous == old and new != old
    assert path.read_text().split() == [new.decode(), old.decode()]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for row in stored(services):  # every token opens with the new key alone
        for column in ("access_token", "refresh_token", "application_token"):
            Fernet(new).decrypt(row[column].encode())
    loaded = running.amocrm_credentials.load()  # reads the rewritten key file
    assert loaded is not None and loaded.access_token == "at-amo"
    running.amocrm_credentials.save(some_tokens("at-after", "rt-after"))
    [_, amo] = stored(services)
    assert Fernet(new).decrypt(amo["access_token"].encode()) == b"at-after"
    rotate_key(services.db, services.sealer)  # the next one drops the oldest key
    assert old.decode() not in path.read_text()
    assert len(path.read_text().split()) == 2
    running.close()
    services.close()


def test_rotation_is_all_or_nothing(settings: Settings) -> None:
    services = fresh_services(settings)
    services.bitrix24_credentials.save(some_tokens())
    with services.db.transaction() as session:  # sealed with a key nobody has any more
        row = session.scalar(select(Credential).where(Credential.crm == "bitrix24"))
        assert row is not None
        session.add(Credential(crm="amocrm", portal="lost.amocrm.ru", status="active",
                               access_token=Fernet(Fernet.generate_key()).encrypt(b"x").decode(),
                               updated_at=row.updated_at))
    before = stored(services)
    key = Fernet.generate_key().decode()
    source = services.sealer.source
    sealer = services.sealer if source.path else Sealer(KeySource(env_keys=(
        key.encode(), *source.env_keys)))
    with pytest.raises(SealError, match="a stored value does not open with"):
        rotate_key(services.db, sealer)
    assert stored(services) == before  # the first row's new seal was rolled back too
    loaded = services.bitrix24_credentials.load()
    assert loaded is not None and loaded.access_token == ACCESS
    services.close()


def test_rotation_from_the_environment_takes_the_new_key_first(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("LOYALTY_SECRET_KEY", old)
    services = fresh_services(make_settings(tmp_path, database_url))
    services.bitrix24_credentials.save(some_tokens())
    config = tmp_path / "rotate.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    runner = CliRunner()
    alone = runner.invoke(cli, ["--config", str(config), "secrets", "rotate-key"])
    assert alone.exit_code == 1
    assert alone.output.splitlines() == [
        "error: LOYALTY_SECRET_KEY holds one key: put a new key in front of it "
        "(LOYALTY_SECRET_KEY=NEW,OLD; make one: loyalty-connector secrets new-key), run this "
        "again, then set LOYALTY_SECRET_KEY=NEW everywhere"]
    monkeypatch.setenv("LOYALTY_SECRET_KEY", f"{new},{old}")
    result = runner.invoke(cli, ["--config", str(config), "secrets", "rotate-key"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "3 token(s) of 1 CRM credential(s) sealed with the new key",
        "now set LOYALTY_SECRET_KEY to the new key alone, everywhere, and restart"]
    assert new not in result.output and old not in result.output
    [row] = stored(services)
    assert Fernet(new.encode()).decrypt(row["refresh_token"].encode()) == REFRESH.encode()
    with pytest.raises(InvalidToken):
        Fernet(old.encode()).decrypt(row["refresh_token"].encode())
    services.close()


def test_new_key_prints_a_fresh_key_each_time() -> None:
    runner = CliRunner()
    first, second = (runner.invoke(cli, ["secrets", "new-key"]) for _ in range(2))
    assert first.exit_code == second.exit_code == 0
    assert first.output != second.output
    Fernet(first.output.strip().encode())


def test_an_altered_value_is_refused_not_used(settings: Settings) -> None:
    services = fresh_services(settings)
    store = services.bitrix24_credentials
    store.save(some_tokens())
    with services.db.transaction() as session:
        row = session.scalar(select(Credential))
        assert row is not None and row.access_token is not None
        flipped = "A" if row.access_token[40] != "A" else "B"
        row.access_token = row.access_token[:40] + flipped + row.access_token[41:]
    with pytest.raises(CRMAuthError, match="stored tokens cannot be read"):
        store.load()
    services.close()


def test_two_processes_making_the_key_file_at_once_agree(tmp_path: Path) -> None:
    path = tmp_path / "loyalty.db.key"
    first, second = Fernet.generate_key(), Fernet.generate_key()
    assert write_key_file(path, [first], replace=False) is True
    assert write_key_file(path, [second], replace=False) is False  # the first one stays
    assert Sealer(KeySource(path=path, may_create=True)).keys == [first]
    assert [p.name for p in tmp_path.iterdir()] == ["loyalty.db.key"]  # no temporary left


def test_an_app_whose_token_does_not_open_refuses_events_with_503(
        settings: Settings, tmp_path: Path) -> None:
    """A Bitrix24 event cannot be told genuine without the stored application token: it is
    answered 503 and not stored (never a 500, never taken as genuine)."""
    from tests.test_bitrix24_receiver import FORM, TOKEN, event_body
    from webhooks import create_app

    app_setup = settings.model_copy(update={"bitrix24": settings.bitrix24.model_copy(update={
        "enabled": True, "client_id": "local.1", "client_secret": SecretStr("app-secret"),
        "portal": "acme.bitrix24.ru"})})
    services = fresh_services(app_setup)
    services.bitrix24_credentials.save(Tokens(access_token=ACCESS, refresh_token=REFRESH,
                                              expires_at=None, application_token=TOKEN))
    client = create_app(services=services).test_client()
    assert client.post("/bitrix24/events", data=event_body(), content_type=FORM).status_code \
        == 200
    services.close()
    stranger = SecretStr(Fernet.generate_key().decode())
    other = Services.build(app_setup.model_copy(update={"secret_key": stranger}))
    client = create_app(services=other).test_client()
    response = client.post("/bitrix24/events", data=event_body(entity="760"), content_type=FORM)
    assert response.status_code == 503 and response.headers["Retry-After"] == "60"
    assert response.json["error"] == "credentials_unreadable"
    assert len(other.inbox.list()) == 1  # the first event alone
    other.close()
