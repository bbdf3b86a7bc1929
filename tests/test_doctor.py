"""`doctor`: a healthy installation is all ok; each broken piece gives its own FAIL or WARN line
with the fix. The CRMs are the fakes (real local HTTP servers), the public URL is the service's
own Flask app served on a real port."""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from cryptography.fernet import Fernet
from werkzeug.serving import make_server

from connector import doctor
from connector.bitrix24.install import CODES, EVENTS, ROBOTS
from connector.cli import cli
from connector.config import DatabaseSettings, Settings
from connector.crm.bitrix24 import tokens_from
from connector.db import Database
from connector.doctor import Check, secret_key, stored_tokens
from connector.i18n import translator
from connector.sandbox import FakeBitrix24Portal
from connector.sandbox.amocrm import FakeAmoCRM
from connector.sealing.keys import too_open
from connector.services import Services
from connector.triggers import TIER_DOWN, TIER_UP
from tests.conftest import Clock, fresh_services, make_settings
from tests.test_sealing import PG_URL, file_settings, some_tokens
from webhooks import create_app

AMO_SECRET = "Wh00kSecret0123456789"
B24_SECRET = "fakewebhooksecret01"  # FakeBitrix24Portal's inbound webhook secret
LONG_LIVED = "long-lived-token"


class Live:
    """The service's web app on a real port, so GET {public_url}/healthz goes over HTTP. The
    port exists before the settings that name it, so the app is set afterwards."""

    def __init__(self) -> None:
        self.app: Callable[..., Any] | None = None
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)

    def serve(self, services: Services) -> None:
        self.app = create_app(services=services)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def live() -> Iterator[Live]:
    server = Live()
    yield server
    server.stop()


@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    # install and doctor run back to back, each with a fresh limiter: room for both at once
    with FakeBitrix24Portal(burst=250) as fake:
        yield fake


@pytest.fixture
def account() -> Iterator[FakeAmoCRM]:
    with FakeAmoCRM(burst=50) as fake:  # doctor runs back to back, each with a fresh limiter
        yield fake


def webhook_b24(portal: FakeBitrix24Portal, **extra: Any) -> dict[str, Any]:
    """A complete webhook setup: every transition has its portal trigger's code."""
    return {"enabled": True, "webhook_url": portal.webhook_url,
            "application_token": portal.application_token, "timeout_seconds": 2,
            "triggers": {code: {"code": f"c{n}x"} for n, code in enumerate(CODES)}, **extra}


def app_b24(portal: FakeBitrix24Portal) -> dict[str, Any]:
    return {"enabled": True, "client_id": portal.client_id, "client_secret": portal.client_secret,
            "oauth_url": portal.oauth_url, "portal": portal.url, "timeout_seconds": 2}


def long_lived_amo(account: FakeAmoCRM, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "base_url": account.base_url, "subdomain": "example",
            "webhook_secret": AMO_SECRET, "long_lived_token": LONG_LIVED,
            "timeout_seconds": 2, **extra}


def build(tmp_path: Path, database_url: str, live: Live, clock: Clock,
          **sections: dict[str, Any]) -> Services:
    settings = make_settings(tmp_path, database_url, server={"public_url": live.url},
                             **sections)
    services = fresh_services(settings, clock=clock)
    live.serve(services)
    return services


def examine(services: Services, settings: Settings | None = None) -> dict[str, Check]:
    found = list(doctor.run(settings or services.settings, lambda: services, config_file=None))
    checks = {check.name: check for check in found}
    assert len(checks) == len(found), "one line per check"
    return checks


def statuses(checks: dict[str, Check]) -> dict[str, str]:
    return {name: check.status for name, check in checks.items()}


def install_app(portal: FakeBitrix24Portal, services: Services) -> None:
    """What ONAPPINSTALL leaves behind, then `install bitrix24` in app mode."""
    services.bitrix24_credentials.save(tokens_from(
        {**portal.issue_tokens(), "application_token": portal.application_token},
        endpoint=services.settings.bitrix24.rest_url))
    assert services.bitrix24 is not None
    services.bitrix24.installer.install()


def jwt(exp: datetime) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part({'exp': int(exp.timestamp())})}.sig"


