"""Control groups: who is held out, what they get (nothing from the campaign), what is
recorded, and the report's figures on small books worked by hand."""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP
from decimal import Decimal as D
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from scipy import stats
from sqlalchemy import select

from connector.campaigns.figures import rates, welch
from connector.campaigns.groups import CONTROL, TREATED, group, position
from connector.campaigns.models import CampaignGroup
from connector.campaigns.report import incremental_revenue, report
from connector.config import Settings, TriggerHoldout, load_settings
from connector.crm.models import TriggerEvent
from connector.db import Database
from connector.errors import ConfigError, UnknownCampaignError
from connector.i18n import translator
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef
from connector.program import Program
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.triggers import HELD_OUT, POINTS_ACCRUED
from tests.conftest import TOKEN, Clock
from tests.test_dashboard import ARTIFACTS, CHROMIUM, chromium, png_colours
from tests.test_dashboard import WINDOW as SCREEN

SPRING = "spring-x2"
# Europe/Moscow (UTC+3): the window is 2026-02-28 21:00 to 2026-03-30 21:00 UTC.
WINDOW = {"starts": "2026-03-01T00:00:00", "ends": "2026-03-31T00:00:00"}
AFTER = datetime(2026, 4, 2, tzinfo=UTC)


def ref(contact: int) -> AccountRef:
    return AccountRef("bitrix24", "acme.bitrix24.ru", str(contact))


@pytest.fixture
def program_settings() -> dict[str, Any]:
    # Bronze earns 3%; the campaign doubles it for the treated half.
    return {"campaigns": [{"name": SPRING, "multiplier": "2", "holdout": "0.5", **WINDOW}]}


def split(db: Database, ledger: Ledger, count: int, name: str, share: str
          ) -> tuple[list[AccountRef], list[AccountRef]]:
    """Open `count` accounts and sort them by the group the hash gives them."""
    treated: list[AccountRef] = []
    control: list[AccountRef] = []
    for contact in range(1, count + 1):
        account_id = ledger.open_account(ref(contact))
        (control if group(name, account_id, D(share)) == CONTROL else treated).append(
            ref(contact))
    return treated, control


def recorded(db: Database, name: str) -> dict[int, tuple[str, datetime]]:
    with db.transaction(write=False) as session:
        return {row.account_id: (row.grp, row.first_seen_at) for row in session.scalars(
            select(CampaignGroup).where(CampaignGroup.campaign == name))}


# -- the split -------------------------------------------------------------------------------
def test_the_holdout_is_about_its_share_and_the_same_on_every_call() -> None:
    drawn = [group("birthday-mail", account_id, D("0.1")) for account_id in range(1, 10_001)]
    share = drawn.count(CONTROL) / len(drawn)
    # Binomial(10000, 0.1): sd 0.003, so 0.09-0.11 is more than three sd either way.
    assert 0.09 < share < 0.11
    assert drawn == [group("birthday-mail", a, D("0.1")) for a in range(1, 10_001)]
    # sha256, not hash(): the position of a customer is a fixed number, whatever the process.
    assert position("birthday-mail", 1) == int.from_bytes(
        __import__("hashlib").sha256(b"birthday-mail\x001").digest()[:8], "big") / 2 ** 64
    # Another test draws its own split: its control group is not this one's.
    other = [group("tier-up-mail", a, D("0.1")) for a in range(1, 10_001)]
    both = sum(1 for a, b in zip(drawn, other, strict=True) if a == b == CONTROL)
    assert both < 200  # independent: about 1% of 10,000 (100), not 10% (1,000)


def test_a_holdout_over_half_or_a_name_used_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="holdout"):
        load_settings(None, program={"campaigns": [{"name": "a", "holdout": "0.6", **WINDOW}]})
    with pytest.raises(ConfigError, match="used twice"):
        load_settings(None, program={
            "campaigns": [{"name": "loyalty_birthday", "holdout": "0.1", **WINDOW}],
            "trigger_holdouts": [{"trigger": "loyalty_birthday", "holdout": "0.1"}]})
    with pytest.raises(ConfigError, match="not a mailing"):
        load_settings(None, program={"trigger_holdouts": [
            {"trigger": "loyalty_reward_claimed", "holdout": "0.1"}]})


