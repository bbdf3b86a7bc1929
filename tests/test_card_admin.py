"""Rotating and printing card page links: the admin API's POST .../card/rotate and the
`card link | rotate | publish` commands."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient

from connector.cli import cli
from connector.ledger.views import AccountRef
from connector.services import Services
from tests.conftest import fresh_services, make_settings
from webhooks import create_app

pytestmark = pytest.mark.storage

SECRET = "card-secret-0123456789abcdefghijklmnop"
TOKEN = "card-admin-token-0123"
ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "7")
ROTATE = "/api/v1/accounts/bitrix24/acme.bitrix24.ru/7/card/rotate"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SITE = "https://loyalty.example.com"


@pytest.fixture
def services(tmp_path: Path, database_url: str) -> Iterator[Services]:
    services = fresh_services(make_settings(
        tmp_path, database_url, server={"admin_token": TOKEN, "public_url": SITE},
        card={"secret": SECRET}))
    services.ledger.accrue(ANNA, D("1000"), key="buy")
    yield services
    services.close()


def test_the_api_rotates_a_link(client: FlaskClient, services: Services) -> None:
    old = services.cards.link(ANNA)
    response = client.post(ROTATE, headers=BEARER)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["url"].startswith(f"{SITE}/card/") and body["url"] != old.url
    assert body["rotations"] == 1
    assert client.get(old.url.removeprefix(SITE)).status_code == 404
    assert client.get(body["url"].removeprefix(SITE)).status_code == 200


def test_the_api_refuses_what_it_cannot_rotate(client: FlaskClient) -> None:
    assert client.post(ROTATE).status_code == 401
    missing = client.post(ROTATE.replace("/7/", "/8/"), headers=BEARER)
    assert missing.status_code == 404 and missing.get_json()["error"] == "account_not_found"
    bad_crm = client.post(ROTATE.replace("bitrix24", "Bitrix-24", 1), headers=BEARER)
    assert bad_crm.status_code == 400


def test_the_api_says_card_pages_are_off(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(make_settings(tmp_path, database_url,
                                            server={"admin_token": TOKEN}))
    try:
        services.ledger.accrue(ANNA, D("1000"), key="buy")
        response = create_app(services=services).test_client().post(ROTATE, headers=BEARER)
    finally:
        services.close()
    assert response.status_code == 403
    assert response.get_json() == {"error": "card_disabled", "detail": "set card.secret (or "
                                   "LOYALTY_CARD__SECRET) to enable card pages"}


# -- the commands ----------------------------------------------------------------------------
def cli_run(tmp_path: Path, *args: str, secret: str | None = SECRET) -> Result:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n'
                      f'[server]\npublic_url = "{SITE}"\n'
                      + '[program]\nlanguage = "en"\n'  # the outputs are read in English
                      + (f'[card]\nsecret = "{secret}"\n' if secret else ""),
                      encoding="utf-8")
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def test_the_commands(tmp_path: Path) -> None:
    assert cli_run(tmp_path, "db", "upgrade").exit_code == 0
    anna = ["bitrix24", "acme.bitrix24.ru", "7"]
    assert cli_run(tmp_path, "accrue", *anna, "1000", "--key", "k1").exit_code == 0
    first = cli_run(tmp_path, "card", "link", *anna)
    assert first.exit_code == 0 and first.stdout.startswith(f"{SITE}/card/")
    assert cli_run(tmp_path, "card", "link", *anna).stdout == first.stdout
    rotated = cli_run(tmp_path, "card", "rotate", *anna, "--json")
    assert rotated.exit_code == 0 and '"rotations": 1' in rotated.stdout
    assert first.stdout.strip() not in rotated.stdout
    assert cli_run(tmp_path, "accrue", "bitrix24", "acme.bitrix24.ru", "8", "10", "--key",
                   "k2").exit_code == 0
    published = cli_run(tmp_path, "card", "publish", "bitrix24", "acme.bitrix24.ru")
    assert published.stdout.startswith("issued 1 card page link;")  # Anna had hers
    missing = cli_run(tmp_path, "card", "link", "bitrix24", "acme.bitrix24.ru", "9")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: no loyalty account")
    off = cli_run(tmp_path, "card", "link", *anna, secret=None)
    assert off.exit_code == 2
    assert off.stderr.startswith("config: card.secret: not set")


# -- doctor ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("public_url", "status"), [
    ("https://loyalty.example.com", "ok"), ("http://loyalty.example.com", "warn"),
    ("http://127.0.0.1:8080", "ok"),  # a local trial: nothing goes out
])
def test_doctor_wants_card_links_over_https(tmp_path: Path, public_url: str,
                                            status: str) -> None:
    from connector import doctor

    settings = make_settings(tmp_path, server={"public_url": public_url},
                             card={"secret": SECRET})
    check = doctor.card_pages(settings)
    assert check.status == status, check
    assert SECRET in doctor.secret_values(settings)  # never printed by any check