# -- healthy ---------------------------------------------------------------------------------
def test_healthy_webhook_setup_and_amocrm_are_all_ok(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        portal: FakeBitrix24Portal, account: FakeAmoCRM) -> None:
    services = build(tmp_path, database_url, live, clock, bitrix24=webhook_b24(portal),
                     amocrm=long_lived_amo(account))
    assert services.bitrix24 is not None and services.amocrm is not None
    services.bitrix24.installer.install()
    services.amocrm.installer.install()
    checks = examine(services)
    assert statuses(checks) == {
        name: "ok" for name in ("config", "database", "secret key", "stored tokens",
                                "bitrix24", "bitrix24 fields", "bitrix24 events",
                                "bitrix24 triggers", "amocrm", "amocrm fields",
                                "amocrm webhook", "amocrm token", "public url", "inbox",
                                "dead letters", "write-back refusals")}
    assert checks["bitrix24"].line() == f"ok   bitrix24: 127.0.0.1:{portal.port} answers, " \
                                        "inbound webhook accepted"
    fields = len(services.settings.bitrix24.fields)
    assert checks["bitrix24 fields"].detail == f"all {fields} present"
    assert checks["amocrm"].detail == "account example (id 28805383) answers, long-lived " \
                                      "token accepted"
    assert checks["amocrm webhook"].detail == \
        f"7 events -> {live.url}/amocrm/webhooks/<webhook_secret>"
    assert checks["public url"].detail == f"GET {live.url}/healthz answered 200"
    assert checks["dead letters"].line() == "ok   dead letters: none"
    services.close()


def test_healthy_app_setup_checks_events_robots_triggers_and_the_token(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        portal: FakeBitrix24Portal) -> None:
    services = build(tmp_path, database_url, live, clock, bitrix24=app_b24(portal))
    install_app(portal, services)
    checks = examine(services)
    assert set(statuses(checks).values()) == {"ok"}, [c.line() for c in checks.values()]
    assert checks["bitrix24"].detail == f"{portal.domain} answers, app token accepted"
    assert (checks["bitrix24 events"].detail, checks["bitrix24 robots"].detail,
            checks["bitrix24 triggers"].detail) == (
        f"all {len(EVENTS)} present", f"all {len(ROBOTS)} present", f"all {len(CODES)} present")
    assert checks["bitrix24 tab"].detail == \
        f"contact and deal cards open {live.url}/bitrix24/tab"
    assert checks["bitrix24 token"].detail.startswith("access token valid until ")
    services.close()


# -- Bitrix24 broken -------------------------------------------------------------------------
def test_missing_field_unbound_event_moved_handler_and_missing_robot(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        portal: FakeBitrix24Portal) -> None:
    services = build(tmp_path, database_url, live, clock, bitrix24=app_b24(portal))
    install_app(portal, services)
    tier = next(key for key, f in portal.store.userfields.items()
                if f["FIELD_NAME"] == "UF_CRM_LOYALTY_TIER")
    del portal.store.userfields[tier]
    bound = portal.records.bound_events
    bound[:] = [b for b in bound if b["event"] != "ONCRMDEALDELETE"]
    moved = next(b for b in bound if b["event"] == "ONCRMDEALUPDATE")
    moved["handler"] = "https://old.example.com/bitrix24/events"
    del portal.records.robots["loyalty_redeem"]
    portal.placements[:] = [p for p in portal.placements
                            if p["placement"] != "CRM_DEAL_DETAIL_TAB"]
    checks = examine(services)
    install = " — run: loyalty-connector install bitrix24"
    fields = len(services.settings.bitrix24.fields)
    assert checks["bitrix24 fields"].line() == \
        f"FAIL bitrix24 fields: 1 of {fields} contact field(s): UF_CRM_LOYALTY_TIER" + install
    assert checks["bitrix24 events"].line() == (
        f"FAIL bitrix24 events: 2 of {len(EVENTS)} event(s) unbound: ONCRMDEALUPDATE, "
        "ONCRMDEALDELETE; "
        "bound to https://old.example.com/bitrix24/events instead (server.public_url "
        "changed?)" + install)
    assert checks["bitrix24 robots"].line() == \
        f"FAIL bitrix24 robots: 1 of {len(ROBOTS)} robot(s) missing: loyalty_redeem" + install
    assert checks["bitrix24 triggers"].status == "ok"
    assert checks["bitrix24 tab"].line() == (
        f"WARN bitrix24 tab: 1 of 2 card tab(s) not registered at {live.url}/bitrix24/tab: "
        "CRM_DEAL_DETAIL_TAB" + install)
    services.close()


def test_revoked_app_token(tmp_path: Path, database_url: str, live: Live, clock: Clock,
                           portal: FakeBitrix24Portal) -> None:
    services = build(tmp_path, database_url, live, clock, bitrix24=app_b24(portal))
    install_app(portal, services)
    portal.expire_tokens()
    portal.revoke_refresh_tokens()  # as after an uninstall: refresh answers invalid_grant
    reinstall = (" — reinstall the app in Bitrix24: its ONAPPINSTALL brings new tokens to "
                 f"{live.url}/bitrix24/events")
    first = examine(services)["bitrix24"]
    assert first.line() == "FAIL bitrix24: app token rejected (INVALID_GRANT)" + reinstall
    again = examine(services)  # the refusal was recorded: no call is made now
    assert again["bitrix24"].line() == ("FAIL bitrix24: app credentials revoked (oauth refresh "
                                        "refused: INVALID_GRANT; reinstall the app)" + reinstall)
    assert "bitrix24 fields" not in again
    services.close()