# -- campaigns -------------------------------------------------------------------------------
@pytest.mark.storage
def test_control_customers_get_no_campaign_points_and_are_recorded_once(
        db: Database, ledger: Ledger, clock: Clock) -> None:
    treated, control = split(db, ledger, 8, SPRING, "0.5")
    assert treated and control
    first = ledger.accrue(treated[0], D("1000"), key="t0-1")
    held = ledger.accrue(control[0], D("1000"), key="c0-1")
    assert first.points == D("60.00") and first.details["tests"] == {SPRING: {
        "group": TREATED, "points": "30.00", "base_rate": "0.03", "base_multiplier": "1",
        "fixed": "0"}}
    assert first.details["campaigns"] == [SPRING]
    assert held.points == D("30.00") and held.details["campaigns"] == []
    assert held.details["tests"] == {SPRING: {"group": CONTROL, "points": "0.00"}}
    clock.advance(days=1)
    ledger.accrue(control[0], D("1000"), key="c0-2")
    groups = recorded(db, SPRING)
    # Written at the first purchase in the window, not again at the second.
    assert groups == {first.account_id: (TREATED, datetime(2026, 3, 10, 9, 0, tzinfo=UTC)),
                      held.account_id: (CONTROL, datetime(2026, 3, 10, 9, 0, tzinfo=UTC))}
    # The preview for a known customer says what the purchase would really earn.
    assert ledger.preview(D("1000"), control[0]).points_earned == D("30.00")
    assert ledger.preview(D("1000"), treated[0]).points_earned == D("60.00")


@pytest.mark.storage
def test_campaign_report_on_a_book_worked_by_hand(db: Database, ledger: Ledger,
                                                   clock: Clock) -> None:
    treated, control = split(db, ledger, 10, SPRING, "0.5")
    assert len(treated) >= 4 and len(control) >= 4
    # Treated: 1000, 2000 + 1000 (two purchases), 3000; a fourth bought 700, returned all.
    for key, (who, amount) in enumerate([(treated[0], "1000"), (treated[1], "2000"),
                                         (treated[1], "1000"), (treated[2], "3000"),
                                         (treated[3], "700"),
                                         (control[0], "500"), (control[1], "1500")]):
        ledger.accrue(who, D(amount), key=f"p{key}", source=f"deal-{key}")
    ledger.reverse(treated[3], "deal-4", key="return-4")
    # 1000 more on deal-1, of which 400 come back: the campaign's second 3% stays on 600.
    ledger.accrue(treated[0], D("1000"), key="p-more", source="deal-more")
    ledger.return_purchase(treated[0], "deal-more", D("400"), key="return-more")
    ledger.accrue(treated[0], D("9999"), key="before", source="old",
                  occurred_at=datetime(2026, 2, 20, tzinfo=UTC))  # before the window
    clock.now = AFTER
    with db.transaction(write=False) as session:
        result = report(session, ledger.program, SPRING, clock.now)
    t, c = result.groups[TREATED], result.groups[CONTROL]
    nt, nc = len(treated), len(control)
    assert (t.customers, t.buyers, t.purchases, t.revenue) == (nt, 3, 5, D("7600.00"))
    assert (c.customers, c.buyers, c.purchases, c.revenue) == (nc, 2, 2, D("2000.00"))
    assert t.average_check == D("1520.00") and c.average_check == D("1000.00")
    assert t.purchase_rate == (D(3) / nt).quantize(D("0.0001"))
    assert c.revenue_per_customer == (D(2000) / nc).quantize(D("0.01"))
    # Welch's interval is scipy's for the same arrays, and holds the difference.
    per_t = [1600.0, 3000.0, 3000.0] + [0.0] * (nt - 3)
    per_c = [500.0, 1500.0] + [0.0] * (nc - 2)
    expected = stats.ttest_ind(per_t, per_c, equal_var=False).confidence_interval(0.95)
    lift = result.revenue_per_customer
    assert lift is not None
    assert lift.difference == (D(7600) / nt - D(2000) / nc).quantize(D("0.01"))
    assert lift.low == D(expected.low).quantize(D("0.01"))
    assert lift.high == D(expected.high).quantize(D("0.01"))
    assert lift.low < lift.difference < lift.high
    check = result.average_check
    expected = stats.ttest_ind([1000.0, 2000.0, 1000.0, 3000.0, 600.0], [500.0, 1500.0],
                               equal_var=False).confidence_interval(0.95)
    assert check is not None and check.difference == D("520.00")
    assert (check.low, check.high) == (D(expected.low).quantize(D("0.01")),
                                       D(expected.high).quantize(D("0.01")))
    rate = result.purchase_rate
    assert rate is not None and rate.low < rate.difference < rate.high
    # The cost: the campaign's second 3% on the 7600 kept (the purchase returned in full
    # gave its points back, the one returned in part keeps them on 600), at point_value 1.
    assert result.cost_points == D("228.00") and result.cost == D("228.00")
    incremental = ((D(7600) / nt - D(2000) / nc) * nt).quantize(D("0.01"))
    assert result.incremental_revenue == incremental
    assert result.roi == ((incremental - D(228)) / D(228)).quantize(D("0.0001"))
    assert result.finished and result.recorded == {TREATED: 4, CONTROL: 2}
    with db.transaction(write=False) as session:
        assert incremental_revenue(session, ledger.program, datetime(2026, 3, 1, tzinfo=UTC),
                                   AFTER) == incremental
        assert incremental_revenue(session, ledger.program, AFTER,
                                   AFTER + timedelta(days=30)) is None
        with pytest.raises(UnknownCampaignError):
            report(session, ledger.program, "nope", clock.now)


