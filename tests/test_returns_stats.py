"""Returns in the program's figures: `stats` (table and --json) and the dashboard."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from connector.cli import cli
from connector.config import Settings
from connector.db import Database
from connector.i18n import translator
from connector.ledger.views import AccountRef
from connector.services import Services
from connector.stats import format_stats, program_stats
from tests.conftest import Clock
from tests.test_cli import ANNA as CLI_ANNA
from tests.test_cli import write_config

ANNA = AccountRef("bitrix24", "acme", "1")
BORIS = AccountRef("bitrix24", "acme", "2")
TOKEN = "test-admin-token"
MARCH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))


@pytest.fixture
def services(settings: Settings, db: Database, clock: Clock) -> Iterator[Services]:
    services = Services.build(settings, clock=clock)
    ledger = services.ledger
    ledger.accrue(ANNA, D("10000"), key="a1")                       # +300
    ledger.return_purchase(ANNA, "a1", D("2500"), key="a1:ret1")    # -75
    ledger.return_purchase(ANNA, "a1", D("7500"), key="a1:ret2")    # -225, the rest
    ledger.accrue(BORIS, D("1000"), key="b1")                       # +30
    ledger.reverse(BORIS, "b1", key="b1:rev")                       # a reversal, no return
    yield services
    services.close()


def test_stats_count_returns_their_points_and_money(services: Services) -> None:
    with services.db.transaction(write=False) as session:
        figures = program_stats(session, services.program, since=MARCH[0], until=MARCH[1])
    assert (figures.returns, figures.returned_points, figures.returned_amount) == \
        (2, D("-300.00"), D("10000.00"))
    assert figures.reversed == D("-330.00")  # returns are reversals too
    assert figures.as_json()["returned_points"] == "-300.00"
    table = format_stats(figures, services.program.zone, translator("en"))
    assert "returns        2, -300.00 points, 10,000.00 returned" in table
    russian = format_stats(figures, services.program.zone, translator("ru"))
    assert "возвраты       2, баллов -300,00, возвращено 10\u00a0000,00" in russian


def test_the_dashboard_shows_returns(client: FlaskClient, services: Services,
                                     clock: Clock) -> None:
    clock.advance(hours=1)  # the period ends now, and excludes it
    pair = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    html = client.get("/dashboard", headers={"Authorization": f"Basic {pair}"}) \
        .get_data(as_text=True)
    assert 'id="kpi-returns">2' in html
    # The default language, Russian.
    assert "списано баллов (за вычетом возвращённых): 300" in html


def test_cli_stats_lists_returns(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'language = "en"\n')

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--config", str(config), *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    run("db", "upgrade")
    run("accrue", *CLI_ANNA, "1000", "--key", "order-1")
    run("return", *CLI_ANNA, "order-1", "--amount", "400", "--key", "ret-1")
    figures = json.loads(run("stats", "--json"))
    assert (figures["returns"], figures["returned_points"], figures["returned_amount"]) == \
        (1, "-12.00", "400.00")
    assert "returns        1, -12.00 points, 400.00 returned" in run("stats").splitlines()