def test_stored_credentials_naming_another_portal(tmp_path: Path, database_url: str,
                                                  live: Live, clock: Clock,
                                                  portal: FakeBitrix24Portal) -> None:
    services = build(tmp_path, database_url, live, clock, bitrix24=app_b24(portal))
    install_app(portal, services)
    assert examine(services)["bitrix24 binding"].line() == (
        f"ok   bitrix24 binding: app credentials bound to {portal.domain}; installs and "
        "events from other domains are refused")
    # What an install forged before the connector checked domains left behind.
    services.bitrix24_credentials.save(tokens_from(
        {**portal.issue_tokens(), "application_token": portal.application_token},
        endpoint="https://evil.example/rest/"))
    assert examine(services)["bitrix24 binding"].line() == (
        "FAIL bitrix24 binding: the stored app credentials name the endpoint "
        f"'https://evil.example/rest/', not the configured portal {portal.domain} (a forged "
        "or foreign install?) — reinstall the app in Bitrix24: its ONAPPINSTALL brings new "
        f"tokens to {live.url}/bitrix24/events; calls go only to {portal.rest_url} meanwhile")
    services.close()


def test_app_not_installed_yet(tmp_path: Path, database_url: str, live: Live, clock: Clock,
                               portal: FakeBitrix24Portal) -> None:
    services = build(tmp_path, database_url, live, clock, bitrix24=app_b24(portal))
    assert examine(services)["bitrix24"].line() == (
        "FAIL bitrix24: the app is not installed yet (no ONAPPINSTALL received) — install the "
        f"local app in Bitrix24 with its handler at {live.url}/bitrix24/events")
    assert portal.calls == []
    services.close()


def test_unreachable_portal_and_rejected_webhook_never_show_the_secret(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        portal: FakeBitrix24Portal) -> None:
    services = build(tmp_path, database_url, live, clock, bitrix24=webhook_b24(portal))
    portal.webhooks.clear()  # the inbound webhook was deleted in the portal
    rejected = examine(services)
    assert rejected["bitrix24"].line() == (
        "FAIL bitrix24: inbound webhook rejected (NO_AUTH_FOUND) — create an inbound webhook "
        "with the crm and bizproc scopes and set LOYALTY_BITRIX24__WEBHOOK_URL")
    portal.down()
    down = examine(services)
    assert down["bitrix24"].line() == (
        "FAIL bitrix24: unreachable: crm.contact.userfield.list: cannot reach the portal "
        f"(ConnectionError) — check that 127.0.0.1:{portal.port} is up and reachable from "
        "this host (DNS, firewall, proxy)")
    # In Russian the connector's own words are translated; the method name, the library's
    # exception name and the host stay as they are.
    russian = down["bitrix24"].line(translator("ru"))
    assert russian.startswith("FAIL bitrix24: недоступен: crm.contact.userfield.list: портал "
                              "недоступен (ConnectionError) — "), russian
    assert "cannot reach" not in russian and f"127.0.0.1:{portal.port}" in russian
    assert down["bitrix24"].as_json()["detail"] == (
        "unreachable: crm.contact.userfield.list: cannot reach the portal (ConnectionError)")
    assert "bitrix24 fields" not in down and down["inbox"].status == "ok"
    for check in [*rejected.values(), *down.values()]:
        assert B24_SECRET not in check.line()
    services.close()


def test_webhook_setup_without_the_outgoing_webhook_token(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        portal: FakeBitrix24Portal) -> None:
    services = build(tmp_path, database_url, live, clock,
                     bitrix24=webhook_b24(portal, application_token=None))
    assert examine(services)["bitrix24 events"].line() == (
        "FAIL bitrix24 events: no application token: every event is refused (401) — copy the "
        "outgoing webhook's application token into LOYALTY_BITRIX24__APPLICATION_TOKEN")
    services.close()


def test_webhook_setup_transitions_without_a_trigger_code(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        portal: FakeBitrix24Portal) -> None:
    fix = (" — add a \"Track incoming webhook\" trigger per transition in the portal and set "
           "its code in [bitrix24.triggers.<transition>] (run: loyalty-connector install "
           "bitrix24 prints the steps)")
    none = build(tmp_path, database_url, live, clock, bitrix24=webhook_b24(portal, triggers={}))
    assert examine(none)["bitrix24 triggers"].line() == (
        "FAIL bitrix24 triggers: no transition has a trigger code: no automation trigger ever "
        "fires (mailings on loyalty events never start)" + fix)
    none.close()
    some = build(tmp_path, database_url, live, clock, bitrix24=webhook_b24(
        portal, triggers={code: {"code": "c5u4m"} for code in CODES if code != TIER_DOWN}))
    assert examine(some)["bitrix24 triggers"].line() == (
        f"WARN bitrix24 triggers: 1 of {len(CODES)} transition(s) fire nothing: "
        "loyalty_tier_down" + fix)
    some.close()


