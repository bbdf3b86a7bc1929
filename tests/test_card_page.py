"""GET /card/<token>: what the customer sees (in Russian, Ukrainian and English), what an unknown or
replaced link and a client asking too often get, and the page in a real browser at a
phone's size, its codes read back by a barcode scanner when one is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from connector.card.ratelimit import ClientLimiter, client_address
from connector.config import Settings
from connector.errors import ConfigError
from connector.i18n import NBSP, translator
from connector.ledger.views import AccountRef
from connector.services import Services
from tests.conftest import Clock, fresh_services, make_settings
from tests.test_dashboard import CHROMIUM, chromium, png_colours
from tests.test_fuzz import INJECTION
from webhooks import create_app

pytestmark = pytest.mark.storage

SECRET = "card-secret-0123456789abcdefghijklmnop"
ANNA = AccountRef("bitrix24", "acme.bitrix24.ru", "7")
ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE = (390, 844)
ZBARIMG = shutil.which("zbarimg")
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def language() -> str:
    return "ru"


@pytest.fixture
def settings(tmp_path: Path, database_url: str, language: str) -> Settings:
    return make_settings(
        tmp_path, database_url, server={"public_url": "https://loyalty.example.com"},
        card={"secret": SECRET, "rate_limit": "1000/minute"},
        program={"language": language, "points_lifetime_days": 30,
                 "bonuses": {"review": "50"}})


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 10, 9, 0, tzinfo=UTC))


@pytest.fixture
def services(settings: Settings, clock: Clock) -> Iterator[Services]:
    services = fresh_services(settings, clock=clock)
    ledger = services.ledger
    ledger.accrue(ANNA, D("12000"), key="buy-1")             # Bronze 3%: +360
    clock.advance(days=2)
    ledger.grant_bonus(ANNA, "review", key="review-1")       # +50
    clock.advance(days=1)
    ledger.redeem(ANNA, D("100"), key="pay-1", purchase_amount=D("1000"))  # -100
    yield services
    services.close()


@pytest.fixture
def url(services: Services) -> str:
    return services.cards.link(ANNA).url.removeprefix("https://loyalty.example.com")


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace(NBSP, " ") \
        .replace("\u202f", " ")


def test_the_page_in_russian(client: FlaskClient, url: str, services: Services) -> None:
    response = client.get(url, headers=HTML)
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html[:300]
    shown = text_of(html)
    card = services.ledger.account(ANNA).card_number
    assert card is not None
    assert '<html lang="ru">' in html
    assert "310 баллов" in shown and "Можно потратить: 310 баллов" in shown
    assert "Bronze" in shown
    assert "До уровня «Silver» осталось купить на 18 000 ₽" in shown
    assert "9 апреля 2026 сгорят 260 баллов" in shown  # 360 earned 10 March, 100 spent
    assert ("Оплата баллами" in shown and "-100" in shown and "Бонус" in shown
            and "Покупка на 12 000 ₽" in shown and "+360" in shown)
    assert " ".join(card[i:i + 4] for i in range(0, 10, 4)) in shown
    assert html.count("<svg") == 2 and 'class="qr"' in html and 'class="barcode"' in html
    assert 'style="width: 40%"' in html  # 12 000 of the 30 000 Silver asks


@pytest.mark.parametrize("language", ["en"])
def test_the_page_in_english(client: FlaskClient, url: str) -> None:
    html = client.get(url).get_data(as_text=True)
    shown = text_of(html)
    assert '<html lang="en">' in html
    assert "Spend 18,000 ₽ more to reach Silver" in shown
    assert "260 points expire on 9 April 2026" in shown
    assert "Available to spend: 310 points" in shown and "Paid with points" in shown
    assert "Purchase of 12,000 ₽" in shown and "10 March 2026" in shown


@pytest.mark.parametrize("language", ["uk"])
def test_the_page_in_ukrainian(client: FlaskClient, url: str) -> None:
    html = client.get(url).get_data(as_text=True)
    shown = text_of(html)
    assert '<html lang="uk">' in html
    assert "Можна витратити: 310 балів" in shown and "10 березня 2026" in shown
    assert "До рівня «Silver» залишилося купити на 18 000 ₽" in shown
    assert "9 квітня 2026 згорять 260 балів" in shown
    assert "Оплата балами" in shown and "Покупка на 12 000 ₽" in shown


def test_the_page_loads_nothing_runs_nothing_and_shows_no_personal_data(
        client: FlaskClient, url: str) -> None:
    response = client.get(url)
    html = response.get_data(as_text=True)
    assert "<script" not in html.lower() and " on" not in re.sub(r"\s+", " ", html).lower() \
        .replace(" one", "")
    assert not re.search(r"(src|href)=\"?(https?:)?//", html)  # nothing from elsewhere
    assert "acme.bitrix24.ru" not in html and "bitrix24" not in html
    assert url.rsplit("/", 1)[1] not in html  # the page does not repeat its own token
    headers = response.headers
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script-src" not in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert "noindex" in headers["X-Robots-Tag"]


def test_card_links_are_masked_in_logs(url: str) -> None:
    from connector.logs import redact

    line = redact(f"unhandled KeyError on GET {url}; wrote https://loyalty.example.com{url}")
    assert url.rsplit("/", 1)[1] not in line and line.count("/card/***") == 2


def test_unknown_and_replaced_links_are_404(client: FlaskClient, url: str,
                                            services: Services) -> None:
    for bad in ("/card/" + "A" * 32, "/card/short", url[:-1] + ("x" if url[-1] != "x" else "y")):
        response = client.get(bad)
        assert response.status_code == 404
        assert response.get_json() == {
            "error": "card_not_found",
            "detail": "no card page at this address (a link stops working when it is "
                      "replaced)"}
    services.cards.rotate(ANNA)
    assert client.get(url).status_code == 404
    page_404 = client.get(url, headers=HTML)
    assert page_404.status_code == 404 and page_404.mimetype == "text/html"
    assert "Карта не найдена" in page_404.get_data(as_text=True)


@pytest.mark.parametrize("token", [*INJECTION, "A" * 5000, "%00", "..", "é" * 32])
def test_hostile_tokens_are_404_and_change_nothing(client: FlaskClient, url: str,
                                                   services: Services, token: str) -> None:
    before = services.ledger.account(ANNA)
    response = client.get("/card/" + quote(token, safe=""))
    assert response.status_code == 404 and response.get_json()["error"] in (
        "card_not_found", "not_found")
    assert services.ledger.account(ANNA) == before
    assert client.get(url).status_code == 200  # the real link still works


def test_no_card_pages_without_a_secret(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(make_settings(tmp_path, database_url))
    try:
        services.ledger.accrue(ANNA, D("100"), key="k")
        response = create_app(services=services).test_client().get("/card/" + "A" * 32)
        assert response.status_code == 404
        assert response.get_json()["error"] == "card_not_found"
    finally:
        services.close()


def test_a_client_asking_too_often_gets_429_with_retry_after(
        services: Services, url: str) -> None:
    services.settings = services.settings.model_copy(update={
        "card": services.settings.card.model_copy(update={"rate_limit": "3/minute"})})
    client = create_app(services=services).test_client()
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get(url)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"] == "too_many_requests"
    # Unknown tokens count too: guessing is what the limit is for.
    assert client.get("/card/" + "B" * 32).status_code == 429
    html = client.get(url, headers=HTML)
    assert html.status_code == 429 and "Слишком много запросов" in html.get_data(as_text=True)
    # Another client is not held back; without trusted proxies, X-Forwarded-For is ignored.
    assert client.get(url, environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200
    assert client.get(url, headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 429


def test_the_limiter_counts_per_client_and_says_how_long_to_wait() -> None:
    limiter = ClientLimiter("2/minute;3/hour")
    assert [limiter.hit("a"), limiter.hit("a")] == [None, None]
    wait = limiter.hit("a")
    assert wait is not None and 1 <= wait <= 60
    assert limiter.hit("b") is None


@pytest.mark.parametrize(("remote", "forwarded", "trusted", "client"), [
    ("10.0.0.1", None, 0, "10.0.0.1"),
    ("10.0.0.1", "203.0.113.7", 0, "10.0.0.1"),          # no proxy trusted: header ignored
    ("10.0.0.1", "203.0.113.7", 1, "203.0.113.7"),
    ("10.0.0.1", "6.6.6.6, 203.0.113.7", 1, "203.0.113.7"),  # the client's own entry is left
    ("10.0.0.1", "6.6.6.6, 203.0.113.7, 10.0.0.5", 2, "203.0.113.7"),
    ("10.0.0.1", "203.0.113.7", 2, "10.0.0.1"),          # fewer hops than proxies
    (None, None, 0, "unknown"),
    ("2001:db8:1:2:aaaa::1", None, 0, "2001:db8:1:2::/64"),   # a /64 is one subscriber
    ("2001:db8:1:2:bbbb::9", None, 0, "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.7", None, 0, "203.0.113.7"),
    ("10.0.0.1", "not-an-address", 1, "not-an-address"),
])
def test_client_address(remote: str | None, forwarded: str | None, trusted: int,
                        client: str) -> None:
    assert client_address(remote, forwarded, trusted) == client


@pytest.mark.parametrize(("value", "language", "shown"), [
    (D(1), "ru", "1 балл"), (D(2), "ru", "2 балла"), (D(5), "ru", "5 баллов"),
    (D(11), "ru", "11 баллов"), (D(21), "ru", "21 балл"), (D(112), "ru", "112 баллов"),
    (D("2.5"), "ru", "2,5 балла"), (D(1234567), "ru", "1\u00a0234\u00a0567 баллов"),
    (D(1), "uk", "1 бал"), (D(3), "uk", "3 бали"), (D(11), "uk", "11 балів"),
    (D("2.5"), "uk", "2,5 бала"),
    (D(1), "en", "1 point"), (D("1234.50"), "en", "1,234.5 points"),
])
def test_points_in_words(value: D, language: str, shown: str) -> None:
    figure, _, word = shown.rpartition(" ")  # a no-break space keeps them together
    assert translator(language).points(value) == figure + NBSP + word


def test_the_page_shows_the_referral_code_and_its_share_link(
        client: FlaskClient, url: str, services: Services, settings: Settings) -> None:
    code = services.ledger.account(ANNA).referral_code
    assert code is not None
    shown = text_of(client.get(url).get_data(as_text=True))
    assert f"Приведите друга Ваш код: {code}" in shown
    assert "Поделиться" not in shown  # no program.referral_link: the code alone
    services.settings = settings.model_copy(update={"program": settings.program.model_copy(
        update={"referral_link": "https://shop.example/?ref={code}"})})
    html = client.get(url).get_data(as_text=True)
    assert f'href="https://shop.example/?ref={code}"' in html


def test_a_referral_link_needs_the_code_in_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        make_settings(tmp_path, program={"referral_link": "https://shop.example/"})
    assert refused.value.problems == [
        "program.referral_link: an http(s) address with {code} where the "
        "referral code goes, e.g. https://shop.example/?ref={code} "
        "(got 'https://shop.example/')"]


# -- in a real browser, at a phone's size ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium "
                    "(apt-get install -y chromium) for the headless browser test")
def test_on_a_phone_in_a_real_browser(served: str, url: str, services: Services,
                                      tmp_path: Path) -> None:
    dom = chromium("--dump-dom", served + url, profile=tmp_path / "profile")
    assert 'id="balance"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "card.png"
    run = chromium(f"--screenshot={shot}", f"--window-size={PHONE[0]},{PHONE[1]}",
                   "--force-device-scale-factor=1", served + url, profile=tmp_path / "profile")
    assert shot.is_file(), run.stderr[-2000:]
    width, height, colours = png_colours(shot.read_bytes())
    assert (width, height) == PHONE
    assert len(colours) > 50 and (255, 255, 255) in colours
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "card.png")
    if ZBARIMG:
        assert_scannable(served + url, tmp_path, services.ledger.account(ANNA).card_number)


def assert_scannable(address: str, tmp_path: Path, card_number: Any) -> None:
    """A scanner reads the card number from both codes in a full-page screenshot."""
    shot = tmp_path / "card-full.png"
    chromium(f"--screenshot={shot}", "--window-size=390,1600",
             "--force-device-scale-factor=2", address, profile=tmp_path / "profile")
    read = subprocess.run([str(ZBARIMG), "--quiet", str(shot)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert sorted(read.stdout.split()) == sorted([f"QR-Code:{card_number}",
                                                  f"CODE-128:{card_number}"]), read.stderr
