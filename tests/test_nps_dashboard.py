"""GET /dashboard/nps on a hand-checked book, the NPS card of /dashboard, and the page as
headless Chromium draws it (the screenshot kept in tests/artifacts/)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from html import unescape
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from connector.config import Settings
from connector.ledger.views import AccountRef
from connector.services import Services
from tests.conftest import Clock, fresh_services, make_settings
from tests.test_dashboard import ARTIFACTS, CHROMIUM, TOKEN, basic, chromium, png_colours
from webhooks import create_app

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
A, B, C, D_ = (AccountRef("bitrix24", "acme.bitrix24.ru", c) for c in ("1", "2", "3", "4"))


@pytest.fixture
def language() -> str:
    return "en"


@pytest.fixture
def settings(tmp_path: Path, database_url: str, language: str) -> Settings:
    return make_settings(
        tmp_path, database_url, server={"admin_token": TOKEN},
        program={"tiers": [{"name": "Bronze", "min_spend": "0", "rate": "0.05"},
                           {"name": "Silver", "min_spend": "10000", "rate": "0.10"}],
                 "language": language, "nps": {"bonus": "20"}})


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The last 90 days run from 11 December 2025 00:00 Moscow time to NOW.

    | who         | answers                  | latest | Jan   | Feb   | Mar   |
    | A (Bronze)  | 15 Jan: 10, 20 Feb: 5    | 5 D    | 10 P  | 5 D   |       |
    | B (Silver)  | 3 Feb: 9                 | 9 P    |       | 9 P   |       |
    | C (Bronze)  | 2 Mar: 8                 | 8 N    |       |       | 8 N   |
    | D (Bronze)  | 5 Mar: 10                | 10 P   |       |       | 10 P  |

    NPS 25.0 (P2 N1 D1); December —, January 100.0, February 0.0, March 50.0; Bronze 0.0
    (A, C, D), Silver 100.0.
    """
    clock = Clock(NOW)
    services = fresh_services(settings, clock=clock)
    services.ledger.accrue(B, D("10000"), key="b-buys", occurred_at=datetime(2026, 1, 5,
                                                                              tzinfo=UTC))
    for index, (ref, score, month, day) in enumerate(
            [(A, 10, 1, 15), (A, 5, 2, 20), (B, 9, 2, 3), (C, 8, 3, 2), (D_, 10, 3, 5)]):
        services.nps.record(ref, score, source="api", source_key=f"s{index}",
                            occurred_at=datetime(2026, month, day, 12, tzinfo=UTC))
    yield services
    services.close()


@pytest.fixture
def client(services: Services) -> FlaskClient:
    app = create_app(services=services)
    app.testing = True
    return app.test_client()


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, element_id
    return unescape(match.group(1)).strip()


def test_the_page_on_the_hand_checked_book(client: FlaskClient) -> None:
    page = client.get("/dashboard/nps?days=90", headers=basic(TOKEN))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert text_of(html, "kpi-nps") == "25.0"
    assert text_of(html, "kpi-promoters") == "50.0%"
    assert text_of(html, "kpi-passives") == "25.0%"
    assert text_of(html, "kpi-detractors") == "25.0%"
    assert text_of(html, "kpi-answers") == "4"
    assert "5 answers in all, 4 with a bonus" in unescape(html)  # A's second: same period
    # One column per month, valued as hand-checked; December has no answers.
    figures = re.findall(r'<text class="figure"[^>]*>([^<]*)</text>', html)
    assert figures == ["—", "100.0", "0.0", "50.0"]
    assert re.findall(r"<title>([^<]*)</title>", html)[1:] == [
        "Dec 2025: NPS — of 0 answered", "Jan 2026: NPS 100.0 of 1 answered",
        "Feb 2026: NPS 0.0 of 2 answered", "Mar 2026: NPS 50.0 of 2 answered"]
    tiers = html.split('id="tiers"')[1].split("</section>")[0]
    rows = re.findall(r"<tr><td>([^<]*)</td><td class=\"num\">([^<]*)</td>"
                      r"<td class=\"num\">([^<]*)</td>", tiers)
    assert rows == [("Bronze", "0.0", "3"), ("Silver", "100.0", "1")]
    segments = html.split('id="segments"')[1].split("</section>")[0]
    assert "not scored" in segments


def test_the_period_narrows_the_figures(client: FlaskClient) -> None:
    # The last N days are whole local days up to now (connector.periods), as in `stats`.
    html = client.get("/dashboard/nps?days=9", headers=basic(TOKEN)).get_data(as_text=True)
    assert text_of(html, "kpi-nps") == "50.0"  # from 2 March 00:00 Moscow: C's 8 and D's 10
    html = client.get("/dashboard/nps?days=8", headers=basic(TOKEN)).get_data(as_text=True)
    assert text_of(html, "kpi-nps") == "100.0"  # from 3 March: D's 10 alone
    assert client.get("/dashboard/nps?days=0", headers=basic(TOKEN)).status_code == 400


def test_signed_in_only(client: FlaskClient) -> None:
    assert client.get("/dashboard/nps").status_code == 401
    assert client.get("/dashboard/nps", headers=basic("wrong")).status_code == 401
    page = client.get("/dashboard/nps", headers=basic(TOKEN))
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


def test_the_main_dashboard_shows_the_nps_card(client: FlaskClient) -> None:
    html = client.get("/dashboard?days=90", headers=basic(TOKEN)).get_data(as_text=True)
    assert re.search(r'id="kpi-nps"><a href="dashboard/nps\?days=90"[^>]*>25.0</a>', html)


@pytest.mark.parametrize("language", ["ru"])
def test_the_page_in_russian(client: FlaskClient) -> None:
    html = client.get("/dashboard/nps?days=90", headers=basic(TOKEN)).get_data(as_text=True)
    assert "По уровням" in html and "Промоутеры" in html
    assert text_of(html, "kpi-nps") == "25,0"


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("language", ["ru"])
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium "
                    "(apt-get install -y chromium) for the headless browser test")
def test_in_a_real_browser(served: str, tmp_path: Path) -> None:
    url = served.replace("http://", f"http://admin:{TOKEN}@") + "/dashboard/nps?days=90"
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert 'id="kpi-nps"' in dom.stdout, dom.stderr[-2000:]
    assert "25,0" in unescape(dom.stdout) and "По сегментам RFM" in dom.stdout
    shot = tmp_path / "nps.png"
    window = (1280, 1400)
    run = chromium(f"--screenshot={shot}", f"--window-size={window[0]},{window[1]}", url,
                   profile=tmp_path / "profile")
    assert shot.is_file(), run.stderr[-2000:]
    width, height, colours = png_colours(shot.read_bytes())
    assert (width, height) == window
    assert len(colours) > 50
    assert (43, 138, 62) in colours and (224, 49, 49) in colours  # promoters and detractors
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "dashboard_nps.png")