def test_an_app_transition_with_a_portal_trigger_code_needs_no_app_trigger(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        portal: FakeBitrix24Portal) -> None:
    settings = {**app_b24(portal), "triggers": {TIER_DOWN: {"code": "nwly5"}}}
    services = build(tmp_path, database_url, live, clock, bitrix24=settings)
    install_app(portal, services)
    del portal.records.triggers[TIER_DOWN]
    assert examine(services)["bitrix24 triggers"].status == "ok"
    del portal.records.triggers[TIER_UP]
    assert examine(services)["bitrix24 triggers"].line() == (
        f"FAIL bitrix24 triggers: 1 of {len(CODES)} trigger(s) missing: loyalty_tier_up — "
        "run: loyalty-connector install bitrix24")
    services.close()


# -- amoCRM broken ---------------------------------------------------------------------------
def test_amocrm_revoked_token_missing_field_and_webhook(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        account: FakeAmoCRM) -> None:
    services = build(tmp_path, database_url, live, clock, amocrm=long_lived_amo(account))
    assert services.amocrm is not None
    services.amocrm.installer.install()
    account.state.custom_fields = [f for f in account.state.custom_fields
                                   if f["code"] != "LOYALTY_CARD"]
    account.state.webhooks[0]["disabled"] = True
    checks = examine(services)
    assert checks["amocrm fields"].line() == (
        f"FAIL amocrm fields: 1 of {len(services.settings.amocrm.fields)} contact field(s): "
        "LOYALTY_CARD — run: loyalty-connector install amocrm")
    assert checks["amocrm webhook"].line() == (
        "FAIL amocrm webhook: amoCRM disabled the webhook (too many failed deliveries) — make "
        f"sure {live.url} is reachable, then run: loyalty-connector install amocrm")
    account.state.webhooks.clear()
    assert examine(services)["amocrm webhook"].line() == (
        f"FAIL amocrm webhook: no account webhook to {live.url}/amocrm/webhooks/"
        "<webhook_secret> — run: loyalty-connector install amocrm")
    account.access[LONG_LIVED] = False  # revoked in amoCRM's "granted access" list
    revoked = examine(services)
    assert revoked["amocrm"].line() == (
        "FAIL amocrm: token rejected (401) — generate a new long-lived token (amoCRM: "
        "integration settings > Keys) and set LOYALTY_AMOCRM__LONG_LIVED_TOKEN")
    assert "amocrm fields" not in revoked
    for check in [*checks.values(), *revoked.values()]:
        assert AMO_SECRET not in check.line() and LONG_LIVED not in check.line()
    services.close()


def test_amocrm_token_expiring_soon_wrong_account_and_unreachable(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        account: FakeAmoCRM) -> None:
    token = jwt(clock.now + timedelta(days=3, hours=1))
    account.access[token] = True
    services = build(tmp_path, database_url, live, clock,
                     amocrm=long_lived_amo(account, long_lived_token=token))
    assert services.amocrm is not None
    services.amocrm.installer.install()
    expiring = examine(services)["amocrm token"]
    assert expiring.line() == (
        "WARN amocrm token: long-lived token expires 2026-03-13 10:00 UTC (in 3 d) — generate "
        "a new long-lived token (amoCRM: integration settings > Keys) and set "
        "LOYALTY_AMOCRM__LONG_LIVED_TOKEN before then")
    # The same check in Russian and Ukrainian: the date and the time left in their words.
    assert expiring.line(translator("ru")) == (
        "WARN токен amocrm: долгосрочный токен истекает 13.03.2026 10:00 UTC (через 3 дн.) — "
        "создайте новый долгосрочный токен (amoCRM: настройки интеграции > Ключи) и задайте "
        "LOYALTY_AMOCRM__LONG_LIVED_TOKEN до этого срока")
    assert expiring.line(translator("uk")).startswith(
        "WARN токен amocrm: довгостроковий токен спливає 13.03.2026 10:00 UTC (через 3 дн.)")
    account.subdomain = "another"
    assert examine(services)["amocrm"].line() == (
        "FAIL amocrm: the token is for account another, but webhooks are expected from example"
        " — set amocrm.base_url (or amocrm.subdomain) to this account's")
    account.down()
    unreachable = examine(services)["amocrm"]
    assert unreachable.status == "fail" and unreachable.detail.startswith("unreachable: ")
    assert unreachable.fix == (f"check amocrm.base_url ({account.base_url}) and that this host "
                               "can reach it")
    services.close()


