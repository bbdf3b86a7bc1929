"""Settings: file, environment overrides, and one clear line per problem."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from connector import triggers
from connector.config import load_settings, resolve_config_path
from connector.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    return caught.value.problems


def test_defaults_without_any_file() -> None:
    settings = load_settings()
    assert settings.database.url == "sqlite:///loyalty.db"
    assert settings.program.redeem_share == Decimal("0.5")
    assert [t.name for t in settings.program.tiers] == ["Bronze", "Silver", "Gold"]


def test_example_config_is_valid_and_matches_the_defaults() -> None:
    assert load_settings(EXAMPLE).model_dump() == load_settings().model_dump()


def test_example_config_names_every_trigger_of_the_code() -> None:
    """The Bitrix24 section lists the transitions in a comment, the amoCRM section has a
    table each: both name every one the code fires (connector.triggers.CODES), no other."""
    text = EXAMPLE.read_text(encoding="utf-8")
    listed = text.split("# the app's own trigger. Transitions:")[1].split(".\n")[0]
    bitrix24 = re.findall(r"loyalty_[a-z_]+", listed)
    assert sorted(bitrix24) == sorted(triggers.CODES)
    amocrm = re.findall(r"^\[amocrm\.triggers\.(loyalty_[a-z_]+)\]", text, re.M)
    assert sorted(amocrm) == sorted(triggers.CODES)
    assert sorted(load_settings().amocrm.triggers) == sorted(triggers.CODES)


def test_file_values_are_exact_decimals(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """
        [program]
        redeem_share = 0.3
        [[program.tiers]]
        name = "Base"
        rate = 0.07
    """))
    assert settings.program.redeem_share == Decimal("0.3")
    assert settings.program.tiers[0].rate == Decimal("0.07")


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[server]\nport = 9000\n[program]\ncurrency = "UAH"\n')
    monkeypatch.setenv("LOYALTY_SERVER__PORT", "9100")
    monkeypatch.setenv("LOYALTY_SERVER__ADMIN_TOKEN", "from-env-0123456789")
    settings = load_settings(path)
    assert settings.server.port == 9100
    assert settings.program.currency == "UAH"
    assert settings.server.admin_token is not None
    assert settings.server.admin_token.get_secret_value() == "from-env-0123456789"


def test_config_path_resolution(tmp_path: Path) -> None:
    assert resolve_config_path("x.toml", {}) == Path("x.toml")
    assert resolve_config_path(None, {"LOYALTY_CONFIG": "/etc/l.toml"}) == Path("/etc/l.toml")
    assert resolve_config_path(None, {}) is None  # the tests run in an empty directory
    write(tmp_path, "")
    assert resolve_config_path(None, {}) == Path("config.toml")


def test_each_problem_is_one_line_naming_the_key(tmp_path: Path) -> None:
    lines = problems(tmp_path, """
        [server]
        port = 70000
        admin_token = "s3cret-value-long-enough"
        [program]
        redeem_share = 1.5
        rounding = "up"
        timezone = "Mars/Olympus"
        colour = "blue"
    """)
    assert len(lines) == 5
    assert lines[0].startswith("server.port: ") and "70000" in lines[0]
    assert any(line.startswith("program.redeem_share: ") for line in lines)
    assert any(line.startswith("program.rounding: ") for line in lines)
    assert any("Mars/Olympus" in line and line.startswith("program.timezone") for line in lines)
    assert any(line.startswith("program.colour: unknown setting") for line in lines)


def test_tier_and_campaign_rules(tmp_path: Path) -> None:
    lines = problems(tmp_path, """
        [[program.tiers]]
        name = "Silver"
        min_spend = 100
        rate = 0.05
        [[program.campaigns]]
        name = "bf"
        starts = 2026-11-27T00:00:00
        ends = 2026-11-26T00:00:00
    """)
    assert lines == [
        "program.tiers: the first tier must have min_spend = 0",
        "program.campaigns.0: ends must be after starts",
    ]


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    assert problems(tmp_path, "[server\nport=1")[0].startswith(
        f"config file {tmp_path / 'config.toml'}: invalid TOML")


def test_secrets_are_not_echoed(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[server]\nadmin_token = "short-secret"\nport = "x"\n')
    assert any(line.startswith("server.admin_token: use at least 16") for line in lines)
    assert all("short-secret" not in line for line in lines)
    lines = problems(tmp_path, '[bitrix24]\nclient_secret = 98765432\n'
                               '[database]\nurl = 5\n')
    assert lines and all("98765432" not in line for line in lines)


def test_an_app_is_bound_to_its_configured_portal(tmp_path: Path) -> None:
    app = '[bitrix24]\nenabled = true\nclient_id = "local.1"\nclient_secret = "app-secret"\n'
    [line] = problems(tmp_path, app)
    assert line.startswith("bitrix24: ") and "portal is required with an app setup" in line
    # A webhook URL names a portal, but an app still needs it said: it is what installs
    # and events are checked against.
    [line] = problems(tmp_path, app + 'webhook_url = "https://acme.bitrix24.ru/rest/1/x/"\n')
    assert "portal is required with an app setup" in line
    [line] = problems(tmp_path, app + 'portal = "acme.bitrix24.ru/rest/"\n')
    assert line.startswith("bitrix24.portal: ") and "a domain such as" in line
    [line] = problems(tmp_path, app + 'portal = "acme.bitrix24.ru@evil.example"\n')
    assert line.startswith("bitrix24.portal: ")


@pytest.mark.parametrize(("portal", "key", "rest"), [
    ("acme.bitrix24.ru", "acme.bitrix24.ru", "https://acme.bitrix24.ru/rest/"),
    ("https://ACME.bitrix24.ru:443/", "acme.bitrix24.ru", "https://acme.bitrix24.ru/rest/"),
    ("crm.example.local:8443", "crm.example.local:8443", "https://crm.example.local:8443/rest/"),
    ("http://crm.example.local", "crm.example.local", "http://crm.example.local/rest/"),
])
def test_the_portal_is_kept_as_its_domain(tmp_path: Path, portal: str, key: str,
                                          rest: str) -> None:
    settings = load_settings(write(tmp_path, f"""
        [bitrix24]
        enabled = true
        client_id = "local.1"
        client_secret = "app-secret"
        portal = "{portal}"
    """))
    assert (settings.bitrix24.portal_key, settings.bitrix24.rest_url) == (key, rest)


def test_bitrix24_trigger_codes_and_the_actions_secret_are_checked(tmp_path: Path) -> None:
    assert problems(tmp_path, """
        [bitrix24]
        actions_secret = "short-1"
        [bitrix24.triggers.loyalty_tier_upp]
        code = "nwly5"
    """) == [
        "bitrix24.triggers: unknown transition 'loyalty_tier_upp' (one of loyalty_tier_up, "
        "loyalty_tier_down, loyalty_points_expiring, loyalty_birthday, loyalty_welcome, "
        "loyalty_points_accrued, loyalty_anniversary, loyalty_points_available, "
        "loyalty_referral_rewarded, loyalty_reward_claimed)",
        "bitrix24.actions_secret: use at least 16 letters and digits"]
    assert problems(tmp_path, '[bitrix24.triggers.loyalty_welcome]\ncode = "a&b"\n') == [
        "bitrix24.triggers.loyalty_welcome.code: String should match pattern "
        "'^[A-Za-z0-9._-]{1,64}$' (got 'a&b')"]
    settings = load_settings(write(tmp_path, '[bitrix24.triggers.loyalty_welcome]\n'
                                             'code = "c5u4m"\n'))
    assert settings.bitrix24.triggers["loyalty_welcome"].code == "c5u4m"