@pytest.mark.storage
@pytest.mark.parametrize("program_settings", [
    {"campaigns": [{"name": SPRING, "multiplier": "2", **WINDOW}]}])
def test_without_a_holdout_every_customer_gets_the_campaign_and_nothing_is_recorded(
        db: Database, ledger: Ledger) -> None:
    for contact in range(1, 30):
        assert ledger.accrue(ref(contact), D("1000"), key=f"k{contact}").points == D("60.00")
    assert recorded(db, SPRING) == {}


# -- the A/B test ----------------------------------------------------------------------------
AB = {"ab_test": {"name": "rate-5", **WINDOW, "b": {"rate": "0.05"}}}


@pytest.mark.storage
@pytest.mark.parametrize("program_settings", [AB])
def test_ab_variants_earn_by_their_own_rules_and_are_reported(db: Database, ledger: Ledger,
                                                               clock: Clock) -> None:
    b, a = split(db, ledger, 8, "rate-5", "0.5")
    assert a and b
    on_b = ledger.accrue(b[0], D("1000"), key="b0")
    on_a = ledger.accrue(a[0], D("1000"), key="a0")
    assert on_b.points == D("50.00") and on_b.details["rate"] == "0.05"
    assert on_b.details["tests"]["rate-5"]["points"] == "20.00"
    assert on_a.points == D("30.00") and on_a.details["rate"] == "0.03"
    assert recorded(db, "rate-5") == {on_b.account_id: (TREATED, clock.now),
                                      on_a.account_id: (CONTROL, clock.now)}
    # A re-priced purchase keeps the variant it was accrued by.
    ledger.settle_purchase(b[0], "b0-deal", D("1000"))
    ledger.settle_purchase(b[0], "b0-deal", D("2000"))
    assert ledger.account(b[0]).balance == D("150.00")
    ledger.settle_purchase(b[0], "b0-deal", D("1500"))  # down again: 25 points back
    assert ledger.account(b[0]).balance == D("125.00")
    clock.now = AFTER
    with db.transaction(write=False) as session:
        result = report(session, ledger.program, "rate-5", clock.now)
    assert result.groups[TREATED].revenue == D("2500.00")
    assert result.groups[CONTROL].revenue == D("1000.00")
    # 2% more on each: 1000 (b0), 1000 (b0-deal), the 1000 its re-pricing added and the
    # 500 the next one took off.
    assert result.cost_points == D("50.00")
    assert result.groups[TREATED].customers + result.groups[CONTROL].customers == 8


# -- figures ---------------------------------------------------------------------------------
def test_the_rate_interval_is_newcombes_on_his_published_examples() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10.
    assert (rates(56, 70, 48, 80).low, rates(56, 70, 48, 80).high) == (D("0.0524"),
                                                                        D("0.3339"))
    found = rates(9, 10, 3, 10)
    assert (found.low, found.high) == (D("0.1705"), D("0.8090"))
    found = rates(5, 56, 0, 29)  # a zero: the plain normal interval would collapse here
    assert (found.low, found.high) == (D("-0.0381"), D("0.1926"))
    assert rates(0, 0, 1, 2) is None


def test_welch_gives_no_interval_it_cannot_have() -> None:
    assert welch([1.0], [1.0, 2.0]) is None
    assert welch([1.0, 1.0], [2.0, 2.0]) is None  # neither group varies
    found = welch([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 2.0])
    result = stats.ttest_ind([1, 2, 3, 4], [1, 1, 2, 2], equal_var=False)
    assert found is not None and math.isclose(float(found.high),
                                              result.confidence_interval().high, abs_tol=0.005)
    assert found.p_value == D(float(result.pvalue)).quantize(D("0.0001"))


def test_anonymous_previews_are_treated_and_on_variant_a() -> None:
    settings = load_settings(None, program={
        "campaigns": [{"name": SPRING, "multiplier": "2", "holdout": "0.5", **WINDOW}], **AB})
    program = Program(settings.program)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    earning = program.earn(D("1000"), tier=program.settings.tiers[0], at=at)
    assert earning.points == D("60.00") and earning.tests == ()