def test_amocrm_oauth_before_and_after_authorization(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        account: FakeAmoCRM) -> None:
    services = build(tmp_path, database_url, live, clock, amocrm=long_lived_amo(
        account, long_lived_token=None, client_id=account.client_id,
        client_secret=account.client_secret, redirect_uri="https://loyalty.example.com/cb"))
    checks = examine(services)
    assert checks["amocrm redirect uri"].line() == (
        f"WARN amocrm redirect uri: https://loyalty.example.com/cb is not {live.url}/amocrm/"
        "oauth/callback — unless a proxy maps it there, set amocrm.redirect_uri (and the "
        "integration's redirect URI in amoCRM) to it")
    line = checks["amocrm"].line()
    assert line.startswith("FAIL amocrm: not authorized yet — open https://www.amocrm.ru/oauth"
                           f"?client_id={account.client_id}&state=")
    assert line.endswith("&mode=post_message as an account administrator and allow access "
                         "(the link works once, within 30 minutes)")
    # The link the doctor printed is the one amoCRM's callback takes.
    callback = requests.get(f"{live.url}/amocrm/oauth/callback", timeout=10,
                            params=account.consent(authorization_link(line)))
    assert callback.status_code == 200 and callback.json()["status"] == "authorized"
    tokens = services.amocrm_credentials.load()
    assert tokens is not None and tokens.expires_at is not None
    checks = examine(services)
    assert checks["amocrm"].detail == "account example (id 28805383) answers, OAuth token " \
                                      "accepted"
    assert checks["amocrm token"].detail == (
        f"access token valid until {tokens.expires_at:%Y-%m-%d %H:%M} UTC, renewed on use (the "
        "refresh token lapses after 3 months unused)")
    assert tokens.access_token not in checks["amocrm token"].line()
    account.expire_tokens()
    account.refresh_tokens.clear()  # as after the integration's access was withdrawn
    refused = examine(services)["amocrm"].line()
    assert refused.startswith("FAIL amocrm: credentials revoked (amocrm oauth refused (401): "
                              "Token has been revoked; re-authorize the integration) — "
                              "re-authorize: open https://www.amocrm.ru/oauth?client_id=")
    revoked = examine(services)["amocrm"].line()  # as stored: no call to amoCRM now
    assert revoked.split(" — ")[0] == refused.split(" — ")[0]
    assert authorization_link(revoked) != authorization_link(refused)  # a fresh state each run
    services.close()


def test_amocrm_redirect_uri_at_the_callback_is_ok(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        account: FakeAmoCRM) -> None:
    services = build(tmp_path, database_url, live, clock, amocrm=long_lived_amo(
        account, long_lived_token=None, client_id=account.client_id,
        client_secret=account.client_secret, redirect_uri=f"{live.url}/amocrm/oauth/callback"))
    assert examine(services)["amocrm redirect uri"].line() == (
        f"ok   amocrm redirect uri: {live.url}/amocrm/oauth/callback; only authorizations "
        "started by install or doctor are taken")
    services.close()


def authorization_link(line: str) -> str:
    found = re.search(r"https://www\.amocrm\.ru/oauth\?\S+", line)
    assert found is not None, line
    return found.group()


def test_jwt_expiry_is_read_without_verifying() -> None:
    moment = datetime.fromisoformat("2027-01-01T00:00:00+00:00")
    assert doctor.jwt_expiry(jwt(moment)) == moment
    assert doctor.jwt_expiry("not-a-jwt") is None
    assert doctor.jwt_expiry("a.%%%.c") is None


# -- database --------------------------------------------------------------------------------
def test_no_database_file_is_said_and_not_made(tmp_path: Path) -> None:
    db = Database(DatabaseSettings(url=f"sqlite:///{tmp_path}/none.db"))
    assert doctor.database(db).line() == (
        f"FAIL database: no database at {tmp_path}/none.db — run: loyalty-connector db "
        "upgrade (or serve); or check database.url / --config")
    assert not (tmp_path / "none.db").exists()
    db.dispose()


def test_unmigrated_database_still_checks_the_crm(tmp_path: Path, live: Live,
                                                  portal: FakeBitrix24Portal) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/new.db", server={
        "public_url": live.url, "metrics_token": "metrics-token-0123456789"},
        bitrix24=webhook_b24(portal))
    sqlite3.connect(tmp_path / "new.db").close()  # a database file with no schema yet
    services = Services.build(settings)
    live.serve(services)
    checks = examine(services)
    head = services.db.head_revision()
    assert checks["database"].line() == \
        f"FAIL database: at revision nothing, head is {head} — run: loyalty-connector db upgrade"
    assert checks["bitrix24"].status == "ok"
    assert "inbox" not in checks  # nothing to read before the schema exists
    assert checks["public url"].line().startswith("WARN public url: reachable, but the service "
                                                  "there is unhealthy (database: database "
                                                  "schema is at nothing")
    # Without the metrics or admin token /healthz tells only that it is unhealthy.
    anonymous = settings.model_copy(update={"server": settings.server.model_copy(
        update={"metrics_token": None})})
    assert doctor.public_url(anonymous).detail == (
        "reachable, but the service there is unhealthy (details need "
        "server.metrics_token or server.admin_token)")
    services.close()


