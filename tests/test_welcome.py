"""The welcome bonus on accounts the API and the command line make (program.welcome_on),
once per account whichever way the account came first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import cli
from connector.ledger.views import AccountRef
from connector.services import Services
from connector.welcome import welcome
from tests.test_api import ANNA, BORIS, Api
from tests.test_cli import ANNA as CLI_ANNA
from tests.test_cli import write_config

REF = AccountRef(ANNA["crm"], ANNA["portal"], ANNA["contact_id"])


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"welcome_bonus": "100", "welcome_on": ["crm", "api"]}


def welcomes(services: Services, ref: AccountRef = REF) -> int:
    return sum(1 for e in services.ledger.history(ref)
               if e.kind == "bonus" and (e.details or {}).get("bonus") == "welcome")


def test_an_account_the_api_makes_is_welcomed_once(api: Api, services: Services) -> None:
    first = api.accrue("1000", key="order-1")  # 3%: 30
    assert first["welcome"]["points"] == "100.00" and first["points"] == "30.00"
    second = api.accrue("1000", key="order-2")
    assert "welcome" not in second
    assert api.balance() == "160.00" and welcomes(services) == 1
    # The CRM later reports the contact as added: the account has had its welcome.
    again = welcome(services, REF, channel="crm", key="bitrix24:acme:welcome:101",
                    actor="bitrix24")
    assert again is not None and again.entry_id is None
    assert again.details["skipped"] == "already granted" and welcomes(services) == 1


def test_adjust_and_bonus_welcome_new_accounts_and_an_explicit_welcome_is_not_doubled(
        api: Api, services: Services) -> None:
    adjusted = api.post("/api/v1/adjust", {**ANNA, "points": "5", "reason": "import"},
                        key="a1")
    assert adjusted.status_code == 201 and adjusted.json["welcome"]["points"] == "100.00"
    granted = api.post("/api/v1/bonus", {**BORIS, "name": "welcome"}, key="b1")
    assert granted.status_code == 201 and "welcome" not in granted.json
    assert api.balance(BORIS) == "100.00"
    boris = AccountRef(BORIS["crm"], BORIS["portal"], BORIS["contact_id"])
    assert welcomes(services, boris) == 1


def test_a_refused_request_makes_no_account_and_no_welcome(api: Api,
                                                           services: Services) -> None:
    refused = api.post("/api/v1/adjust", {**ANNA, "points": "-5", "reason": "x"}, key="a1")
    assert refused.status_code == 409
    assert services.ledger.account_id(REF) is None


@pytest.mark.parametrize("program_settings", [{"welcome_bonus": "100"}])
def test_by_default_only_the_crm_welcomes(api: Api, services: Services) -> None:
    assert "welcome" not in api.accrue("1000", key="order-1")
    assert api.balance() == "30.00"
    granted = welcome(services, REF, channel="crm", key="crm-welcome", actor="bitrix24")
    assert granted is not None and granted.points == 100
    assert welcome(services, REF, channel="api", key="x", actor="api") is None


def test_cli_welcomes_accounts_it_makes_when_configured(tmp_path: Path) -> None:
    config = write_config(tmp_path).read_text(encoding="utf-8")
    path = tmp_path / "welcome.toml"
    path.write_text(config.replace("welcome_bonus = 100\n",
                                   'welcome_bonus = 100\nwelcome_on = ["cli"]\n'),
                    encoding="utf-8")

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--config", str(path), *args])

    assert run("db", "upgrade").exit_code == 0
    made = run("accrue", *CLI_ANNA, "1000", "--key", "order-1")
    assert made.exit_code == 0, made.output
    assert made.stdout.splitlines() == [
        f"accrual +30.00 points for {':'.join(CLI_ANNA[:2])}:contact:{CLI_ANNA[2]}, "
        "balance 30.00",
        f"bonus +100.00 points for {':'.join(CLI_ANNA[:2])}:contact:{CLI_ANNA[2]}, "
        "balance 130.00"]
    again = run("accrue", *CLI_ANNA, "1000", "--key", "order-2")
    assert "bonus" not in again.stdout
    assert run("account", "show", *CLI_ANNA, "--json").stdout.count('"balance": "160.00"') == 1
