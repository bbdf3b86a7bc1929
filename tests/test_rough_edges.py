"""Small things a user runs into: negative adjustments, amoCRM triggers merged with their
defaults, `sync amocrm` speaking of leads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import cli
from connector.config import load_settings
from connector.errors import ConfigError
from connector.sandbox.amocrm import FakeAmoCRM
from connector.triggers import CODES

ANNA = ("bitrix24", "acme.bitrix24.ru", "101")


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    # The outputs are read in English (program.language = en).
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/edges.db"\n'
                    '[program]\nlanguage = "en"\n' + extra, encoding="utf-8")
    return path


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def test_adjust_takes_a_negative_number_anywhere_without_a_double_dash(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    assert invoke(config, "db", "upgrade").exit_code == 0
    assert invoke(config, "adjust", *ANNA, "100", "--reason", "gift", "--key", "a").exit_code == 0
    after_options = invoke(config, "adjust", *ANNA, "--reason", "typo", "--key", "b", "-10")
    assert after_options.exit_code == 0, after_options.output
    assert after_options.stdout.endswith("adjustment -10.00 points for "
                                         "bitrix24:acme.bitrix24.ru:contact:101, balance 90.00\n")
    # --config after the command and the number first, with cents.
    last = CliRunner().invoke(cli, ["adjust", *ANNA, "-0.25", "--reason", "typo", "--key", "c",
                                    "--config", str(config)])
    assert last.exit_code == 0, last.output
    assert last.stdout.endswith("balance 89.75\n")
    # A misspelled option is still refused as bad usage, not taken as the amount.
    typo = invoke(config, "adjust", *ANNA, "-5", "--reasn", "x", "--key", "d")
    assert typo.exit_code == 2


def test_one_amocrm_trigger_table_keeps_the_other_defaults(tmp_path: Path) -> None:
    config = config_file(tmp_path, '[amocrm.triggers.loyalty_tier_up]\nsalesbot_id = 42\n')
    triggers = load_settings(config).amocrm.triggers
    assert set(triggers) == set(CODES)
    assert triggers["loyalty_tier_up"].salesbot_id == 42
    assert triggers["loyalty_tier_up"].tag is None  # a configured table replaces its default
    assert triggers["loyalty_welcome"].tag == "loyalty_welcome"


def test_an_amocrm_trigger_set_to_false_is_off(tmp_path: Path) -> None:
    config = config_file(tmp_path, '[amocrm.triggers]\nloyalty_welcome = false\n'
                                   'loyalty_birthday = false\n')
    triggers = load_settings(config).amocrm.triggers
    assert set(triggers) == set(CODES) - {"loyalty_welcome", "loyalty_birthday"}


def test_an_unknown_amocrm_trigger_is_one_line(tmp_path: Path) -> None:
    config = config_file(tmp_path, '[amocrm.triggers.loyalty_tier_upp]\ntag = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    [problem] = caught.value.problems
    assert problem.startswith("amocrm.triggers: ") and "unknown transition 'loyalty_tier_upp'" \
        in problem


def test_sync_amocrm_counts_leads(tmp_path: Path) -> None:
    with FakeAmoCRM() as account:
        account.put_contact(7)
        account.put_lead(1, contact=7, price=1000)
        account.put_lead(2, contact=7, price=500, status=143)
        config = config_file(tmp_path, (
            f'[amocrm]\nenabled = true\nbase_url = "{account.base_url}"\n'
            'subdomain = "example"\nlong_lived_token = "long-lived-token"\n'
            'webhook_secret = "Wh00kSecret0123456789"\ntimeout_seconds = 5\n'))
        assert invoke(config, "db", "upgrade").exit_code == 0
        text = invoke(config, "sync", "amocrm", "--full")
        assert text.exit_code == 0, text.output
        assert text.stdout.startswith("leads: 2, changed: 1, ")
        assert "deals" not in text.stdout
        summary = json.loads(invoke(config, "sync", "amocrm", "--full", "--json").stdout)
        assert summary["leads"] == 2 and "deals" not in summary
