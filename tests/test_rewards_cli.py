"""The `rewards` commands through click's runner, on a SQLite database the CLI migrates."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import cli_on

Run = Callable[..., Result]
ANNA = ("bitrix24", "acme.bitrix24.ru", "101")
CONFIG = """
[database]
url = "sqlite:///{db}"

[program]
language = "en"  # the outputs are read in English

[[program.rewards]]
id = "mug"
name = "Branded mug"
cost = 100
stock = 1

[[program.rewards]]
id = "lounge"
name = "Lounge pass"
cost = 10
tier = "Gold"
"""


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return cli_on(tmp_path, CONFIG)


def test_list_claim_handed_cancel(run: Run) -> None:
    listed = run("rewards", "list")
    assert listed.exit_code == 0
    assert "mug" in listed.stdout and "stock 1/1" in listed.stdout
    assert "Gold and above" in listed.stdout
    assert run("adjust", *ANNA, "250", "--reason", "test", "--key", "f").exit_code == 0
    claimed = run("rewards", "claim", *ANNA, "mug", "--key", "k1")
    assert claimed.exit_code == 0, claimed.output
    found = re.search(r"code ([A-Z0-9]{10})", claimed.stdout)
    assert found is not None
    code = found.group(1)
    assert "balance 150.00" in claimed.stdout
    repeat = run("rewards", "claim", *ANNA, "mug", "--key", "k1")
    assert "already claimed under this key" in repeat.stdout and code in repeat.stdout
    out = run("rewards", "claim", *ANNA, "mug")
    assert out.exit_code == 1 and "out of stock" in out.stderr
    tier = run("rewards", "claim", *ANNA, "lounge")
    assert tier.exit_code == 1 and "Gold" in tier.stderr
    unknown = run("rewards", "claim", *ANNA, "nothing")
    assert unknown.exit_code == 1 and "no reward with id 'nothing'" in unknown.stderr
    opened = run("rewards", "claims", "--open")
    assert code in opened.stdout and "issued" in opened.stdout
    as_json = json.loads(run("rewards", "claims", "--json").stdout)
    assert [c["code"] for c in as_json] == [code]
    cancelled = run("rewards", "cancel", code.lower())
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stdout
    assert run("rewards", "claims", "--open").stdout == ""
    shown = json.loads(run("account", "show", *ANNA, "--json").stdout)
    assert shown["balance"] == "250.00"
    again = run("rewards", "claim", *ANNA, "mug", "--json")
    code2 = json.loads(again.stdout)["claim"]["code"]
    handed = run("rewards", "handed", code2)
    assert handed.exit_code == 0 and "handed" in handed.stdout
    late = run("rewards", "cancel", code2)
    assert late.exit_code == 1 and "handed over already" in late.stderr
    assert run("rewards", "handed", "NOSUCHCODE").exit_code == 1
    assert run("rewards", "claim", *ANNA).exit_code == 2  # REWARD missing: usage


def test_a_claim_is_told_in_the_program_language(tmp_path: Path) -> None:
    """Russian, the default: the points word agrees with the number, figures the Russian way."""
    run = cli_on(tmp_path, CONFIG.replace('language = "en"', 'language = "ru"'))
    assert run("adjust", *ANNA, "1250", "--reason", "test", "--key", "f").exit_code == 0
    claimed = run("rewards", "claim", *ANNA, "mug", "--key", "k1")
    assert claimed.exit_code == 0, claimed.output
    assert re.fullmatch(r"награда Branded mug оформлена для bitrix24:acme\.bitrix24\.ru:contact:"
                        r"101: код [A-Z0-9]{10}, 100,00 баллов, баланс 1\xa0150,00\n",
                        claimed.stdout), claimed.stdout
    listed = run("rewards", "list").stdout
    assert "в наличии 0/1" in listed and "уровень Gold и выше" in listed
