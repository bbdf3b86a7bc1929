"""The "Loyalty" tab in Bitrix24 contact and deal cards, end to end against the fake portal:
registered by install, opened by the placement call Bitrix24 sends (checked with the portal),
changes sent from its signed forms, and the page as a real browser draws it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from decimal import Decimal as D
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from connector.bitrix24.tab import PLACEMENTS, TITLES
from connector.bitrix24.tab_forms import FORM_LIFETIME, FormTokens, TabRefused
from connector.ledger.models import Entry
from connector.sandbox import FakeBitrix24Portal, ManualClock
from tests.conftest import Clock, fresh_services
from tests.test_bitrix24_e2e import Harness, app_harness, b24_settings, installed_app
from tests.test_dashboard import ARTIFACTS, CHROMIUM, chromium, png_colours

CONTACT_TAB, DEAL_TAB = "CRM_CONTACT_DETAIL_TAB", "CRM_DEAL_DETAIL_TAB"
TAB_URL = "http://127.0.0.1:8080/bitrix24/tab"


@pytest.fixture
def language() -> str:
    return "en"  # the tests of wording read English; test_the_tab_in_* the others


@pytest.fixture
def h(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
      clock: Clock, language: str) -> Iterator[Harness]:
    with installed_app(tmp_path, database_url, portal, time, clock, language=language) as h:
        yield h


def open_tab(h: Harness, placement: str, entity_id: int | str, *, user_id: int = 1,
             **overrides: Any) -> TestResponse:
    query, body, content_type = h.portal.placement_call(placement, entity_id, user_id=user_id,
                                                        **overrides)
    return h.web.post(f"/bitrix24/tab?{query}", data=body, content_type=content_type)


def form_token(html: str, form: str) -> str:
    found = re.search(rf'id="{form}".*?name="form" value="([^"]+)"', html, re.S)
    assert found, f"no {form} form on the page"
    return unescape(found.group(1))


def send(h: Harness, token: str, points: str, reason: str) -> TestResponse:
    return h.web.post("/bitrix24/tab/change",
                      data={"form": token, "points": points, "reason": reason})


def entries(h: Harness) -> int:
    with h.services.db.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(Entry)) or 0)


def refusal(response: TestResponse, status: int, code: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["error"] == code and body["detail"]
    return str(body["detail"])


# -- install ---------------------------------------------------------------------------------
def test_install_registers_both_tabs_once_and_uninstall_removes_them(h: Harness) -> None:
    h.connector.installer.uninstall()
    assert h.portal.placements == []
    first = h.connector.installer.install()
    assert {(p["placement"], p["handler"]) for p in h.portal.placements} == {
        (CONTACT_TAB, TAB_URL), (DEAL_TAB, TAB_URL)}
    assert all(p["title"] == "Loyalty" and p["langAll"]["ru"]["TITLE"] == TITLES["ru"]
               and p["options"] == [] for p in h.portal.placements)
    assert f"registered tab {CONTACT_TAB} -> {TAB_URL}" in first.lines()
    again = h.connector.installer.install()
    assert f"tab {DEAL_TAB} exists" in again.lines()
    assert len(h.portal.calls_of("placement.bind")) == 2 * len(PLACEMENTS)  # two installs
    report = h.connector.installer.uninstall()
    assert h.portal.placements == []
    assert {f"removed tab {code}" for code in PLACEMENTS} <= set(report.lines())


def test_the_fake_portal_refuses_placements_as_documented(h: Harness) -> None:
    from connector.errors import CRMAuthError, FatalCRMError

    h.connector.installer.uninstall()
    webhook = h.portal.webhook_url
    answer = h.client.session.post(f"{webhook}placement.bind.json", timeout=5,
                                   json={"PLACEMENT": CONTACT_TAB, "HANDLER": TAB_URL})
    assert (answer.status_code, answer.json()["error"]) == (403, "WRONG_AUTH_TYPE")
    with pytest.raises(FatalCRMError) as missing:
        h.client.call("placement.bind", {"HANDLER": TAB_URL})
    assert missing.value.code == "ERROR_ARGUMENT"
    h.client.call("placement.bind", {"PLACEMENT": CONTACT_TAB, "HANDLER": TAB_URL})
    with pytest.raises(FatalCRMError, match="already binded"):
        h.client.call("placement.bind", {"PLACEMENT": CONTACT_TAB, "HANDLER": TAB_URL})
    with pytest.raises(FatalCRMError) as unknown:
        h.client.call("placement.bind", {"PLACEMENT": "CRM_NOTHING_TAB", "HANDLER": TAB_URL})
    assert unknown.value.code == "ERROR_PLACEMENT_NOT_FOUND"
    clerk = h.portal.add_user("Olga", admin=False)
    token = h.portal.issue_tokens(clerk)["access_token"]
    assert h.client.call_as_user("user.admin", token) is False
    assert h.client.call_as_user("user.current", token)["NAME"] == "Olga"
    with pytest.raises(FatalCRMError) as denied:
        h.client.call_as_user("placement.unbind", token, {"PLACEMENT": CONTACT_TAB})
    assert denied.value.code == "ACCESS_DENIED"
    assert h.client.call("placement.unbind", {"PLACEMENT": CONTACT_TAB}).result == {"count": 2}
    with pytest.raises(CRMAuthError):
        h.client.call_as_user("profile", "not-a-token")


@pytest.mark.parametrize(("language", "words"), [
    ("ru", ["Программа лояльности", "может начислять и списывать", "Начислить бонусные баллы",
            "2 покупки, 20\u00a0000\u00a0₽", "История"]),
    ("uk", ["Програма лояльності", "може нараховувати та списувати", "Нарахувати бонусні бали",
            "2 покупки, 20\u00a0000\u00a0₽", "Історія"]),
])
def test_the_tab_in_russian_and_ukrainian(h: Harness, language: str, words: list[str]) -> None:
    anna = h.portal.add_contact(NAME="Anna", LAST_NAME="Petrova")
    h.won(anna, "10000.00")
    h.won(anna, "10000.00")
    h.process()
    html = open_tab(h, CONTACT_TAB, anna).get_data(as_text=True)
    shown = re.sub(r"[ \n]+", " ", html)  # no-break spaces stay: numbers are grouped by them
    assert f'<html lang="{language}">' in html
    for word in words:
        assert word in shown, word
    assert 'id="balance">700<' in html  # 100 welcome + 2 × 300
    assert "can grant and redeem" not in html
    send_back = send(h, form_token(html, "grant"), "1500", "извинение")
    notice = {"ru": "Начислено 1\u00a0500\u00a0баллов; баланс 2\u00a0200",
              "uk": "Нараховано 1\u00a0500\u00a0балів; баланс 2\u00a0200"}[language]
    answer = send_back.get_data(as_text=True)
    assert notice in answer, re.findall(r"flash[^<]*<", answer)


# -- opening the tab -------------------------------------------------------------------------
def test_an_admin_sees_the_account_and_grants_and_redeems_with_a_reason(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna", LAST_NAME="Petrova")
    h.won(anna, "10000.00")
    h.process()  # the welcome bonus, 100, and 300 points for the purchase
    response = open_tab(h, CONTACT_TAB, anna)
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html[:500]
    assert 'id="customer">Anna Petrova<' in html and 'id="balance">400<' in html
    account = h.services.ledger.account(h.ref(anna))
    assert account.card_number and account.card_number[:4] in html
    assert "can grant and redeem" in html and "purchase" in html
    csp = response.headers["Content-Security-Policy"]
    assert f"frame-ancestors {h.portal.url};" in csp and "default-src 'none'" in csp
    assert "X-Frame-Options" not in response.headers
    assert not re.search(r"<script|<link|<img|\bsrc=|url\(|@import", html)

    grant = form_token(html, "grant")
    granted = send(h, grant, "150", "apology for a late delivery")
    assert granted.status_code == 200
    assert "150\u00a0points granted; balance 550" in granted.get_data(as_text=True)
    again = send(h, grant, "150", "apology for a late delivery")  # a double submit
    assert "already sent: applied once" in again.get_data(as_text=True)
    assert h.balance(anna) == D("550.00")

    redeem = form_token(granted.get_data(as_text=True), "redeem")
    too_much = send(h, redeem, "5000", "paid order 1042")
    assert too_much.status_code == 409
    assert "points are spendable" in too_much.get_data(as_text=True)
    assert send(h, redeem, "100", "paid order 1042").status_code == 200
    history = h.services.ledger.history(h.ref(anna))
    assert [(e.kind, e.points, e.comment, e.actor) for e in history[:2]] == [
        ("redemption", D("-100.00"), "paid order 1042", "bitrix24:user:1"),
        ("bonus", D("150.00"), "apology for a late delivery", "bitrix24:user:1")]
    assert h.balance(anna) == D("450.00")


def test_a_form_needs_a_reason_and_points_and_loses_nothing(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    grant = form_token(open_tab(h, CONTACT_TAB, anna).get_data(as_text=True), "grant")
    before = entries(h)
    for points, reason, problem in (("100", "  ", "reason: must not be empty"),
                                    ("-5", "x", "points: must be positive"),
                                    ("0", "x", "points: must be positive"),
                                    ("1.234", "x", "points: must be digits")):
        response = send(h, grant, points, reason)
        assert response.status_code == 400
        assert problem in unescape(response.get_data(as_text=True))
    assert entries(h) == before
    # the same form, now filled in right, still works: nothing was used up
    assert send(h, grant, "100", "welcome gift").status_code == 200
    assert h.balance(anna) == D("100.00")  # no welcome bonus: the contact was never an event


def test_others_read_only_unless_listed_as_editors(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    clerk = portal.add_user("Olga", "Sidorova")
    manager = portal.add_user("Ivan", "Petrov")
    h = app_harness(tmp_path, database_url, portal, time, clock)  # installed: tokens kept
    h.services.close()
    settings = b24_settings(tmp_path, database_url, portal, webhook_url=None,
                            application_token=None, client_id=portal.client_id,
                            client_secret=portal.client_secret, oauth_url=portal.oauth_url,
                            tab_editors=[manager])
    h = Harness(portal, fresh_services(settings, clock=clock), time, clock)
    try:
        anna = portal.add_contact(NAME="<script>alert(1)</script>")  # CRM text is escaped
        read_only = open_tab(h, CONTACT_TAB, anna, user_id=clerk).get_data(as_text=True)
        assert "Olga Sidorova" in read_only and 'id="read-only"' in read_only
        assert "<script" not in read_only and "&lt;script&gt;alert(1)" in read_only
        assert 'name="form"' not in read_only
        editor = open_tab(h, CONTACT_TAB, anna, user_id=manager).get_data(as_text=True)
        assert send(h, form_token(editor, "grant"), "20", "referral call").status_code == 200
        assert h.services.ledger.history(h.ref(anna))[0].actor == f"bitrix24:user:{manager}"
    finally:
        h.services.close()


def test_the_deal_tab_shows_the_deals_contact(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.portal.add_deal(contact_ids=[anna], TITLE="Sofa", STAGE_ID="NEW",
                             OPPORTUNITY="5000.00")
    html = open_tab(h, DEAL_TAB, deal).get_data(as_text=True)
    assert f'id="customer">Anna · deal Sofa #{deal}<' in html
    assert send(h, form_token(html, "grant"), "50", "deal discount").status_code == 200
    assert h.balance(anna) == D("50.00")
    lonely = h.portal.add_deal(TITLE="No buyer", STAGE_ID="NEW")
    html = open_tab(h, DEAL_TAB, lonely).get_data(as_text=True)
    assert 'id="no-contact"' in html and 'name="form"' not in html


# -- what is refused -------------------------------------------------------------------------
def test_a_placement_call_is_checked_with_the_configured_portal(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    before = (entries(h), len(h.portal.calls))
    assert "DOMAIN" in refusal(open_tab(h, CONTACT_TAB, anna, domain="evil.example"),
                               401, "unauthorized")
    assert "member_id" in refusal(open_tab(h, CONTACT_TAB, anna, member_id="f" * 32),
                                  401, "unauthorized")
    assert "APPLICATION_TOKEN" in refusal(
        open_tab(h, CONTACT_TAB, anna, application_token="f" * 32), 401, "unauthorized")
    # None of these was sent anywhere: the domain and member id are ours to check.
    assert (entries(h), len(h.portal.calls)) == before
    assert "AUTH_ID" in refusal(open_tab(h, CONTACT_TAB, anna, access_token="forged-token"),
                                401, "unauthorized")
    assert [c.status for c in h.portal.calls_of("profile")] == [401]  # asked our portal
    query, body, content_type = h.portal.placement_call(CONTACT_TAB, anna)
    h.time.advance(3601)  # the user's token expires
    response = h.web.post(f"/bitrix24/tab?{query}", data=body, content_type=content_type)
    assert "EXPIRED_TOKEN" in refusal(response, 401, "unauthorized")
    assert "PLACEMENT" in refusal(open_tab(h, "CRM_LEAD_DETAIL_TAB", anna), 400,
                                  "unsupported_placement")
    assert "ID" in refusal(open_tab(h, CONTACT_TAB, anna, options={"URI": "/x"}), 400,
                           "invalid_placement_call")
    assert "AUTH_ID" in refusal(h.web.post("/bitrix24/tab", data={
        "PLACEMENT": CONTACT_TAB, "PLACEMENT_OPTIONS": '{"ID": "1"}'}), 400,
        "invalid_placement_call")
    assert "Not found" in refusal(open_tab(h, CONTACT_TAB, 999), 404, "not_found")
    assert entries(h) == before[0]


def test_a_change_needs_a_form_this_service_signed_and_still_fresh(
        h: Harness, clock: Clock) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    grant = form_token(open_tab(h, CONTACT_TAB, anna).get_data(as_text=True), "grant")
    before = entries(h)
    version, payload, signature = grant.split(".")
    forged = {
        "none": "", "garbage": "v1.e30.AAAA", "unsigned": f"{version}.{payload}.",
        "other key": FormTokens("another-secret", clock).issue(
            user_id=1, user_name="Admin", admin=True, contact_id=str(anna), label="x",
            operation="bonus"),
        "tampered": f"{version}.{payload[:-2]}AA.{signature}",
    }
    for name, token in forged.items():
        response = send(h, token, "100", "x")
        assert refusal(response, 401, "invalid_form"), name
    clock.advance(seconds=FORM_LIFETIME.total_seconds() + 1)
    assert "reopen the tab" in refusal(send(h, grant, "100", "x"), 401, "form_expired")
    assert entries(h) == before


def test_a_form_token_is_bound_to_its_user_contact_and_operation(clock: Clock) -> None:
    tokens = FormTokens("app-secret", clock)
    token = tokens.issue(user_id=7, user_name="Ivan", admin=False, contact_id="42",
                         label="Anna", operation="redeem")
    grant = tokens.verify(token)
    assert (grant.user_id, grant.contact_id, grant.operation, grant.admin) == (
        7, "42", "redeem", False)
    assert tokens.verify(tokens.issue(user_id=7, user_name="Ivan", admin=False,
                                      contact_id="42", label="Anna",
                                      operation="redeem")).nonce != grant.nonce
    with pytest.raises(TabRefused):
        FormTokens("other", clock).verify(token)


def test_without_an_app_the_tab_is_not_there(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, clock: Clock) -> None:
    from tests.test_bitrix24_e2e import create_app_client

    services = fresh_services(b24_settings(tmp_path, database_url, portal), clock=clock)
    try:
        web = create_app_client(services)
        query, body, content_type = portal.placement_call(CONTACT_TAB, 1)
        response = web.post(f"/bitrix24/tab?{query}", data=body, content_type=content_type)
        assert "client_id" in refusal(response, 404, "tab_unavailable")
        assert portal.calls == []
    finally:
        services.close()


# -- in a real browser -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium "
                    "(apt-get install -y chromium) for the headless browser test")
def test_the_tab_in_a_real_browser_at_slider_width(h: Harness, tmp_path: Path) -> None:
    anna = h.portal.add_contact(NAME="Anna", LAST_NAME="Petrova")
    h.won(anna, "40000.00")
    h.process()
    html = open_tab(h, CONTACT_TAB, anna).get_data(as_text=True)
    send(h, form_token(html, "grant"), "150", "apology for a late delivery")
    page = send(h, form_token(html, "redeem"), "200", "paid part of order 1042")
    assert page.status_code == 200
    # The page is self-contained: saved as a file, the browser needs nothing else.
    saved = tmp_path / "tab.html"
    saved.write_text(page.get_data(as_text=True), encoding="utf-8")
    for width, height in ((800, 900), (600, 1100)):
        shot = tmp_path / f"tab-{width}.png"
        run = chromium(f"--screenshot={shot}", f"--window-size={width},{height}",
                       "--blink-settings=imagesEnabled=false", saved.as_uri(),
                       profile=tmp_path / "profile")
        assert shot.is_file(), run.stderr[-2000:]
        shot_width, shot_height, colours = png_colours(shot.read_bytes())
        assert (shot_width, shot_height) == (width, height)
        assert len(colours) > 50 and (255, 255, 255) in colours
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(shot, ARTIFACTS / f"bitrix24_tab_{width}.png")
    dom = chromium("--dump-dom", saved.as_uri(), profile=tmp_path / "profile")
    assert 'id="balance">' in dom.stdout and "paid part of order 1042" in dom.stdout