def test_unreachable_database(tmp_path: Path, live: Live) -> None:
    (tmp_path / "a-directory").mkdir()  # SQLite cannot open a directory as its file
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/a-directory",
                             server={"public_url": live.url})
    services = Services.build(settings)
    live.serve(services)
    assert examine(services)["database"].line() == (
        "FAIL database: sqlite unreachable (OperationalError) — check database.url "
        "(LOYALTY_DATABASE__URL) and that the database is up")
    services.close()


# -- public URL ------------------------------------------------------------------------------
def test_public_url_unreachable_or_not_this_service(
        tmp_path: Path, database_url: str, live: Live, clock: Clock,
        portal: FakeBitrix24Portal) -> None:
    services = build(tmp_path, database_url, live, clock)
    nobody = make_settings(tmp_path, database_url, server={"public_url": "http://127.0.0.1:9"})
    assert examine(services, nobody)["public url"].line() == (
        "FAIL public url: GET http://127.0.0.1:9/healthz: ConnectionError — start the service "
        "(loyalty-connector serve) and make sure server.public_url leads to it (DNS, TLS, "
        "reverse proxy)")
    elsewhere = make_settings(tmp_path, database_url, server={"public_url": portal.url})
    assert examine(services, elsewhere)["public url"].line() == (
        f"FAIL public url: GET {portal.url}/healthz answered HTTP 404, not this service's "
        "/healthz — point server.public_url (or the proxy behind it) at the service "
        "(127.0.0.1:8080)")
    services.close()


def test_loopback_public_url_with_a_cloud_crm(tmp_path: Path, database_url: str, live: Live,
                                              clock: Clock) -> None:
    services = build(tmp_path, database_url, live, clock)
    cloud = make_settings(tmp_path, database_url, server={"public_url": live.url}, bitrix24={
        "enabled": True, "webhook_url": "https://acme.bitrix24.ru/rest/1/secretvalue/"})
    assert doctor.public_url(cloud).line() == (
        f"WARN public url: {live.url}/healthz answers here, but acme.bitrix24.ru cannot reach "
        "127.0.0.1 — set server.public_url to the HTTPS address the CRM can reach")
    services.close()


# -- inbox -----------------------------------------------------------------------------------
def put(services: Services, n: int) -> int:
    return services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key=f"e:{n}",
                              body=b"event=ONCRMDEALUPDATE").id


def test_dead_items_and_an_inbox_nobody_drains(tmp_path: Path, database_url: str, live: Live,
                                               clock: Clock) -> None:
    services = build(tmp_path, database_url, live, clock, inbox={"max_attempts": 1})
    for n in range(2):
        item = put(services, n)
        services.inbox.claim()
        services.inbox.fail(item, "crm.deal.get: timed out")
    put(services, 3)
    clock.advance(minutes=3)
    checks = examine(services)
    assert checks["inbox"].line() == "ok   inbox: 1 pending, oldest 3 min old, 0 processing"
    assert checks["dead letters"].line() == (
        "WARN dead letters: 2 event(s) gave up after 1 attempt(s) — see why: loyalty-connector "
        "inbox list --status dead; fix the cause, then: loyalty-connector inbox retry "
        "--all-dead")
    clock.advance(minutes=7)
    assert examine(services)["inbox"].line() == (
        "WARN inbox: 1 pending, oldest 10 min old, 0 processing; due for 10 min and not taken "
        "— no worker is draining it: make sure `loyalty-connector serve` (or `worker`) runs, "
        "and read its log")
    services.close()


def test_events_that_keep_failing(tmp_path: Path, database_url: str, live: Live,
                                  clock: Clock) -> None:
    services = build(tmp_path, database_url, live, clock,
                     inbox={"retry_base_seconds": 3000, "retry_max_seconds": 3600})
    item = put(services, 1)
    clock.advance(minutes=59)
    services.inbox.claim()
    services.inbox.fail(item, "HTTP 503")  # next try in 25 to 50 min
    clock.advance(minutes=2)
    assert examine(services)["inbox"].line() == (
        "WARN inbox: 1 pending, oldest 1 h old, 0 processing; events keep failing or wait for "
        "the CRM — see why: loyalty-connector inbox list --status pending")
    services.close()


# -- the command -----------------------------------------------------------------------------
def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n{body}', encoding="utf-8")
    return path


