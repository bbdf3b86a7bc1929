"""GET /dashboard: the figures on a known data set, the sign-in, and the page as a real browser
(Debian's chromium, headless) draws it; the screenshot is kept in tests/artifacts/."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal as D
from html import unescape
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from connector import dashboard, job_runs, periods
from connector.cli import cli
from connector.config import Settings
from connector.crm.credentials import Tokens
from connector.ledger.views import AccountRef
from connector.rfm import update_segments
from connector.services import Services
from tests.conftest import Clock, fresh_services, make_settings
from webhooks import create_app

pytestmark = pytest.mark.storage

TOKEN = "test-admin-token"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
WINDOW = (1280, 2000)
NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)  # 12:00 in Moscow, the program's zone
NBSP = "\u00a0"  # how the page groups digits in Russian and Ukrainian


def ref(contact: str) -> AccountRef:
    return AccountRef("bitrix24", "acme.bitrix24.ru", contact)


FRED, ANNA, BORIS, CARL, EVA = (ref(c) for c in ("1", "2", "3", "4", "5"))


@pytest.fixture
def language() -> str:
    return "en"  # the tests of wording read English; test_the_page_in_* the others


@pytest.fixture
def settings(tmp_path: Path, database_url: str, language: str) -> Settings:
    return make_settings(
        tmp_path, database_url, server={"admin_token": TOKEN}, inbox={"max_attempts": 1},
        program={"tiers": [{"name": "Bronze", "min_spend": "0", "rate": "0.05"},
                           {"name": "Silver", "min_spend": "10000", "rate": "0.10"}],
                 "welcome_bonus": "100", "points_lifetime_days": 30, "language": language},
        rfm={"labels": {"new": "Новые"}},
        bitrix24={"enabled": True, "client_id": "app", "client_secret": "app-secret",
                  "portal": "acme.bitrix24.ru"},
        amocrm={"enabled": True, "base_url": "https://acme.amocrm.ru",
                "long_lived_token": "long-lived", "webhook_secret": "0123456789abcdef"})


def at(clock: Clock, month: int, day: int, hour: int = 12, minute: int = 0) -> None:
    clock.now = datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """Five customers; the last 30 days run from 9 February 00:00 Moscow time to NOW."""
    clock = Clock()
    services = fresh_services(settings, clock=clock)
    ledger = services.ledger
    at(clock, 1, 5)
    ledger.accrue(FRED, D("500"), key="f1")                     # +25, before the period
    at(clock, 2, 10)
    ledger.accrue(ANNA, D("2000"), key="a1")                    # +100
    ledger.grant_bonus(ANNA, "welcome", key="welcome:anna")     # +100 bonus
    at(clock, 2, 15)
    ledger.accrue(BORIS, D("1000"), key="b1")                   # +50
    at(clock, 2, 20)
    assert ledger.expire_due() == 1                             # Fred -25
    at(clock, 3, 3, 21, 30)                                     # 4 March 00:30 in Moscow
    ledger.accrue(CARL, D("3000"), key="c1")                    # +150
    at(clock, 3, 5)
    ledger.accrue(ANNA, D("4000"), key="a2")                    # +200
    at(clock, 3, 6)
    ledger.redeem(ANNA, D("150"), key="r1")                     # -150
    at(clock, 3, 8)
    ledger.accrue(EVA, D("12000"), key="e1")                    # +600, up to Silver
    clock.now = NOW
    update_segments(services.db, NOW, services.settings.rfm.active_days)
    _health(services)
    yield services
    services.close()


def _health(services: Services) -> None:
    """One dead and one pending inbox event, a revoked Bitrix24 grant, two job runs."""
    clock = services.inbox.clock
    assert isinstance(clock, Clock)
    clock.now = datetime(2026, 3, 10, 5, 30, tzinfo=UTC)
    dead = services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key="d1",
                              body=b"{}")
    services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key="d2", body=b"{}")
    assert [item.id for item in services.inbox.claim(1)] == [dead.id]
    assert services.inbox.fail(dead.id, "deal 7 not found") == "dead"
    clock.now = NOW
    services.bitrix24_credentials.save(Tokens("access", "refresh", NOW))
    services.bitrix24_credentials.revoke("invalid_grant")
    job_runs.finished(services.db, "rfm_segments", started_at=NOW, at=NOW, seconds=0.4,
                      runner="host:1", result={"scored": 5, "changed": 5})
    job_runs.finished(services.db, "reconcile_bitrix24", started_at=NOW, at=NOW, seconds=1.5,
                      runner="host:1", error="bitrix24: expired_token")


def basic(password: str, user: str = "admin") -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


BEARER = {"Authorization": f"Bearer {TOKEN}"}


# -- the figures -----------------------------------------------------------------------------
def test_the_figures_of_the_last_30_days(services: Services) -> None:
    board = dashboard.build(services, now=NOW)
    stats = board.stats
    assert stats.since == datetime(2026, 2, 8, 21, 0, tzinfo=UTC)  # 9 February, Moscow
    assert (stats.accounts_total, stats.accounts_new, stats.active_customers) == (5, 4, 4)
    assert (stats.accrued, stats.bonuses) == (D("1100.00"), D("100.00"))
    assert (stats.redeemed, stats.expired) == (D("-150.00"), D("-25.00"))
    assert stats.average_check == D("4400.00")                 # 22 000 over 5 purchases
    assert stats.repeat_rate == D("0.2000")                    # Anna of 5 buyers
    assert stats.retention is None                             # nobody active before
    assert stats.tiers == {"Bronze": 4, "Silver": 1}
    assert board.step == "day" and len(board.series) == 30
    by_day = {bucket.start: bucket.points for bucket in board.series}
    assert by_day[date(2026, 2, 10)]["accrual"] == D("100.00")
    assert by_day[date(2026, 2, 10)]["bonus"] == D("100.00")
    assert by_day[date(2026, 2, 20)]["expiry"] == D("-25.00")
    assert by_day[date(2026, 3, 4)]["accrual"] == D("150.00")  # local date, not UTC's 3rd
    assert by_day[date(2026, 3, 3)]["accrual"] == D("0.00")
    assert by_day[date(2026, 3, 6)]["redemption"] == D("-150.00")
    assert sum(bucket.points["accrual"] for bucket in board.series) == stats.accrued


def test_the_health_figures(services: Services) -> None:
    board = dashboard.build(services, now=NOW)
    assert (board.inbox.pending, board.inbox.dead) == (1, 1)
    assert board.inbox.oldest_pending_age is not None
    assert board.inbox.oldest_pending_age.total_seconds() == 3.5 * 3600
    assert [(crm.crm, crm.ok) for crm in board.crms] == [("bitrix24", False), ("amocrm", True)]
    assert board.crms[0].detail == "revoked: invalid_grant"
    assert [(run.job_id, run.last_status) for run in board.jobs] == [
        ("reconcile_bitrix24", "failed"), ("rfm_segments", "ok")]


def test_segments_are_those_the_rfm_job_stored(services: Services) -> None:
    board = dashboard.build(services, now=NOW)
    report = update_segments(services.db, NOW, services.settings.rfm.active_days)
    assert report.changed == 0
    assert board.segments == report.sizes
    assert sum(board.segments.values()) == 5


def test_one_bar_a_day_a_week_or_a_month_by_the_period_length(services: Services) -> None:
    today = dashboard.build(services, now=NOW, days=1)
    assert [(b.start, b.points["accrual"]) for b in today.series] == [(date(2026, 3, 10), 0)]
    weekly = dashboard.build(services, now=NOW, days=90)
    assert weekly.step == "week"
    assert all(bucket.start.weekday() == 0 for bucket in weekly.series[1:])
    assert weekly.series[0].start == date(2025, 12, 11)
    assert sum(b.points["accrual"] for b in weekly.series) == weekly.stats.accrued == D("1125.00")
    monthly = dashboard.build(services, now=NOW, days=dashboard.MAX_DAYS)
    assert monthly.step == "month"
    assert [b.start for b in monthly.series[-3:]] == [date(2026, 1, 1), date(2026, 2, 1),
                                                      date(2026, 3, 1)]
    assert sum(b.points["expiry"] for b in monthly.series) == D("-25.00")


# -- the page --------------------------------------------------------------------------------
def test_the_page_shows_the_figures(client: FlaskClient) -> None:
    response = client.get("/dashboard", headers=basic(TOKEN))
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    for kpi, value in (("participants", "5"), ("active", "4"), ("accrued", "1,100"),
                       ("redeemed", "150"), ("expired", "25"), ("repeat", "20.0%"),
                       ("check", "4,400"), ("retention", "—"), ("referrals", "0"),
                       ("promo", "0")):
        assert f'id="kpi-{kpi}">{value}' in html, kpi
    assert 'id="kpi-check-others">unknown' in html and "4,400 <small>₽</small>" in html
    assert "<script" not in html
    assert html.count("<svg") == 3
    assert "Mar 6: redeemed 150" in html                         # a bar's tooltip
    assert "revoked: invalid_grant" in html and "bitrix24: expired_token" in html
    assert "new: Новые" in html                                 # the segment's CRM label


@pytest.mark.parametrize(("language", "words", "figures"), [
    ("ru", ["Программа лояльности", "Участники", "Последние 30 дней", "Баллы по дням",
            "06.03: списано 150", "Задачи по расписанию", "неизвестно",
            "доступ отозван: invalid_grant"],
     [("accrued", f"1{NBSP}100"), ("repeat", f"20,0{NBSP}%"), ("check", f"4{NBSP}400")]),
    ("uk", ["Програма лояльності", "Учасники", "Останні 30 днів", "Бали по днях",
            "06.03: списано 150", "Завдання за розкладом", "невідомо",
            "доступ відкликано: invalid_grant"],
     [("accrued", f"1{NBSP}100"), ("repeat", "20,0%"), ("check", f"4{NBSP}400")]),
])
def test_the_page_in_russian_and_ukrainian(client: FlaskClient, language: str,
                                           words: list[str],
                                           figures: list[tuple[str, str]]) -> None:
    html = client.get("/dashboard", headers=BEARER).get_data(as_text=True)
    assert f'<html lang="{language}">' in html
    for word in words:
        assert word in html, word
    for kpi, value in figures:
        assert f'id="kpi-{kpi}">{value}' in html, kpi
    assert "10.03.2026" in html  # the period and the jobs' last runs, in the locale's dates
    assert "Participants" not in html and "Scheduled jobs" not in html


@pytest.mark.parametrize(("language", "words"), [
    ("ru", ["Что, если", "Предлагаемая программа", "Смоделировать", "начислено баллов",
            "последние 30 дней", "переходят на другой уровень"]),
    ("uk", ["Що, якщо", "Запропонована програма", "Змоделювати", "нараховано балів",
            "останні 30 днів", "переходять на інший рівень"]),
])
def test_the_what_if_page_in_russian_and_ukrainian(client: FlaskClient, language: str,
                                                   words: list[str]) -> None:
    response = client.get("/dashboard/simulate?run=1&days=30&multiplier=2", headers=BEARER)
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    assert f'<html lang="{language}">' in html
    for word in words:
        assert word in html, word
    for english in ("Proposed program", "points issued", "Simulate", "customers moving tier"):
        assert english not in html, english
    board = client.get("/dashboard", headers=BEARER).get_data(as_text=True)
    assert f'<a href="dashboard/simulate?days=30">{words[0].lower()}</a>' in board


def test_bearer_token_and_other_periods(client: FlaskClient) -> None:
    response = client.get("/dashboard?days=365", headers=BEARER)
    assert response.status_code == 200
    assert "Points per week" in response.get_data(as_text=True)
    for days in ("0", "3651", "x", "-1"):
        refused = client.get(f"/dashboard?days={days}", headers=BEARER)
        assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_request"), days


@pytest.mark.parametrize("headers", [
    {}, basic("wrong-token-0000"), basic(""), {"Authorization": "Bearer wrong-token-0000"},
    {"Authorization": f"Token {TOKEN}"}, {"Authorization": "Basic !!!"},
], ids=["none", "basic-wrong", "basic-empty", "bearer-wrong", "other-scheme", "garbled"])
def test_refused_without_the_admin_token(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/dashboard", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="loyalty"'
    assert response.get_json()["error"] == "unauthorized"  # JSON, as every refusal


def test_read_only(client: FlaskClient) -> None:
    assert client.post("/dashboard", headers=BEARER).status_code == 405


def test_stats_the_dashboard_and_the_api_read_the_last_n_days_alike(
        services: Services, settings: Settings, tmp_path: Path) -> None:
    """One definition (connector.periods): local midnight N-1 days ago until now. `stats`
    reads the wall clock, so the others are asked at the same moment."""
    config = tmp_path / "stats.toml"
    config.write_text(f'[database]\nurl = "{settings.database.url}"\n', encoding="utf-8")
    for days in (None, 1, 7):
        now = datetime.now(UTC)
        args = ["--config", str(config), "stats", "--json"]
        if days is not None:
            args += ["--days", str(days)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (result.output, result.exception)
        figures = json.loads(result.stdout)
        expected = periods.last_days(now, days or 30, ZoneInfo("Europe/Moscow"))[0]
        if expected != periods.last_days(datetime.now(UTC), days or 30,
                                         ZoneInfo("Europe/Moscow"))[0]:
            continue  # midnight in Moscow passed while asking
        assert datetime.fromisoformat(figures["since"]) == expected
        assert abs(datetime.fromisoformat(figures["until"]) - now).total_seconds() < 60
        assert dashboard.build(services, now=now, days=days or 30).stats.since == expected
        services.ledger.clock.now = now  # type: ignore[attr-defined]
        client = create_app(services=services).test_client()
        query = "" if days is None else f"?days={days}"
        money = client.get(f"/api/v1/economics{query}", headers=BEARER).get_json()
        assert datetime.fromisoformat(money["since"]) == expected
        assert datetime.fromisoformat(money["until"]) == now
    # The dashboard's 30 days at NOW, 10 March 12:00 Moscow: from 9 February 00:00.
    assert periods.last_days(NOW, 30, ZoneInfo("Europe/Moscow")) == (
        datetime(2026, 2, 8, 21, 0, tzinfo=UTC), NOW)


def test_promo_codes_used_in_the_period_show_in_their_kpi(tmp_path: Path,
                                                           database_url: str) -> None:
    settings = make_settings(
        tmp_path, database_url, server={"admin_token": TOKEN},
        program={"language": "en", "tiers": [{"name": "Bronze", "rate": "0.05"}],
                 "promo": [{"name": "winter", "code": "WINTER25", "points": "100",
                            "uses_per_customer": 1},
                           {"name": "double", "code": "DOUBLE", "multiplier": "2"}]})
    clock = Clock()
    services = fresh_services(settings, clock=clock)
    try:
        ledger = services.ledger
        at(clock, 1, 5)
        ledger.accrue(FRED, D("500"), key="f1", promo_code="WINTER25")   # before the period
        at(clock, 2, 20)
        ledger.accrue(ANNA, D("2000"), key="a1", promo_code="winter-25")  # +100 by the code
        ledger.accrue(BORIS, D("1000"), key="b1", promo_code="DOUBLE")   # +50 by the code
        refused = ledger.accrue(ANNA, D("100"), key="a2", promo_code="WINTER25")
        assert refused.details["promo"]["outcome"] == "already_used"     # not counted
        clock.now = NOW
        html = create_app(services=services).test_client().get(
            "/dashboard", headers=BEARER).get_data(as_text=True)
    finally:
        services.close()
    assert 'id="kpi-promo">2</div>' in html
    assert "150 points granted by codes in the period" in html


def test_off_without_an_admin_token(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(make_settings(tmp_path, database_url))
    try:
        response = create_app(services=services).test_client().get(
            "/dashboard", headers=basic("anything-at-all-00"))
    finally:
        services.close()
    assert response.status_code == 403
    assert response.get_json()["error"] == "dashboard_disabled"
    assert "server.admin_token" in response.get_json()["detail"]


def test_an_empty_program(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(make_settings(tmp_path, database_url,
                                            server={"admin_token": TOKEN}))
    try:
        response = create_app(services=services).test_client().get("/dashboard",
                                                                   headers=BEARER)
    finally:
        services.close()
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="kpi-participants">0' in html and 'id="kpi-check">—' in html
    # The default language, Russian.
    assert "За этот период баллы не двигались." in html and "Задачи ещё не запускались." in html


# -- in a real browser -----------------------------------------------------------------------
def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
# The browser gets the same HTML from either database (the tests above run on both): SQLite
# alone keeps the slowest test of this file to one run.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("language", ["ru"])  # the default, and the longer words
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium "
                    "(apt-get install -y chromium) for the headless browser test")
def test_in_a_real_browser(served: str, tmp_path: Path) -> None:
    # Credentials in the URL become the Basic sign-in of a top-level navigation.
    url = served.replace("http://", f"http://admin:{TOKEN}@") + "/dashboard"
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert 'id="kpis"' in dom.stdout, dom.stderr[-2000:]
    shown = unescape(dom.stdout)  # the DOM writes a no-break space as &nbsp;
    assert f'id="kpi-accrued">1{NBSP}100' in shown and "Участники" in shown

    screenshot(url, tmp_path, "dashboard.png")


def screenshot(url: str, tmp_path: Path, name: str) -> set[tuple[int, ...]]:
    """Shoot a dashboard page at WINDOW, check it is a drawn page with its white cards, keep
    it in ARTIFACTS under name and give its colours."""
    shot = tmp_path / name
    run = chromium(f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url,
                   profile=tmp_path / "profile")
    assert shot.is_file(), run.stderr[-2000:]
    width, height, colours = png_colours(shot.read_bytes())
    assert (width, height) == WINDOW
    assert len(colours) > 50  # a blank or error page has a handful
    assert (255, 255, 255) in colours  # the cards
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / name)
    return colours


def png_colours(data: bytes) -> tuple[int, int, set[tuple[int, ...]]]:
    """Width, height and the distinct colours of an 8-bit RGB or RGBA PNG (what Chromium
    writes), decoded with zlib alone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks: dict[bytes, list[bytes]] = {}
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        chunks.setdefault(kind, []).append(data[offset + 8:offset + 8 + length])
        offset += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    pixel = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    stride = width * pixel
    previous = bytearray(stride)
    colours: set[tuple[int, ...]] = set()
    for row in range(height):
        start = row * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), previous,
                         pixel)
        colours.update(zip(*(line[channel::pixel] for channel in range(3)), strict=True))
        previous = line
    return width, height, colours


def _unfilter(method: int, line: bytearray, previous: bytearray, pixel: int) -> bytearray:
    if method == 0:
        return line
    if method == 2:  # Up: the common case, done without a Python loop per byte
        return bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
    for i in range(len(line)):
        left = line[i - pixel] if i >= pixel else 0
        up = previous[i]
        if method == 1:
            line[i] = (line[i] + left) & 0xFF
        elif method == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        else:  # 4, Paeth
            corner = previous[i - pixel] if i >= pixel else 0
            guess = left + up - corner
            to_left, to_up, to_corner = abs(guess - left), abs(guess - up), abs(guess - corner)
            if to_left <= to_up and to_left <= to_corner:
                line[i] = (line[i] + left) & 0xFF
            elif to_up <= to_corner:
                line[i] = (line[i] + up) & 0xFF
            else:
                line[i] = (line[i] + corner) & 0xFF
    return line
