"""`nps record`, `nps report` and the NPS block of `stats` (text and --json), on a small
hand-checked book recorded from the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import cli
from tests.conftest import cli_on

Run = Callable[..., Result]
CONFIG = """
[database]
url = "sqlite:///{db}"

[program]
language = "en"
timezone = "Europe/Moscow"
tiers = [{{name = "Bronze", min_spend = 0, rate = 0.05}},
         {{name = "Silver", min_spend = 10000, rate = 0.1}}]

[program.nps]
bonus = 50
period_days = 90
"""
PERIOD = ("--since", "2026-02-01", "--until", "2026-04-01")


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return cli_on(tmp_path, CONFIG)


def record(run: Run, contact: str, score: str, at: str, *more: str) -> Result:
    return run("nps", "record", "bitrix24", "acme.bitrix24.ru", contact, score, "--at", at,
               *more)


def book(run: Run) -> None:
    """Anna (Silver): 10 on 2 Feb, then 6 on 3 March: a detractor in the period, a promoter
    in February. Boris: 9 on 10 March. Clara: 7 on 20 March. Overall P1 N1 D1 = 0.0;
    February P1 = 100.0; March P1 N1 D1 = 0.0; Silver (Anna) -100.0, Bronze P1 N1 = 50.0."""
    assert run("accrue", "bitrix24", "acme.bitrix24.ru", "1", "10000",
               "--key", "buy-1").exit_code == 0
    for contact, score, at in (("1", "10", "2026-02-02 12:00"), ("1", "6", "2026-03-03 12:00"),
                               ("2", "9", "2026-03-10 12:00"), ("3", "7", "2026-03-20 12:00")):
        done = record(run, contact, score, at)
        assert done.exit_code == 0, done.output


def test_record_says_what_was_recorded_and_the_bonus(run: Run) -> None:
    first = record(run, "1", "9", "2026-03-10 12:00", "--key", "s1")
    assert first.exit_code == 0, first.output
    assert first.output.strip() == ("recorded 9 (promoter) for "
                                     "bitrix24:acme.bitrix24.ru:contact:1; bonus +50.00 points")
    again = record(run, "1", "9", "2026-03-10 12:00", "--key", "s1")
    assert again.output.startswith("already recorded under this key: 9")
    second = record(run, "1", "3", "2026-03-11 12:00", "--json")
    assert json.loads(second.output)["bonus_points"] == "0"  # the period's bonus is paid


def test_record_says_it_in_the_program_language(tmp_path: Path) -> None:
    """language = "ru": the whole line in Russian, the group's name too."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(db=tmp_path / "cli.db").replace(
        'language = "en"', 'language = "ru"'), encoding="utf-8")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    assert invoke("db", "upgrade").exit_code == 0
    said = [record(invoke, contact, score, "2026-03-10 12:00").output.strip()
            for contact, score in (("1", "9"), ("2", "7"), ("3", "2"))]
    assert [line.split(" (")[1].split(")")[0] for line in said] == \
        ["промоутер", "нейтральный", "критик"], said
    assert said[0].startswith("записано 9 (промоутер) для bitrix24:acme.bitrix24.ru:contact:1")


def test_a_future_answer_is_refused(run: Run) -> None:
    """--at in the future (a typo for 2026) would stand as the latest answer for years and
    earn the bonus of a period not begun: refused naming --at, nothing recorded."""
    refused = record(run, "1", "9", "2062-03-10 12:00")
    assert refused.exit_code == 2, refused.output
    assert "--at" in refused.output and "future" in refused.output
    data = json.loads(run("nps", "report", "--since", "2020-01-01", "--until", "2070-01-01",
                          "--json").output)
    assert data["answers_all"] == 0
    assert record(run, "1", "9", "2026-01-10 12:00").exit_code == 0


@pytest.mark.parametrize("score", ["11", "12", "7.5", "ten"])
def test_a_bad_score_is_one_line_naming_the_fix(run: Run, score: str) -> None:
    refused = record(run, "1", score, "2026-03-10 12:00")
    assert refused.exit_code == 1
    assert len(refused.output.strip().splitlines()) == 1
    assert "whole number from 0 to 10" in refused.output


def test_report_and_stats_on_the_book(run: Run) -> None:
    book(run)
    data = json.loads(run("nps", "report", *PERIOD, "--json").output)
    assert (data["nps"], data["answers"], data["answers_all"]) == ("0.0", 3, 4)
    assert data["by_tier"]["Silver"]["nps"] == "-100.0"
    assert data["by_tier"]["Bronze"]["nps"] == "50.0"
    assert [(m["month"], m["nps"]) for m in data["by_month"]] == [("2026-02", "100.0"),
                                                                  ("2026-03", "0.0")]
    assert data["bonuses"] == 3  # Anna's second answer is in the same 90 days as her first

    stats = json.loads(run("stats", *PERIOD, "--json").output)
    assert stats["nps"] == data
    text = [" ".join(line.split()) for line in run("stats", *PERIOD).output.splitlines()]
    assert "NPS 0.0: 3 answered, 1 promoters, 1 passives, 1 detractors" in text
    assert "NPS by tier Bronze 50.0 (2), Silver -100.0 (1)" in text
    assert "NPS by segment not scored 0.0 (3)" in text
    assert "NPS by month Feb 2026 100.0 (1), Mar 2026 0.0 (3)" in text
    report = [" ".join(line.split()) for line in run("nps", "report", *PERIOD).output
              .splitlines()]
    # The money view's table follows the figures' table; the NPS lines end the latter.
    assert report == [line for line in text if line.startswith("NPS ")]