def test_command_lines_json_and_exit_codes(tmp_path: Path, live: Live,
                                           portal: FakeBitrix24Portal,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOYALTY_SECRET_KEY", raising=False)  # the key file beside SQLite
    config = write_config(tmp_path, '[program]\nlanguage = "en"\n'
                                    f'[server]\npublic_url = "{live.url}"\n')
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "db", "upgrade"]).exit_code == 0
    live.serve(Services.build(make_settings(tmp_path, f"sqlite:///{tmp_path}/cli.db")))
    warned = runner.invoke(cli, ["--config", str(config), "doctor"])
    assert warned.exit_code == 0, warned.output  # warnings only
    lines = warned.stdout.splitlines()
    assert lines[0] == (f"WARN config: {config}; no CRM enabled; admin API off — set "
                        "bitrix24.enabled or amocrm.enabled = true with its credentials (see "
                        "config.example.toml)")
    assert lines[1].startswith("ok   database: at revision ")
    assert lines[2] == f"ok   secret key: key file {tmp_path}/cli.db.key, 1 key(s)"
    assert lines[3] == "ok   stored tokens: none stored yet"
    assert lines[-1] == "8 check(s): 0 failed, 1 warning(s)"

    config.write_text(config.read_text() + "[bitrix24]\nenabled = true\nmax_retries = 0\n"
                      f'webhook_url = "{portal.url}/rest/1/{B24_SECRET}/"\n', encoding="utf-8")
    portal.down()
    result = runner.invoke(cli, ["--config", str(config), "doctor", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["status"] == "fail"
    assert [(c["name"], c["status"]) for c in report["checks"]] == [
        ("config", "ok"), ("database", "ok"), ("secret key", "ok"), ("stored tokens", "ok"),
        ("bitrix24", "fail"), ("public url", "ok"),
        ("inbox", "ok"), ("dead letters", "ok"), ("write-back refusals", "ok")]
    assert B24_SECRET not in result.output


@pytest.mark.parametrize(("language", "first", "last"), [
    ("ru", "WARN конфигурация: {config}; ни одна CRM не включена; API администратора выключен "
           "— задайте bitrix24.enabled или amocrm.enabled = true и доступы к CRM (см. "
           "config.example.toml)",
     "проверок: 8; ошибок: 0, предупреждений: 1"),
    ("uk", "WARN конфігурація: {config}; жодну CRM не ввімкнено; API адміністратора вимкнено "
           "— задайте bitrix24.enabled або amocrm.enabled = true і доступи до CRM (див. "
           "config.example.toml)",
     "перевірок: 8; помилок: 0, попереджень: 1"),
])
def test_command_lines_in_russian_and_ukrainian_json_in_english(
        tmp_path: Path, live: Live, monkeypatch: pytest.MonkeyPatch, language: str,
        first: str, last: str) -> None:
    monkeypatch.delenv("LOYALTY_SECRET_KEY", raising=False)
    config = write_config(tmp_path, f'[program]\nlanguage = "{language}"\n'
                                    f'[server]\npublic_url = "{live.url}"\n')
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "db", "upgrade"]).exit_code == 0
    live.serve(Services.build(make_settings(tmp_path, f"sqlite:///{tmp_path}/cli.db")))
    lines = runner.invoke(cli, ["--config", str(config), "doctor"]).stdout.splitlines()
    assert lines[0] == first.format(config=config)
    assert lines[-1] == last
    assert lines[3] == {"ru": "ok   сохранённые токены: пока ничего не сохранено",
                        "uk": "ok   збережені токени: поки нічого не збережено"}[language]
    report = json.loads(runner.invoke(cli, ["--config", str(config), "doctor", "--json"]).stdout)
    assert report["checks"][0] == {
        "name": "config", "status": "warn",
        "detail": f"{config}; no CRM enabled; admin API off",
        "fix": "set bitrix24.enabled or amocrm.enabled = true with its credentials (see "
               "config.example.toml)"}


def test_command_on_an_unusable_database_url(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[database]\nurl = "nosuchdb://user:hunter2secret@db/x"\n'
                    '[server]\npublic_url = "http://127.0.0.1:9"\n'
                    '[program]\nlanguage = "en"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "doctor"])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1] == ("FAIL database: database.url cannot be used "
                                             "(NoSuchModuleError) — fix database.url "
                                             "(LOYALTY_DATABASE__URL)")
    assert "hunter2secret" not in result.output


def test_command_on_an_app_without_its_portal_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[bitrix24]\nenabled = true\nclient_id = "local.1"\n'
                                    'client_secret = "app-secret-value"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"])
    assert result.exit_code == 2
    assert result.stdout.splitlines()[0] == (
        "FAIL config: bitrix24: portal is required with an app setup (e.g. "
        "acme.bitrix24.ru) — fix it in the config file or the LOYALTY_* environment (see "
        "config.example.toml)")
    assert "app-secret-value" not in result.stdout


def test_command_on_a_bad_config_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[program]\nredeem_share = 1.5\n")
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"])
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        "FAIL config: program.redeem_share: Input should be less than or equal to 1 (got 1.5) "
        "— fix it in the config file or the LOYALTY_* environment (see config.example.toml)",
        "1 check(s): 1 failed, 0 warning(s)"]


def test_claims_left_after_their_lease(tmp_path: Path, database_url: str, live: Live,
                                       clock: Clock) -> None:
    services = build(tmp_path, database_url, live, clock, inbox={"lease_seconds": 60})
    put(services, 1)
    services.inbox.claim()  # and the worker holding it went away
    assert "inbox claims" not in examine(services)
    clock.advance(seconds=61)
    assert examine(services)["inbox claims"].line() == (
        "WARN inbox claims: 1 item(s) still claimed after their lease ended — a worker "
        "stopped (killed, or lost its database) while processing them; any running worker "
        "takes them again now: make sure one runs")
    services.close()