# -- triggers, against the fake Bitrix24 portal ----------------------------------------------
def test_control_customers_get_no_trigger_and_the_report_follows_them(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_bitrix24_e2e import app_harness

    # The trigger's moment is when it is recorded: on the test's clock, which keeps the
    # portal's time (deals are dated by it).
    monkeypatch.setattr("connector.triggers.utcnow", clock)
    clock.now = datetime.fromtimestamp(time.time(), UTC)

    def holdout(settings: Settings) -> Settings:
        program = settings.program.model_copy(update={"trigger_holdouts": [TriggerHoldout(
            trigger=POINTS_ACCRUED, holdout=D("0.5"), days=30, cost_per_send=D("2.50"))]})
        return settings.model_copy(update={"program": program})

    h = app_harness(tmp_path, database_url, portal, time, clock, adjust=holdout)
    h.connector.installer.install()
    contacts = [h.portal.add_contact(NAME=f"C{n}") for n in range(8)]
    deals = {contact: h.won(contact, "1000.00") for contact in contacts}
    h.process()
    ids = {contact: h.services.ledger.account_id(h.ref(contact)) for contact in contacts}
    placed = {c: group(POINTS_ACCRUED, a, D("0.5")) for c, a in ids.items() if a}
    assert len(placed) == 8 and set(placed.values()) == {TREATED, CONTROL}
    fired = [t for t in h.portal.fired_triggers if t["code"] == POINTS_ACCRUED]
    assert sorted(str(t["owner_id"]) for t in fired) == sorted(
        str(deals[c]) for c in contacts if placed[c] == TREATED)
    with h.services.db.transaction(write=False) as session:
        events = session.scalars(select(TriggerEvent).where(
            TriggerEvent.code == POINTS_ACCRUED)).all()
        status = {e.account_id: (e.status, e.last_error) for e in events}
    for contact, grp in placed.items():
        expected = ("sent", None) if grp == TREATED else ("skipped", HELD_OUT)
        assert status[ids[contact]] == expected
    groups = recorded(h.services.db, POINTS_ACCRUED)
    assert {a: g for a, (g, _) in groups.items()} == {ids[c]: g for c, g in placed.items()}
    # A second purchase a week later; the report waits until each customer's 30 days are
    # over, then compares.
    clock.advance(days=7)
    time.advance(7 * 86400)
    h.won(contacts[0], "500.00")
    h.process()
    with h.services.db.transaction(write=False) as session:
        early = report(session, h.services.program, POINTS_ACCRUED, clock.now)
        assert early.groups[TREATED].customers == early.groups[CONTROL].customers == 0
        clock.advance(days=30)
        result = report(session, h.services.program, POINTS_ACCRUED, clock.now)
    treated = list(placed.values()).count(TREATED)
    assert result.groups[TREATED].customers == treated
    assert result.groups[CONTROL].customers == 8 - treated
    # The first purchases came before the trigger's moment; only the second one counts.
    first = placed[contacts[0]]
    assert result.groups[first].revenue == D("500.00")
    assert result.groups[first].buyers == 1
    assert result.cost == D("2.50") * treated and result.cost_points is None
    h.services.close()


# -- the command line ------------------------------------------------------------------------
CLI_PROGRAM = """
[[program.campaigns]]
name = "spring-x2"
starts = 2026-03-01T00:00:00
ends = 2026-03-31T00:00:00
multiplier = 2
holdout = 0.5
"""


def test_campaigns_list_and_report_on_the_command_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from connector.cli import cli
    from connector.services import Services
    from tests.test_cli import write_config

    config = write_config(tmp_path, CLI_PROGRAM, english=False)  # the default language

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    assert run("db", "upgrade").exit_code == 0
    services = Services.build(load_settings(config), clock=Clock())
    treated, control = split(services.db, services.ledger, 8, SPRING, "0.5")
    services.ledger.accrue(treated[0], D("1000"), key="t0")
    services.ledger.accrue(treated[1], D("3000"), key="t1")
    services.ledger.accrue(control[0], D("500"), key="c0")
    services.close()
    listed = run("campaigns", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == [{
        "name": SPRING, "kind": "campaign", "control_share": "0.5",
        "starts": "2026-02-28T21:00:00+00:00", "ends": "2026-03-30T21:00:00+00:00",
        "days": None, "finished": True, "treated": 2, "control": 1}]
    shown = run("campaigns", "report", SPRING, "--json")
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["groups"]["treated"]["revenue"] == "4000.00"
    assert body["groups"]["control"]["revenue"] == "500.00"
    assert body["cost_points"] == "120.00"  # the second 3% on 4000
    nt, nc = len(treated), len(control)
    assert body["incremental_revenue"] == str(((D(4000) / nt - D(500) / nc) * nt)
                                              .quantize(D("0.01")))
    table = run("campaigns", "report", SPRING)
    assert table.exit_code == 0
    assert "выручка на клиента" in table.output and "4\u00a0000,00" in table.output
    unknown = run("campaigns", "report", "autumn")
    assert unknown.exit_code == 1 and "autumn" in unknown.output


# -- the admin API ---------------------------------------------------------------------------
@pytest.mark.storage
def test_the_api_lists_and_reports_and_refuses_an_unknown_name(api: Any, services: Any,
                                                                clock: Clock) -> None:
    treated, control = split(services.db, services.ledger, 6, SPRING, "0.5")
    services.ledger.accrue(treated[0], D("1000"), key="t0")
    services.ledger.accrue(control[0], D("1000"), key="c0")
    listed = api.get("/api/v1/campaigns")
    assert listed.status_code == 200
    assert [(c["name"], c["treated"], c["control"], c["finished"])
            for c in listed.json["campaigns"]] == [(SPRING, 1, 1, False)]
    clock.now = AFTER
    shown = api.get(f"/api/v1/campaigns/{SPRING}/report")
    assert shown.status_code == 200
    assert shown.json["cost_points"] == "30.00" and shown.json["finished"] is True
    assert shown.json["groups"]["treated"]["revenue"] == "1000.00"
    missing = api.get("/api/v1/campaigns/autumn/report")
    assert missing.status_code == 404 and missing.json["error"] == "unknown_campaign"
    assert api.client.get(f"/api/v1/campaigns/{SPRING}/report").status_code == 401


# -- the dashboard page ----------------------------------------------------------------------
def _book(services: Any, clock: Clock) -> None:
    treated, control = split(services.db, services.ledger, 12, SPRING, "0.5")
    for index, who in enumerate(treated[:4]):
        services.ledger.accrue(who, D(1000 * (index + 1)), key=f"t{index}")
    for index, who in enumerate(control[:2]):
        services.ledger.accrue(who, D(500 * (index + 1)), key=f"c{index}")
    clock.now = AFTER


@pytest.mark.storage
def test_the_campaign_page_shows_the_groups_and_the_intervals(client: Any, services: Any,
                                                              clock: Clock) -> None:
    from tests.test_dashboard import BEARER

    _book(services, clock)
    page = client.get(f"/dashboard/campaigns/{SPRING}", headers=BEARER)
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html
    with services.db.transaction(write=False) as session:
        result = report(session, services.program, SPRING, clock.now)
    assert result.revenue_per_customer is not None
    shown = translator("ru").money(result.groups[TREATED].revenue_per_customer, "RUB")
    assert f'id="rpc-treated">{shown}<' in html
    assert "выручка на клиента" in html and "<svg" in html and "<script" not in html
    assert html.count('<circle class="dot"') == 3
    board = client.get("/dashboard", headers=BEARER).get_data(as_text=True)
    assert '<a href="dashboard/campaigns">акции</a>' in board
    listed = client.get("/dashboard/campaigns", headers=BEARER).get_data(as_text=True)
    assert f'href="campaigns/{SPRING}"' in listed
    assert client.get("/dashboard/campaigns/autumn", headers=BEARER).status_code == 404
    assert client.get(f"/dashboard/campaigns/{SPRING}").status_code == 401


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_the_campaign_page_in_a_real_browser(served: str, services: Any, clock: Clock,
                                             tmp_path: Path) -> None:
    _book(services, clock)
    url = served.replace("http://", f"http://admin:{TOKEN}@") + f"/dashboard/campaigns/{SPRING}"
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert 'id="kpis"' in dom.stdout, dom.stderr[-2000:]
    assert "Разница" in unescape(dom.stdout)
    shot = tmp_path / "campaign.png"
    run = chromium(f"--screenshot={shot}", f"--window-size={SCREEN[0]},{SCREEN[1]}", url,
                   profile=tmp_path / "profile")
    assert shot.is_file(), run.stderr[-2000:]
    width, height, colours = png_colours(shot.read_bytes())
    assert (width, height) == SCREEN and len(colours) > 50
    assert (0x2B, 0x8A, 0x3E) in colours  # the treated bars are drawn
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "campaign.png")


# -- stats -----------------------------------------------------------------------------------
@pytest.mark.storage
def test_stats_carry_the_campaign_effect_of_campaigns_ended_in_the_period(
        services: Any, clock: Clock) -> None:
    from connector.stats import format_stats, program_stats

    _book(services, clock)
    march = (datetime(2026, 3, 1, tzinfo=UTC), AFTER)
    with services.db.transaction(write=False) as session:
        result = report(session, services.program, SPRING, clock.now)
        figures = program_stats(session, services.program, since=march[0], until=march[1])
        before = program_stats(session, services.program, since=march[0] - timedelta(days=60),
                               until=march[0])
    assert figures.campaign_effect == {
        "campaigns": 1, "incremental_revenue": str(result.incremental_revenue),
        "cost": str(result.cost)}
    assert json.loads(json.dumps(figures.as_json()))["campaign_effect"]["campaigns"] == 1
    assert before.campaign_effect == {"campaigns": 0, "incremental_revenue": None,
                                      "cost": "0.00"}
    lines = format_stats(figures, services.program.zone, translator("en"))
    assert [line for line in lines if line.startswith("campaigns ")] == [
        f"campaigns      1 ended: incremental revenue {result.incremental_revenue:,}, "
        f"cost {result.cost:,}"]
    assert "campaigns      no campaign with a control group ended" in format_stats(
        before, services.program.zone, translator("en"))


# -- the what-if replay ----------------------------------------------------------------------
@pytest.mark.storage
@pytest.mark.parametrize("program_settings", [{
    "campaigns": [{"name": SPRING, "multiplier": "2", "holdout": "0.5", **WINDOW}],
    "ab_test": {"name": "mult", **WINDOW, "b": {"multiplier": "1.5"}}}])
def test_the_replay_of_the_current_program_keeps_each_customers_groups(
        db: Database, ledger: Ledger, clock: Clock, settings: Settings) -> None:
    from connector.economics.simulate import simulate
    from tests.test_simulate import assert_replays_the_ledger

    for contact in range(1, 13):
        ledger.accrue(ref(contact), D(700 + 100 * contact), key=f"k{contact}")
    ledger.settle_purchase(ref(1), "deal-1", D("1000"))
    ledger.settle_purchase(ref(1), "deal-1", D("3000"))
    groups = {row for row in recorded(db, SPRING).values()}
    assert {grp for grp, _ in groups} == {TREATED, CONTROL}
    sim = simulate(db, settings.program, settings.program, now=clock())
    assert_replays_the_ledger(sim, db)
    assert sim.current.points_issued == sim.proposed.points_issued


# -- found in review -------------------------------------------------------------------------
@pytest.mark.storage
def test_a_trigger_placed_concurrently_by_another_worker_is_still_recorded(
        db: Database, ledger: Ledger, settings: Settings) -> None:
    """Two triggers of one code for one customer (two deals' points_accrued) in two
    workers: the second's placement meets the first's uncommitted row (PostgreSQL waits on
    the UNIQUE, then refuses it). Its trigger must still be stored, not dropped with it."""
    import threading
    import time as wall

    from connector.campaigns import placement
    from connector.triggers import Transition, record

    treated, _ = split(db, ledger, 8, POINTS_ACCRUED, "0.5")
    account_id = ledger.account_id(treated[0])
    assert account_id is not None
    program = Program(settings.program.model_copy(update={"trigger_holdouts": [
        TriggerHoldout(trigger=POINTS_ACCRUED, holdout=D("0.5"))]}))
    added: list[int] = []
    with db.transaction() as first:
        # The first worker has placed the customer and not committed yet.
        assert placement.place(first, POINTS_ACCRUED, "trigger", account_id, TREATED,
                               at=datetime(2026, 3, 10, tzinfo=UTC))
        second = threading.Thread(target=lambda: added.append(record(
            db, [Transition(account_id, POINTS_ACCRUED, "entry:2")], program=program)))
        second.start()
        wall.sleep(0.5)  # the second worker reads no row and waits on the first's insert
    second.join(timeout=30)
    assert added == [1]
    with db.transaction(write=False) as session:
        stored = session.scalars(select(TriggerEvent.status).where(
            TriggerEvent.account_id == account_id)).all()
    assert stored == ["pending"]
    assert list(recorded(db, POINTS_ACCRUED)) == [account_id]


@pytest.mark.storage
def test_a_deal_lost_and_won_again_costs_the_campaign_once(db: Database, ledger: Ledger,
                                                          clock: Clock) -> None:
    treated, _ = split(db, ledger, 8, SPRING, "0.5")
    ledger.settle_purchase(treated[0], "deal-7", D("1000"))
    ledger.reverse(treated[0], "deal-7", key="lost-7")  # the deal lost
    assert ledger.account(treated[0]).balance == 0
    clock.advance(days=1)
    again = ledger.settle_purchase(treated[0], "deal-7", D("1000"))  # and won again
    assert again[-1].points == D("60.00")
    clock.now = AFTER
    with db.transaction(write=False) as session:
        result = report(session, ledger.program, SPRING, clock.now)
    # What the customer holds from the campaign: 30 points, the second 3% on 1000 once.
    assert result.cost_points == D("30.00")
    assert result.groups[TREATED].revenue == D("1000.00")


@pytest.mark.storage
def test_a_return_by_rows_lowers_the_campaigns_cost(db: Database, ledger: Ledger,
                                                    clock: Clock) -> None:
    from connector.products.rows import Row

    treated, _ = split(db, ledger, 8, SPRING, "0.5")
    book, pen = Row("book", D("600"), D("1")), Row("pen", D("200"), D("2"))
    ledger.settle_purchase(treated[0], "deal-rows", D("1000"), rows=[book, pen])
    assert ledger.account(treated[0]).balance == D("60.00")  # 6%, the campaign's half 30
    ledger.return_purchase(treated[0], "deal-rows", D("400"), key="pens back", rows=[pen])
    ledger.return_purchase(treated[0], "deal-rows", D("300"), key="some more")  # no rows
    assert ledger.account(treated[0]).balance == D("18.00")  # 6% of the 300 kept
    clock.now = AFTER
    with db.transaction(write=False) as session:
        result = report(session, ledger.program, SPRING, clock.now)
    assert result.groups[TREATED].revenue == D("300.00")
    # The campaign's second 3% on the 300 the customer kept.
    assert result.cost_points == D("9.00")


@pytest.mark.storage
def test_the_purchase_rate_difference_is_in_percentage_points(db: Database, ledger: Ledger,
                                                              clock: Clock, client: Any,
                                                              services: Any) -> None:
    from zoneinfo import ZoneInfo

    from connector.campaigns.text import format_report
    from tests.test_dashboard import BEARER

    _book(services, clock)
    with services.db.transaction(write=False) as session:
        result = report(session, services.program, SPRING, clock.now)
    rate = result.purchase_rate
    assert rate is not None
    points = D(rate.difference * 100).quantize(D("0.1"))
    for language, unit, percent in (("en", "pp", "%"), ("ru", "п.п.", "\u00a0%")):
        t = translator(language)
        line = next(line for line in format_report(result, ZoneInfo("Europe/Moscow"), t)
                    if line.startswith(t._("purchase rate")))
        # The groups' rates are percentages, their difference is in points of percentage:
        # 60% against 33% is 27 points more, not 27% more.
        assert line.count(percent) == 2, line
        assert f"+{t.number(points, 1)}\u00a0{unit} (" in line, line
    page = client.get(f"/dashboard/campaigns/{SPRING}", headers=BEARER).get_data(as_text=True)
    assert f"+{translator('ru').number(points, 1)}\u00a0п.п. (" in unescape(page)


@pytest.mark.storage
def test_a_trigger_follows_the_group_written_not_a_changed_holdout(
        db: Database, ledger: Ledger, settings: Settings) -> None:
    """The group is written once: a holdout changed in the config later (0.5 to 0.1) must
    not start sending the trigger to a customer the report counts in control."""
    from connector.campaigns.groups import position
    from connector.triggers import Transition, record

    def program(share: str) -> Program:
        return Program(settings.program.model_copy(update={"trigger_holdouts": [
            TriggerHoldout(trigger=POINTS_ACCRUED, holdout=D(share))]}))

    _, control = split(db, ledger, 40, POINTS_ACCRUED, "0.5")
    ids = [ledger.account_id(who) for who in control]
    moved = next(a for a in ids if a is not None and position(POINTS_ACCRUED, a) >= 0.1)
    assert record(db, [Transition(moved, POINTS_ACCRUED, "entry:1")], program=program("0.5"))
    assert record(db, [Transition(moved, POINTS_ACCRUED, "entry:2")], program=program("0.1"))
    with db.transaction(write=False) as session:
        stored = session.scalars(select(TriggerEvent.status).where(
            TriggerEvent.account_id == moved).order_by(TriggerEvent.id)).all()
    assert stored == ["skipped", "skipped"]
    assert recorded(db, POINTS_ACCRUED)[moved][0] == CONTROL


@pytest.mark.storage
def test_a_triggers_cost_counts_the_sends_in_the_days_it_is_measured_over(
        db: Database, ledger: Ledger, settings: Settings, clock: Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The report compares each customer's `days` after the trigger's first moment; the
    mailings sent to them after those days are not part of what it measures, so they are
    not its cost either (else the ROI falls for as long as the trigger keeps firing)."""
    from connector.triggers import Transition, mark, record

    monkeypatch.setattr("connector.triggers.utcnow", clock)
    program = Program(settings.program.model_copy(update={"trigger_holdouts": [
        TriggerHoldout(trigger=POINTS_ACCRUED, holdout=D("0.5"), days=30,
                       cost_per_send=D("2.50"))]}))
    treated, _ = split(db, ledger, 8, POINTS_ACCRUED, "0.5")
    ids = [ledger.account_id(who) for who in treated]

    def fire(transition: str) -> None:
        for account_id in ids:
            assert account_id is not None
            record(db, [Transition(account_id, POINTS_ACCRUED, transition)], program=program)
        with db.transaction(write=False) as session:
            pending = session.scalars(select(TriggerEvent.id).where(
                TriggerEvent.status == "pending")).all()
        for trigger_id in pending:
            mark(db, trigger_id, "sent", None, clock())

    fire("entry:1")
    clock.advance(days=10)
    fire("entry:2")  # within the 30 days: part of what is measured
    clock.advance(days=40)
    fire("entry:3")  # long after: another mailing, not this comparison's
    with db.transaction(write=False) as session:
        result = report(session, program, POINTS_ACCRUED, clock.now)
    assert result.groups[TREATED].customers == len(treated)
    assert result.cost == D("2.50") * 2 * len(treated)


def test_a_campaigns_control_group_through_bitrix24_deals(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    """The CRM path end to end: won deals, a deal whose amount changes, one lost and won
    again. Control customers earn the plain 3% throughout, the treated 6%, and the report's
    cost is the treated customers' second 3% on what stands."""
    from connector.config import Campaign
    from tests.test_bitrix24_e2e import app_harness

    clock.now = datetime.fromtimestamp(time.time(), UTC)

    def campaign(settings: Settings) -> Settings:
        local = clock.now.astimezone(settings.program.zone).replace(tzinfo=None)
        program = settings.program.model_copy(update={"campaigns": [Campaign(
            name="crm-x2", starts=local - timedelta(days=1), ends=local + timedelta(days=20),
            multiplier=D(2), holdout=D("0.5"))]})
        return settings.model_copy(update={"program": program})

    h = app_harness(tmp_path, database_url, portal, time, clock, adjust=campaign)
    h.connector.installer.install()
    contacts = [h.portal.add_contact(NAME=f"C{n}") for n in range(8)]
    deals = {contact: h.won(contact, "1000.00") for contact in contacts}
    h.process()
    ids = {c: h.services.ledger.account_id(h.ref(c)) for c in contacts}
    welcome = h.services.settings.program.welcome_bonus  # a new contact's, beside the deal
    placed = {c: group("crm-x2", a, D("0.5")) for c, a in ids.items() if a}
    assert len(placed) == 8 and set(placed.values()) == {TREATED, CONTROL}
    for contact in contacts:
        assert h.balance(contact) - welcome == (D("60.00") if placed[contact] == TREATED
                                                else D("30.00"))
    one_of = {grp: next(c for c in contacts if placed[c] == grp) for grp in (TREATED, CONTROL)}
    for contact in one_of.values():  # the amount changes: re-settled at its own terms
        h.portal.update_deal(deals[contact], OPPORTUNITY="2000.00")
    h.process()
    assert h.balance(one_of[CONTROL]) - welcome == D("60.00")
    assert h.balance(one_of[TREATED]) - welcome == D("120.00")
    for contact in one_of.values():  # lost, then won again
        h.portal.update_deal(deals[contact], STAGE_ID="LOSE")
        h.process()
        h.portal.update_deal(deals[contact], STAGE_ID="WON")
        h.process()
    assert h.balance(one_of[CONTROL]) - welcome == D("60.00")
    assert h.balance(one_of[TREATED]) - welcome == D("120.00")
    clock.advance(days=30)
    with h.services.db.transaction(write=False) as session:
        result = report(session, h.services.program, "crm-x2", clock.now)
    treated = list(placed.values()).count(TREATED)
    assert result.groups[TREATED].revenue == D(1000) * (treated - 1) + D(2000)
    assert result.cost_points == D(30) * (treated - 1) + D(60)
    assert result.recorded == {TREATED: treated, CONTROL: 8 - treated}
    h.services.close()


@pytest.mark.storage
def test_the_money_views_roi_takes_the_incremental_revenue_of_the_ended_campaigns(
        db: Database, ledger: Ledger, clock: Clock) -> None:
    from connector.economics.money import money_view

    treated, control = split(db, ledger, 10, SPRING, "0.5")
    nt, nc = len(treated), len(control)
    ledger.accrue(treated[0], D("3000"), key="t0", source="deal-t0")
    ledger.accrue(control[0], D("1000"), key="c0", source="deal-c0")
    ledger.redeem(treated[0], D("40"), key="pay", purchase_amount=D("1000"), source="deal-pay")
    clock.now = AFTER
    march = datetime(2026, 2, 28, 21, tzinfo=UTC)  # local midnight, Europe/Moscow
    settings = ledger.program.settings
    with db.transaction(write=False) as session:
        view = money_view(session, settings, since=march, until=AFTER, at=AFTER)
        later = money_view(session, settings, since=AFTER, until=AFTER + timedelta(days=30),
                           at=AFTER)
    # Incremental: (3000 / nt - 1000 / nc) * nt; cost: the 40 points redeemed at 1 each.
    incremental = ((D(3000) / nt - D(1000) / nc) * nt).quantize(D("0.01"))
    assert view.cost == D("40.00")
    assert view.incremental_revenue == incremental
    assert view.roi == ((incremental - D(40)) / D(40)).quantize(D("0.0001"), ROUND_HALF_UP)
    # No campaign with a control group ended in April: no ROI is stated.
    assert later.incremental_revenue is None and later.roi is None
