"""The money view over a small book whose every figure is worked out by hand below.

A point pays 0.50 (point_value), so a purchase earns amount x rate / 0.5 points and points
are worth half their number in money. Points live 100 days.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, text

from connector.cli import cli
from connector.config import Settings
from connector.economics.money import LTVRow, MoneyView, format_money, money_view
from connector.i18n import translator
from connector.ledger.views import AccountRef
from connector.rfm import update_segments
from connector.services import Services
from tests.conftest import Clock, fresh_services, make_settings
from tests.test_dashboard import CHROMIUM, chromium, screenshot
from webhooks import create_app


def ref(contact: str) -> AccountRef:
    return AccountRef("bitrix24", "acme.bitrix24.ru", contact)


FRED, ANNA, BORIS, CARL, DORA, EVA = (ref(c) for c in ("1", "2", "3", "4", "5", "6"))
MARCH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
FEBRUARY = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
NOW = datetime(2026, 5, 22, 12, 0, tzinfo=UTC)
TOKEN = "money-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
NBSP = "\u00a0"


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {
        "currency": "RUB",
        "point_value": "0.5",
        "tiers": [
            {"name": "Bronze", "min_spend": "0", "rate": "0.05"},
            {"name": "Silver", "min_spend": "10000", "rate": "0.10"},
        ],
        "welcome_bonus": "100",
        "points_lifetime_days": 100,
        "rewards": [{"id": "mug", "name": "Branded mug", "cost": 40}],
    }


@pytest.fixture
def settings(tmp_path: Path, database_url: str, program_settings: dict[str, Any]) -> Settings:
    return make_settings(tmp_path, database_url, program=program_settings,
                         server={"admin_token": TOKEN})


def at(clock: Clock, month: int, day: int) -> None:
    clock.now = datetime(2026, month, day, 12, 0, tzinfo=UTC)


@pytest.fixture
def services(settings: Settings, clock: Clock) -> Iterator[Services]:
    """Six customers from January to May; each line's points and the lot's expiry."""
    built = fresh_services(settings, clock=clock)
    ledger = built.ledger
    at(clock, 1, 5)
    ledger.accrue(FRED, D("500"), key="f1")                  # +50, expires Apr 15
    at(clock, 2, 10)
    ledger.accrue(ANNA, D("2000"), key="a1")                 # +200, expires May 21
    ledger.grant_bonus(ANNA, "welcome", key="welcome:anna")  # +100, expires May 21
    at(clock, 2, 15)
    ledger.accrue(BORIS, D("1000"), key="b1")                # +100, expires May 26
    at(clock, 3, 3)
    ledger.accrue(CARL, D("3000"), key="c1")                 # +300, expires Jun 11
    at(clock, 3, 5)
    ledger.accrue(ANNA, D("4000"), key="a2")                 # +400, expires Jun 13
    at(clock, 3, 6)
    ledger.redeem(ANNA, D("150"), key="r1")                  # -150 from the 200 of Feb 10
    at(clock, 3, 8)
    built.claims.claim(ANNA, "mug", key="m1", via="cli")     # -40: that lot keeps 10
    at(clock, 3, 25)
    ledger.accrue(CARL, D("1000"), key="c2")                 # +100 ...
    at(clock, 3, 26)
    ledger.reverse(CARL, "c2", key="c2:reverse")             # ... taken back: -100, -1000
    at(clock, 3, 28)
    ledger.accrue(EVA, D("12000"), key="e1")                 # +1200, expires Jul 6; Silver
    at(clock, 4, 2)
    ledger.accrue(EVA, D("1000"), key="e2")                  # +200 at Silver, expires Jul 11
    at(clock, 5, 20)
    ledger.grant_bonus(DORA, "welcome", key="welcome:dora")  # +100, expires Aug 28
    clock.now = NOW
    assert ledger.expire_due() == 3                          # lots: Fred -50, Anna -10, -100
    yield built
    built.close()


def view_of(services: Services, period: tuple[datetime, datetime]) -> MoneyView:
    with services.db.transaction(write=False) as session:
        return money_view(session, services.settings.program, since=period[0],
                          until=period[1], at=NOW)


def test_liability_and_what_expires_soon(services: Services) -> None:
    view = view_of(services, MARCH)
    # Left on 22 May: Boris 100, Carl 300, Anna 400, Eva 1200 + 200, Dora 100 = 2300.
    assert view.outstanding_points == D("2300.00")
    assert view.liability == D("1150.00")                      # 2300 x 0.5
    # Before 21 Jun: Boris (26 May), Carl (11 Jun), Anna (13 Jun) = 800 points.
    assert (view.expiring_30_points, view.expiring_30) == (D("800.00"), D("400.00"))
    # Before 20 Aug: all but Dora's 100 (28 Aug) = 2200 points.
    assert (view.expiring_90_points, view.expiring_90) == (D("2200.00"), D("1100.00"))


def test_breakage_by_cohort(services: Services) -> None:
    # February's issue: Anna 200 + 100, Boris 100 = 400; expired since: Anna's 10 + 100.
    february = view_of(services, FEBRUARY)
    assert (february.issued_points, february.issued_expired_points) == (D("400.00"),
                                                                        D("110.00"))
    assert february.breakage == D("0.2750")                    # 110 / 400
    # March's: Carl 300 + 100, Anna 400, Eva 1200 = 2000, less Carl's 100 taken back by the
    # reversal = 1900; none of it has expired yet.
    march = view_of(services, MARCH)
    assert (march.issued_points, march.issued_expired_points) == (D("1900.00"), D("0.00"))
    assert march.breakage == D("0.0000")


def test_cost_revenue_and_churn_of_march(services: Services) -> None:
    view = view_of(services, MARCH)
    assert (view.redeemed_points, view.redeemed_cost) == (D("150.00"), D("75.00"))
    assert (view.reward_points, view.reward_cost) == (D("40.00"), D("20.00"))
    assert view.tier_discounts is None                         # the ledger never sees them
    assert view.cost == D("95.00")                             # 75 + 20
    assert view.revenue == D("19000.00")                       # 3000 + 4000 + 1000 - 1000 + 12000
    assert view.cost_share == D("0.0050")                      # 95 / 19000
    # February's buyers: Anna, Boris; March's: Carl, Anna, Eva. Boris is gone: 1 of 2.
    assert (view.previously_active, view.churned, view.churn) == (2, 1, D("0.5000"))
    assert view.roi is None


def test_ltv_per_tier_and_segment(services: Services) -> None:
    # Segments as the rfm_segments job would have stored them (its scoring is tested in
    # test_rfm.py); Boris not scored yet, Dora never bought.
    with services.db.engine.begin() as connection:
        for contact, segment in (("1", "lost"), ("2", "loyal"), ("4", "new"),
                                 ("6", "champions")):
            connection.execute(text("UPDATE accounts SET segment = :s WHERE contact_id = :c"),
                               {"s": segment, "c": contact})
    view = view_of(services, MARCH)
    # Bronze: Fred 500, Anna 6000, Boris 1000, Carl 3000 (1000 returned) = 10500 / 4.
    assert view.ltv_tiers == [LTVRow("Bronze", 4, D("10500.00"), D("2625.00")),
                              LTVRow("Silver", 1, D("13000.00"), D("13000.00"))]
    assert view.ltv_segments == [
        LTVRow("champions", 1, D("13000.00"), D("13000.00")),
        LTVRow("loyal", 1, D("6000.00"), D("6000.00")),
        LTVRow("new", 1, D("3000.00"), D("3000.00")),
        LTVRow("lost", 1, D("500.00"), D("500.00")),
        LTVRow(None, 1, D("1000.00"), D("1000.00")),
    ]


def test_empty_books_give_zeros_and_no_rates(settings: Settings, clock: Clock) -> None:
    empty = fresh_services(settings, clock=clock)
    try:
        view = view_of(empty, MARCH)
    finally:
        empty.close()
    assert (view.liability, view.cost, view.revenue) == (D("0.00"), D("0.00"), D("0.00"))
    assert view.breakage is None and view.churn is None and view.cost_share is None
    assert view.ltv_tiers == [LTVRow("Bronze", 0, D("0.00"), None),
                              LTVRow("Silver", 0, D("0.00"), None)]
    assert view.ltv_segments == []


def test_an_overdraft_is_not_netted_against_the_liability(settings: Settings,
                                                           clock: Clock) -> None:
    allowing = settings.model_copy(update={"program": settings.program.model_copy(
        update={"negative_balance": "allow"})})
    built = fresh_services(allowing, clock=clock)
    try:
        built.ledger.accrue(ANNA, D("1000"), key="a")         # +100
        built.ledger.redeem(ANNA, D("100"), key="r")          # -100: 0 left
        built.ledger.reverse(ANNA, "a", key="a:reverse")      # -100 more: balance -100
        built.ledger.accrue(BORIS, D("2000"), key="b")        # +200
        view = view_of(built, MARCH)
    finally:
        built.close()
    assert view.outstanding_points == D("200.00")             # Boris; Anna owes, not owed
    assert view.liability == D("100.00")


def test_query_count_does_not_grow_with_accounts(services: Services) -> None:
    def statements() -> int:
        seen: list[str] = []

        def listener(*args: Any) -> None:
            seen.append(args[2])

        event.listen(services.db.engine, "before_cursor_execute", listener)
        try:
            view_of(services, MARCH)
        finally:
            event.remove(services.db.engine, "before_cursor_execute", listener)
        return len(seen)

    few = statements()
    for number in range(15):
        services.ledger.accrue(ref(f"x{number}"), D("100"), key=f"many:{number}")
    assert statements() == few


def test_bad_period_is_refused(services: Services) -> None:
    with pytest.raises(ValueError, match="after"):
        view_of(services, (MARCH[1], MARCH[0]))
    with pytest.raises(ValueError, match="timezone"):
        view_of(services, (datetime(2026, 3, 1), datetime(2026, 3, 2)))


def test_json_and_table(services: Services) -> None:
    view = view_of(services, MARCH)
    data = json.loads(json.dumps(view.as_json()))
    assert data["liability"] == "1150.00" and data["point_value"] == "0.5"
    assert data["tier_discounts"] is None and data["roi"] is None
    assert data["ltv_tiers"][0] == {"group": "Bronze", "customers": 4,
                                    "revenue": "10500.00", "ltv": "2625.00"}
    table = format_money(view, translator("en"))
    assert table[0] == "Money view, RUB (1 point = 0.50\u00a0₽)"
    assert "liability       1,150\u00a0₽ (2,300\u00a0points)" in table
    assert ("program cost    95\u00a0₽: redeemed 75\u00a0₽, rewards 20\u00a0₽, tier discounts "
            "not known") in table
    assert "churn           50.00% of 2 active in the previous period" in table
    assert "ROI             — (needs a campaign with a holdout group)" in table
    assert "LTV by tier     Bronze 2,625\u00a0₽ (4), Silver 13,000\u00a0₽ (1)" in table


@pytest.mark.parametrize(("language", "lines"), [
    ("ru", ["Экономика программы, RUB (1 балл = 0,50\u00a0₽)",
            "обязательства      1\u00a0150\u00a0₽ (2\u00a0300\u00a0баллов)",
            "затраты            95\u00a0₽: списано баллами 75\u00a0₽, награды 20\u00a0₽, "
            "скидки уровней — неизвестно",
            "отток              50,00\u00a0% из 2 активных в прошлом периоде"]),
    ("uk", ["зобов'язання       1\u00a0150\u00a0₽ (2\u00a0300\u00a0балів)",
            "відтік             50,00% з 2 активних у попередньому періоді"]),
])
def test_the_table_in_russian_and_ukrainian(services: Services, language: str,
                                            lines: list[str]) -> None:
    table = format_money(view_of(services, MARCH), translator(language))
    for line in lines:
        assert line in table, table


def test_stats_command_prints_and_returns_the_money_view(services: Services,
                                                        settings: Settings,
                                                        tmp_path: Path) -> None:
    config = tmp_path / "money.toml"
    config.write_text(f'[database]\nurl = "{settings.database.url}"\n\n[program]\n'
                      'point_value = "0.5"\nrewards = [{ id = "mug", name = "Mug", '
                      'cost = 40 }]\n', encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config), "stats", "--since", "2026-03-01",
                                 "--until", "2026-04-01", "--json"])
    assert result.exit_code == 0, result.output
    money = json.loads(result.stdout)["money"]
    # The period's figures do not depend on when the command runs; a Moscow month.
    assert (money["cost"], money["revenue"], money["churn"]) == ("95.00", "19000.00",
                                                                  "0.5000")
    assert money["since"] == "2026-02-28T21:00:00+00:00" and money["roi"] is None
    shown = runner.invoke(cli, ["--config", str(config), "stats", "--since", "2026-03-01",
                                "--until", "2026-04-01"])
    assert shown.exit_code == 0, shown.output
    # Below the points table, in the default language (Russian).
    points, money_table = shown.stdout.split("\n\n")
    assert "начислено" in points and "обязательства" not in points
    assert money_table.splitlines()[0] == "Экономика программы, RUB (1 балл = 0,50\u00a0₽)"
    assert "отток              50,00\u00a0% из 2 активных в прошлом периоде" in money_table


def test_metrics_gauges_of_the_liability(services: Services) -> None:
    samples = {(sample.name, frozenset(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(
                   services.metrics.exposition().decode())
               for sample in family.samples}
    # The figures of test_liability_and_what_expires_soon, read at the services' clock (NOW).
    assert samples[("loyalty_points_outstanding", frozenset())] == 2300
    assert samples[("loyalty_liability", frozenset({("currency", "RUB")}))] == 1150
    assert samples[("loyalty_points_expiring", frozenset({("within_days", "30")}))] == 800
    assert samples[("loyalty_liability_expiring", frozenset(
        {("within_days", "90"), ("currency", "RUB")}))] == 1100
    assert samples[("loyalty_metrics_database_read_failed",
                    frozenset({("scrape", "liability")}))] == 0


# -- the admin API -----------------------------------------------------------------------------
def test_the_api_answers_the_money_view(services: Services) -> None:
    client = create_app(services=services).test_client()
    # A Moscow month, as `stats --since --until` reads dates.
    answer = client.get("/api/v1/economics?since=2026-03-01&until=2026-04-01", headers=BEARER)
    assert answer.status_code == 200, answer.json
    assert answer.json["since"] == "2026-02-28T21:00:00+00:00"
    assert (answer.json["cost"], answer.json["revenue"], answer.json["liability"]) == (
        "95.00", "19000.00", "1150.00")
    assert answer.json["tier_discounts"] is None and answer.json["roi"] is None
    # The last 90 days up to NOW (21 Feb - 22 May): redemption and reward of March in it.
    recent = client.get("/api/v1/economics?days=90", headers=BEARER).json
    assert (recent["redeemed_cost"], recent["reward_cost"]) == ("75.00", "20.00")
    assert recent["until"] == NOW.isoformat()


@pytest.mark.parametrize("query", ["days=0", "days=x", "since=2026-03-01",
                                   "since=2026-03-01&until=2026-02-01",
                                   "since=2026-02-30&until=2026-04-01",
                                   "since=0001-01-01&until=2026-04-01",
                                   "days=5&since=2026-03-01&until=2026-04-01"])
def test_the_api_refuses_a_bad_period(services: Services, query: str) -> None:
    client = create_app(services=services).test_client()
    answer = client.get(f"/api/v1/economics?{query}", headers=BEARER)
    assert answer.status_code == 400 and answer.json["error"] == "invalid_request", answer.json


def test_the_api_wants_the_admin_token(services: Services) -> None:
    client = create_app(services=services).test_client()
    assert client.get("/api/v1/economics").status_code == 401


# -- the dashboard page and its CSV ------------------------------------------------------------
def client_of(services: Services) -> FlaskClient:
    return create_app(services=services).test_client()


def test_the_money_page_shows_the_figures(services: Services) -> None:
    # 90 days up to 22 May (Moscow): from 22 Feb 00:00, so March's redemption, reward and
    # purchases are in it and February's buyers are the previous period's.
    page = client_of(services).get("/dashboard/money?days=90", headers=BEARER)
    assert page.status_code == 200
    html = unescape(page.get_data(as_text=True))
    assert f'id="kpi-liability">1{NBSP}150{NBSP}₽<' in html
    assert f'id="kpi-expiring-30">400{NBSP}₽<' in html
    assert f'id="kpi-cost">95{NBSP}₽<' in html
    assert 'id="kpi-roi">—<' in html
    for name in ("summary", "liability", "cost", "ltv-tiers", "ltv-segments"):
        assert f'href="money/{name}.csv?days=90"' in html
    assert "<svg" in html and "<script" not in html
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_each_table_as_csv(services: Services) -> None:
    client = client_of(services)
    got = client.get("/dashboard/money/ltv-tiers.csv?days=90", headers=BEARER)
    assert got.status_code == 200 and got.mimetype == "text/csv"
    assert got.headers["Content-Disposition"] == 'attachment; filename="money-ltv-tiers-90d.csv"'
    assert got.get_data(as_text=True) == ("group,customers,revenue,ltv\r\n"
                                          "Bronze,4,10500.00,2625.00\r\n"
                                          "Silver,1,13000.00,13000.00\r\n")
    liability = client.get("/dashboard/money/liability.csv", headers=BEARER)
    # 800 points within 30 days, 2200 - 800 in 31-90, 2300 - 2200 later (Dora's bonus).
    assert liability.get_data(as_text=True).splitlines() == [
        "horizon,points,money", "within_30_days,800.00,400.00",
        "31_to_90_days,1400.00,700.00", "later_or_never,100.00,50.00"]
    cost = client.get("/dashboard/money/cost.csv?days=90", headers=BEARER)
    assert cost.get_data(as_text=True).splitlines() == [
        "part,points,money", "redeemed,150.00,75.00", "rewards,40.00,20.00",
        "tier_discounts,,"]
    summary = client.get("/dashboard/money/summary.csv?days=90", headers=BEARER)
    # From 22 Feb (Moscow): March's 19000 + Eva's 1000 of 2 April; 95 / 20000 = 0.00475. The
    # 90 days before bought Fred, Anna, Boris; only Anna again: 2 of 3 gone.
    assert summary.get_data(as_text=True).splitlines() == [
        "figure,value", "liability,1150.00", "expiring_30,400.00", "expiring_90,1100.00",
        "breakage,0.0000", "cost,95.00", "revenue,20000.00", "cost_share,0.0048",
        "churn,0.6667", "roi,"]
    assert client.get("/dashboard/money/secrets.csv", headers=BEARER).status_code == 404


@pytest.mark.parametrize("path", ["/dashboard/money", "/dashboard/money/summary.csv"])
def test_the_money_page_wants_the_dashboard_sign_in(services: Services, path: str) -> None:
    client = client_of(services)
    refused = client.get(path)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"admin:wrong").decode()
    assert client.get(path, headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    assert client.get(path, headers={"Authorization": f"Basic {right}"}).status_code == 200


# -- in a real browser -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the same HTML either way
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium "
                    "(apt-get install -y chromium) for the headless browser test")
def test_the_money_page_in_a_real_browser(services: Services, served: str,
                                         tmp_path: Path) -> None:
    update_segments(services.db, NOW, services.settings.rfm.active_days)  # LTV by segment
    url = served.replace("http://", f"http://admin:{TOKEN}@") + "/dashboard/money?days=90"
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert 'id="money-kpis"' in dom.stdout, dom.stderr[-2000:]
    shown = unescape(dom.stdout)
    # Russian, the default language; the figures of test_the_money_page_shows_the_figures.
    assert f'id="kpi-liability">1{NBSP}150{NBSP}₽<' in shown and "Обязательства" in shown
    assert shown.count("<svg") == 4  # liability, cost, LTV by tier and by segment

    colours = screenshot(url, tmp_path, "money.png")
    assert (0x1c, 0x7e, 0xd6) in colours  # the liability bars (--owed)
    assert (0xe8, 0x59, 0x0c) in colours  # the cost bars (--cost)


# -- found in review ---------------------------------------------------------------------------
def test_redeemed_points_given_back_by_returns_are_not_a_cost(settings: Settings,
                                                              clock: Clock) -> None:
    """Points that paid for a purchase come back to the customer when it is returned (in
    part or in full) or its deal is reversed: they are owed again, not spent. Like a reward
    claim cancelled since, what came back is left out of the cost of the redemption's period."""
    built = fresh_services(settings, clock=clock)
    ledger = built.ledger
    try:
        at(clock, 2, 20)
        ledger.accrue(ANNA, D("10000"), key="gift")                        # +1000
        ledger.redeem(ANNA, D("200"), key="pay-1", source="order-1",
                      purchase_amount=D("1000"))                            # -200
        ledger.accrue(ANNA, D("1000"), key="order-1")                      # +50
        ledger.redeem(ANNA, D("60"), key="pay-2", source="order-2",
                      purchase_amount=D("600"))                             # -60
        ledger.accrue(ANNA, D("600"), key="order-2")                       # +30
        ledger.redeem(ANNA, D("40"), key="pay-3", source="deal-3")         # -40, deal lost...
        ledger.redeem(ANNA, D("100"), key="pay-4", source="order-4",
                      purchase_amount=D("500"))                             # -100, kept
        at(clock, 3, 10)
        ledger.return_purchase(ANNA, "order-1", D("250"), key="ret-1")     # 50 of 200 back
        ledger.reverse(ANNA, "order-2", key="rev-2")                       # all 60 back
        ledger.reverse(ANNA, "deal-3", key="rev-3")                        # ... 40 back
        first = view_of(built, FEBRUARY)
        at(clock, 3, 12)
        ledger.return_purchase(ANNA, "order-1", D("750"), key="ret-2")     # the other 150
        second, march = view_of(built, FEBRUARY), view_of(built, MARCH)
    finally:
        built.close()
    # 400 redeemed in February; 50 + 60 + 40 came back by 10 March: 250 stand, 125 in money.
    assert (first.redeemed_points, first.redeemed_cost, first.cost) == (
        D("250.00"), D("125.00"), D("125.00"))
    # The last return of order-1 gives its other 150 back: only order-4's 100 stand.
    assert (second.redeemed_points, second.redeemed_cost) == (D("100.00"), D("50.00"))
    # March redeemed nothing: what came back in it is not a negative cost there.
    assert (march.redeemed_points, march.cost) == (D("0.00"), D("0.00"))


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(services: Services) -> None:
    """Tier names are free text in the config and the accounts keep a tier or segment no
    longer configured: a cell starting with = + - @ (or a tab or carriage return) is a
    formula to Excel and LibreOffice, so it is written with a leading apostrophe. Numbers,
    negative ones included, stay numbers."""
    with services.db.engine.begin() as connection:
        for contact, tier, segment in (("1", "=HYPERLINK(\"http://x\",\"y\")", "@SUM(1)"),
                                       ("2", "+Gold", "-lost"), ("3", "\tTab", None)):
            connection.execute(text("UPDATE accounts SET tier = :t, segment = :s "
                                    "WHERE contact_id = :c"),
                               {"t": tier, "s": segment, "c": contact})
    client = client_of(services)
    tiers = client.get("/dashboard/money/ltv-tiers.csv?days=90", headers=BEARER)
    assert tiers.get_data(as_text=True).splitlines() == [
        "group,customers,revenue,ltv", "Bronze,1,3000.00,3000.00",
        "Silver,1,13000.00,13000.00", "'\tTab,1,1000.00,1000.00", "'+Gold,1,6000.00,6000.00",
        "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",1,500.00,500.00"]
    segments = client.get("/dashboard/money/ltv-segments.csv?days=90", headers=BEARER)
    assert segments.get_data(as_text=True).splitlines() == [
        "group,customers,revenue,ltv", "'-lost,1,6000.00,6000.00", "'@SUM(1),1,500.00,500.00",
        ",3,17000.00,5666.67"]


def test_redeemed_points_given_back_and_then_expired_count_as_breakage(
        settings: Settings, clock: Clock) -> None:
    """A return gives redeemed points back in a new lot with the dates of the lot they came
    from; when they expire they are points issued in that lot's period that expired, so
    breakage counts them (and their issue once, in the first lot)."""
    built = fresh_services(settings, clock=clock)
    ledger = built.ledger
    try:
        at(clock, 2, 10)
        ledger.accrue(ANNA, D("2000"), key="a1")                   # +200, expires May 21
        ledger.accrue(BORIS, D("1000"), key="b1")                  # +100, expires May 21
        ledger.redeem(ANNA, D("150"), key="pay", source="order",
                      purchase_amount=D("300"))                     # -150 of the 200
        # Carl's points are a hand adjustment, not issued: given back, they stay out.
        ledger.adjust(CARL, D("80"), key="carl", reason="goodwill")   # +80, expires May 21
        ledger.redeem(CARL, D("80"), key="carl-pay", source="carl-order")
        at(clock, 3, 1)
        ledger.reverse(ANNA, "order", key="order:reverse")         # the 150 back, same dates
        ledger.reverse(CARL, "carl-order", key="carl:reverse")     # the 80 back, same dates
        clock.now = NOW
        assert ledger.expire_due() == 4                            # 50 + 150 of Anna, Boris's
        #                                                            100, Carl's 80
        view = view_of(built, FEBRUARY)
    finally:
        built.close()
    assert (view.issued_points, view.issued_expired_points) == (D("300.00"), D("300.00"))
    assert view.breakage == D("1.0000")


def test_the_liability_gauges_read_the_books_once_a_minute(services: Services) -> None:
    """The gauges scan every account and every open lot (about 150 ms on PostgreSQL at
    300,000 accounts and 1M lots): /metrics's 5-second cache would repeat that on nearly
    every scrape, for figures that move slowly. They are read again after a minute."""
    from connector.economics.gauges import Liability

    gauge = Liability(services.settings.program)
    seen: list[str] = []

    def listener(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT"):
            seen.append(args[2])

    def read(moment: datetime) -> dict[str, float]:
        seen.clear()
        event.listen(services.db.engine, "before_cursor_execute", listener)
        try:
            with services.db.transaction(write=False) as session:
                families = list(gauge(session, moment))
        finally:
            event.remove(services.db.engine, "before_cursor_execute", listener)
        return {family.name: family.samples[0].value for family in families}

    first = read(NOW)
    assert first["loyalty_points_outstanding"] == 2300 and len(seen) == 2
    services.ledger.accrue(FRED, D("1000"), key="later")                  # +100
    assert read(NOW + timedelta(seconds=59)) == first and seen == []
    again = read(NOW + timedelta(seconds=60))
    assert again["loyalty_points_outstanding"] == 2400 and len(seen) == 2


def test_imported_openings_are_not_issued_points_nor_revenue(settings: Settings,
                                                              clock: Clock) -> None:
    """An opening balance brought in by an import was issued by the program before: it is
    owed (liability) and its redemption costs, but it is not the period's issue, so its
    expiry is no breakage of the period, and it brings no revenue."""
    from connector.imports.rows import RawRow
    from connector.imports.runner import run_import

    built = fresh_services(settings, clock=clock)
    ledger = built.ledger
    try:
        at(clock, 2, 10)
        ledger.accrue(ANNA, D("2000"), key="a1")                        # +200, to May 21
        at(clock, 2, 12)
        imported = run_import(built, "bitrix24", "acme.bitrix24.ru", [
            RawRow(2, {"contact_id": "7", "balance": "500", "expires": "2026-04-01"})],
            source="customers.csv", apply=True)
        assert imported.applied is not None and imported.applied.entries == 1
        ledger.redeem(ref("7"), D("100"), key="seven-pays")            # -100 of the 500
        before = view_of(built, FEBRUARY)
        ledger.expire_due(as_of=datetime(2026, 6, 1, tzinfo=UTC))      # 400 + 200 expire
        after = view_of(built, FEBRUARY)
    finally:
        built.close()
    assert (before.outstanding_points, before.liability) == (D("600.00"), D("300.00"))
    assert (before.issued_points, before.revenue) == (D("200.00"), D("2000.00"))
    assert (before.redeemed_points, before.cost) == (D("100.00"), D("50.00"))
    assert (after.issued_points, after.issued_expired_points, after.breakage) == (
        D("200.00"), D("200.00"), D("1.0000"))


def test_no_cost_share_of_a_period_whose_returns_exceed_its_sales(settings: Settings,
                                                                  clock: Clock) -> None:
    """A quiet period with the return of an earlier big purchase has negative net revenue:
    cost over it would be a negative share (and break the API's rate pattern), so it is
    not given, as when there is no revenue at all."""
    built = fresh_services(settings, clock=clock)
    ledger = built.ledger
    try:
        at(clock, 2, 10)
        ledger.accrue(ANNA, D("10000"), key="big")                     # +1000
        at(clock, 3, 5)
        ledger.redeem(ANNA, D("100"), key="pays")                      # -100: a cost of 50
        ledger.accrue(BORIS, D("1000"), key="small")
        ledger.return_purchase(ANNA, "big", D("4000"), key="big:part")
        view = view_of(built, MARCH)
    finally:
        built.close()
    assert (view.revenue, view.cost) == (D("-3000.00"), D("50.00"))
    assert view.cost_share is None
    assert view.as_json()["cost_share"] is None


@pytest.mark.parametrize(("path", "disabled"), [
    ("/api/v1/economics", "api_disabled"), ("/dashboard/money", "dashboard_disabled"),
    ("/dashboard/money/summary.csv", "dashboard_disabled")])
def test_the_new_routes_are_closed_like_their_neighbours(tmp_path: Path, database_url: str,
                                                         program_settings: dict[str, Any],
                                                         services: Services, path: str,
                                                         disabled: str) -> None:
    """Without an admin token configured the API and the dashboard answer 403 (as the
    existing /api/v1 and /dashboard do); with one, a wrong token is 401."""
    wrong = client_of(services).get(path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    closed = make_settings(tmp_path, database_url, program=program_settings)
    unset = fresh_services(closed, clock=Clock(NOW))
    try:
        answer = create_app(services=unset).test_client().get(path, headers=BEARER)
    finally:
        unset.close()
    assert answer.status_code == 403 and answer.json["error"] == disabled, answer.json