def test_contacts_refused_for_good_by_the_crm(tmp_path: Path, database_url: str, live: Live,
                                               clock: Clock) -> None:
    from connector import mirror
    from connector.ledger.views import AccountRef

    services = build(tmp_path, database_url, live, clock)
    assert examine(services)["write-back refusals"].line() == (
        "ok   write-back refusals: no contact refused by a CRM")
    for contact in ("7", "8"):
        account_id = services.ledger.open_account(AccountRef("bitrix24", "acme", contact))
        mirror.refuse(services.db, mirror.Dirty(account_id, contact, 1, {}),
                      "Contact is not found", clock.advance(minutes=1))
    assert examine(services)["write-back refusals"].line() == (
        "WARN write-back refusals: 2 contact(s) refused for good by the CRM and no longer "
        "written to (deleted, or not in the CRM); latest bitrix24 contact 8: Contact is not "
        "found — see: loyalty-connector account refused; a contact that changes in the CRM "
        "is written again, or after restoring one: loyalty-connector account "
        "retry-writeback CRM PORTAL CONTACT_ID")
    services.close()


# -- the CRM budget ---------------------------------------------------------------------------
def test_crm_budget_per_process_is_a_warning_and_redis_is_pinged(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"backend": "process"})
    services = fresh_services(settings)
    try:
        checks = examine(services)
        assert checks["crm budget"].status == "warn"
        assert "limits.backend" in (checks["crm budget"].fix or "")
        down = make_settings(tmp_path, limits={
            "backend": "redis", "redis_url": "redis://:hunter2-secret@127.0.0.1:1/0"})
        checks = examine(services, down)
        assert checks["crm budget"].line().startswith("FAIL crm budget: Redis unreachable")
        assert "hunter2" not in json.dumps([c.as_json() for c in checks.values()])
    finally:
        services.close()
    services = fresh_services(make_settings(tmp_path))
    try:
        assert "crm budget" not in examine(services)  # the database check covers it
    finally:
        services.close()


# -- the secret key ----------------------------------------------------------------------
def test_doctor_checks_the_key_its_file_and_the_stored_tokens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = file_settings(tmp_path, monkeypatch)
    path = tmp_path / "loyalty.db.key"
    services = Services.build(settings)
    assert secret_key(services.sealer).line() == (
        f"WARN secret key: no key file yet ({path}) — it is made on first start: run "
        "loyalty-connector db upgrade (or serve)")
    services.migrate()
    assert secret_key(services.sealer).line() == f"ok   secret key: key file {path}, 1 key(s)"
    assert stored_tokens(services).line() == "ok   stored tokens: none stored yet"
    services.bitrix24_credentials.save(some_tokens())
    assert stored_tokens(services).line() == (
        "ok   stored tokens: 1 CRM credential(s), sealed, open with the current key")
    path.chmod(0o644)
    assert too_open(path) == "0644"
    assert secret_key(services.sealer).line() == (
        f"WARN secret key: key file {path}, 1 key(s); mode 0644: other users of this host may "
        f"read it — run: chmod 600 {path}")
    services.close()

    path.write_text(Fernet.generate_key().decode() + "\n")  # the wrong key restored
    other = Services.build(settings)
    assert stored_tokens(other).line() == (
        f"FAIL stored tokens: 1 of 1 CRM credential(s) do not open with key file {path}: "
        "bitrix24 — give the key they were sealed with (LOYALTY_SECRET_KEY, or the "
        "key file from the backup), or authorize the integration again")
    path.unlink()
    assert secret_key(other.sealer).status == "warn"  # SQLite: would be made again...
    assert stored_tokens(other).status == "fail"      # ...but the tokens need the old one
    path.write_text("garbage\n")
    assert secret_key(other.sealer).line() == (
        f"FAIL secret key: key file {path}: key 1 of 1 is not a Fernet key (44 characters of "
        "url-safe base64; make one: loyalty-connector secrets new-key) — restore the key file "
        "from the backup of this database, or set LOYALTY_SECRET_KEY")
    other.close()


def test_doctor_on_postgresql_without_a_key(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOYALTY_SECRET_KEY", raising=False)
    config = tmp_path / "pg.toml"
    config.write_text(f'[database]\nurl = "{PG_URL}"\n[server]\n'
                      'public_url = "http://127.0.0.1:9"\n[program]\nlanguage = "en"\n',
                      encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1] == (
        "FAIL secret key: secret_key: postgresql needs the key that encrypts stored CRM "
        "tokens: set LOYALTY_SECRET_KEY (make one: loyalty-connector secrets new-key) or "
        "secret_key_file — the service refuses to start without it (README, Security)")
