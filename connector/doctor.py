"""`doctor`: one check per thing the connector needs, each saying what to do when it fails.

Checks only read: they install, migrate and change nothing, except what any CRM call may do on
its own (an expired OAuth access token is renewed, as on every call) and the fresh OAuth state
stored when amoCRM needs authorizing and the doctor prints the link that starts it. CRM calls
go through the CRM clients, with retries off and a short timeout: the doctor reports what it
sees now.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from connector import mirror
from connector.amocrm.authorization import authorize_hint, needs_authorization
from connector.amocrm.install import AmoCRMInstaller, hook_events
from connector.bitrix24.install import CODES, EVENTS, ROBOTS, Bitrix24Installer
from connector.bitrix24.portal import url_domain
from connector.bitrix24.tab import PLACEMENTS
from connector.config import AmoCRMSettings, Bitrix24Settings, LimitsSettings, Settings
from connector.crm.amocrm import AmoCRMClient
from connector.crm.bitrix24 import Bitrix24Client
from connector.crm.credentials import Tokens
from connector.db import Database
from connector.errors import (
    ConfigError,
    CRMAuthError,
    CRMError,
    FatalCRMError,
    RetriableCRMError,
    SealError,
)
from connector.inbox import Inbox
from connector.reports import age_text
from connector.sealing import Sealer
from connector.sealing.keys import ENV as KEY_ENV
from connector.sealing.keys import too_open
from connector.sealing.rotation import unreadable
from connector.services import Services

Status = Literal["ok", "warn", "fail"]
CRMSettings = TypeVar("CRMSettings", Bitrix24Settings, AmoCRMSettings)
CLI = "loyalty-connector"
CALL_TIMEOUT_S = 10.0
HEALTHZ_TIMEOUT_S = 5.0
# A due item still pending this long after it became due: no worker is draining the inbox.
STALLED = timedelta(minutes=5)
# Events still pending this long after they arrived keep failing (or wait on revoked tokens).
STALE = timedelta(hours=1)
TOKEN_WARNING = timedelta(days=14)
UNREACHABLE = {"CONNECTION", "TIMEOUT"}
B24_INSTALL = f"run: {CLI} install bitrix24"
AMO_INSTALL = f"run: {CLI} install amocrm"
CALLBACK = "/amocrm/oauth/callback"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        label = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}[self.status]
        return f"{label:<4} {self.name}: {self.detail}" + (f" — {self.fix}" if self.fix else "")


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, "warn", detail, fix)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def worst(checks: list[Check]) -> Status:
    statuses = {check.status for check in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


# -- the whole run ---------------------------------------------------------------------------
def run(settings: Settings, build: Callable[[], Services], *, config_file: Path | None,
        session: requests.Session | None = None) -> Iterator[Check]:
    """Every check in order, secrets blanked out of whatever a CRM or library said."""
    secrets = secret_values(settings)
    for check in _run(settings, build, config_file, session):
        yield redact(check, secrets)


def _run(settings: Settings, build: Callable[[], Services], config_file: Path | None,
         session: requests.Session | None) -> Iterator[Check]:
    yield config(settings, config_file)
    try:
        services = build()
    except SQLAlchemyError as exc:  # a malformed database.url, a driver that is missing
        yield failed("database", f"database.url cannot be used ({type(exc).__name__})",
                     "fix database.url (LOYALTY_DATABASE__URL)")
        yield public_url(settings, session=session)
        return
    except ConfigError as exc:  # PostgreSQL without a key: the service would not start
        yield from (failed("secret key", problem, "the service refuses to start without it "
                                                  "(README, Security)") for problem in exc.problems)
        yield public_url(settings, session=session)
        return
    db_check = database(services.db)
    yield db_check
    usable = db_check.status == "ok"
    yield secret_key(services.sealer)
    if usable:
        yield stored_tokens(services)
    now = services.inbox.clock()
    if settings.bitrix24.enabled:
        yield from _guarded("bitrix24", bitrix24(services, database_usable=usable))
    if settings.amocrm.enabled:
        yield from _guarded("amocrm", amocrm(services, database_usable=usable, now=now))
    yield public_url(settings, session=session)
    if settings.limits.backend != "database":  # the database check covers its own
        yield crm_budget(settings.limits)
    if settings.card.enabled:
        yield card_pages(settings)
    if usable:
        yield from _guarded("inbox", inbox(services.inbox, now))
        yield from _guarded("write-back", writeback(services.db))


def _guarded(name: str, checks: Iterator[Check]) -> Iterator[Check]:
    # A doctor that stops on the first surprise tells nothing about the rest.
    try:
        yield from checks
    except (CRMError, SQLAlchemyError, requests.RequestException, ValueError) as exc:
        yield failed(f"{name} check", f"stopped: {type(exc).__name__}: {exc}",
                     "run doctor again; if it persists, read the service log")


# -- configuration and database ------------------------------------------------------------
def config(settings: Settings, config_file: Path | None) -> Check:
    b24, amo = settings.bitrix24, settings.amocrm
    crms = []
    if b24.enabled:
        crms.append("bitrix24 (" + ("inbound webhook" if b24.webhook_url else "app") + ")")
    if amo.enabled:
        crms.append("amocrm (" + ("long-lived token" if amo.long_lived_token else "OAuth") + ")")
    source = str(config_file) if config_file else "defaults and LOYALTY_* environment"
    api = "admin API " + ("on" if settings.server.admin_token else "off")
    if not crms:
        return warn("config", f"{source}; no CRM enabled; {api}",
                    "set bitrix24.enabled or amocrm.enabled = true with its credentials "
                    "(see config.example.toml)")
    return ok("config", f"{source}; {', '.join(crms)}; {api}")


def config_errors(problems: list[str]) -> list[Check]:
    return [failed("config", problem, "fix it in the config file or the LOYALTY_* "
                   "environment (see config.example.toml)") for problem in problems]


def database(db: Database) -> Check:
    missing = db.missing_file()
    if missing is not None:  # looked at before connecting, which would make it empty
        return failed("database", f"no database at {missing}",
                      f"run: {CLI} db upgrade (or serve); or check database.url / --config")
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = db.current_revision()
    except SQLAlchemyError as exc:
        return failed("database", f"{db.dialect} unreachable ({type(exc).__name__})",
                      "check database.url (LOYALTY_DATABASE__URL) and that the database is up")
    head = db.head_revision()
    if current != head:
        return failed("database", f"at revision {current or 'nothing'}, head is {head}",
                      f"run: {CLI} db upgrade")
    return ok("database", f"at revision {head} (head), {db.dialect}")


# -- the secret key --------------------------------------------------------------------------
def secret_key(sealer: Sealer) -> Check:
    """Where the key sealing stored tokens comes from, and whether it is safe there."""
    source = sealer.source
    path = None if source.from_env else source.path
    if path is not None and not path.exists() and source.may_create:
        return warn("secret key", f"no key file yet ({path})",
                    f"it is made on first start: run {CLI} db upgrade (or serve)")
    try:
        keys = sealer.keys
    except SealError as exc:
        return failed("secret key", str(exc), "restore the key file from the backup of this "
                                              f"database, or set {KEY_ENV}")
    detail = f"{source.describe()}, {len(keys)} key(s)"
    if path is not None:
        mode = too_open(path)
        if mode is not None:
            return warn("secret key", f"{detail}; mode {mode}: other users of this host may "
                                      "read it", f"run: chmod 600 {path}")
    return ok("secret key", detail)


def stored_tokens(services: Services) -> Check:
    rows, bad = unreadable(services.db, services.sealer)
    if bad:
        return failed("stored tokens", f"{len(bad)} of {rows} CRM credential(s) do not open "
                                       f"with {services.sealer.describe()}: {', '.join(bad)}",
                      f"give the key they were sealed with ({KEY_ENV}, or the key file from "
                      "the backup), or authorize the integration again")
    return ok("stored tokens", f"{rows} CRM credential(s), sealed, open with the current key"
              if rows else "none stored yet")


# -- Bitrix24 --------------------------------------------------------------------------------
def bitrix24(services: Services, *, database_usable: bool) -> Iterator[Check]:
    settings = services.settings.bitrix24
    client = Bitrix24Client(quick(settings), credentials=services.bitrix24_credentials)
    installer = Bitrix24Installer(services, client)
    webhook = installer.webhook_mode
    reinstall = ("reinstall the app in Bitrix24: its ONAPPINSTALL brings new tokens to "
                 f"{installer.events_url}")
    if not webhook:
        if not database_usable:
            yield warn("bitrix24", "not checked: the app's tokens are kept in the database",
                       "fix the database first")
            return
        state = services.bitrix24_credentials.status()
        if state is None:
            yield failed("bitrix24", "the app is not installed yet (no ONAPPINSTALL received)",
                         f"install the local app in Bitrix24 with its handler at "
                         f"{installer.events_url}")
            return
        if state[0] == "revoked":
            yield failed("bitrix24", f"app credentials revoked ({state[1]})", reinstall)
            return
        yield _bound(settings, services.bitrix24_credentials.load(), reinstall)
    try:
        fields = _userfields(client)
    except CRMError as exc:
        yield _bitrix24_failure(exc, settings, webhook=webhook, reinstall=reinstall)
        return
    yield ok("bitrix24", f"{settings.portal_key} answers, "
                         f"{'inbound webhook' if webhook else 'app token'} accepted")
    missing = [name for name in settings.fields.values() if name not in fields]
    yield _missing("bitrix24 fields", "contact field(s)", missing, len(settings.fields),
                   B24_INSTALL)
    if webhook:
        yield _outgoing_webhook(services, database_usable)
        yield _trigger_codes(settings)
        return
    scopes = "give the app the crm and bizproc scopes and reinstall it"
    yield _attempt("bitrix24 events", lambda: _events(client, installer), refused=scopes)
    yield _attempt("bitrix24 robots", lambda: _robots(client), refused=scopes)
    yield _attempt("bitrix24 triggers", lambda: _triggers(client, settings), refused=scopes)
    yield _attempt("bitrix24 tab", lambda: _tab(client, installer),
                   refused="give the app the placement scope and reinstall it")
    tokens = services.bitrix24_credentials.load()
    if tokens is not None and tokens.expires_at is not None:
        yield ok("bitrix24 token", f"access token valid until {_when(tokens.expires_at)}, "
                                   "renewed on use (the refresh token lapses after 180 days "
                                   "unused)")


def _bound(settings: Bitrix24Settings, tokens: Tokens | None, reinstall: str) -> Check:
    """The stored app credentials belong to the configured portal: an install accepted
    before the connector was bound to its portal may have named another endpoint."""
    portal = settings.portal_key
    stored = tokens.endpoint if tokens else None
    if stored and url_domain(stored) != portal:
        return failed("bitrix24 binding", f"the stored app credentials name the endpoint "
                                          f"{stored[:100]!r}, not the configured portal "
                                          f"{portal} (a forged or foreign install?)",
                      f"{reinstall}; calls go only to {settings.rest_url} meanwhile")
    if tokens and tokens.member_id and settings.member_id and \
            tokens.member_id != settings.member_id:
        return failed("bitrix24 binding", "the stored app credentials carry another "
                                          "member_id than bitrix24.member_id", reinstall)
    return ok("bitrix24 binding", f"app credentials bound to {portal}; installs and events "
                                  "from other domains are refused")


def quick(settings: CRMSettings) -> CRMSettings:
    return settings.model_copy(update={
        "max_retries": 0, "timeout_seconds": min(settings.timeout_seconds, CALL_TIMEOUT_S)})


def _userfields(client: Bitrix24Client) -> set[str]:
    return {str(item.get("FIELD_NAME")) for item in client.pages("crm.contact.userfield.list")}


def _bitrix24_failure(exc: CRMError, settings: Bitrix24Settings, *, webhook: bool,
                      reinstall: str) -> Check:
    if isinstance(exc, CRMAuthError):
        if webhook:
            return failed("bitrix24", f"inbound webhook rejected ({exc.code or exc.detail})",
                          "create an inbound webhook with the crm and bizproc scopes and set "
                          "LOYALTY_BITRIX24__WEBHOOK_URL")
        return failed("bitrix24", f"app token rejected ({exc.code or exc.detail})", reinstall)
    if isinstance(exc, RetriableCRMError):
        if exc.code in UNREACHABLE:
            return failed("bitrix24", f"unreachable: {exc.detail}",
                          f"check that {settings.portal_key} is up and reachable from this "
                          "host (DNS, firewall, proxy)")
        return failed("bitrix24", f"not answering normally: {exc.detail}",
                      "try again in a minute; if it persists, check the portal's status")
    return failed("bitrix24", f"refused: {exc.detail}",
                  "give the webhook or app the crm and bizproc scopes")


def _outgoing_webhook(services: Services, database_usable: bool) -> Check:
    """With an inbound webhook the API cannot list the outgoing one; what can be checked is
    that its token is known, without which every event is refused."""
    known = services.settings.bitrix24.application_token is not None or (
        database_usable and services.bitrix24_credentials.application_token() is not None)
    if not known:
        return failed("bitrix24 events", "no application token: every event is refused (401)",
                      "copy the outgoing webhook's application token into "
                      "LOYALTY_BITRIX24__APPLICATION_TOKEN")
    return ok("bitrix24 events", "outgoing webhook token set (which events it sends is shown "
                                 "only in the portal)")


def _events(client: Bitrix24Client, installer: Bitrix24Installer) -> Check:
    bound = [(str(item.get("event", "")).upper(), str(item.get("handler", "")))
             for item in client.call("event.get", {}).result or []]
    missing = [event for event in EVENTS if (event, installer.events_url) not in bound]
    check = _missing("bitrix24 events", "event(s) unbound", missing, len(EVENTS),
                     B24_INSTALL)
    elsewhere = sorted({handler for event, handler in bound
                        if event in missing and handler.endswith("/bitrix24/events")})
    if elsewhere:
        return failed(check.name, f"{check.detail}; bound to {', '.join(elsewhere)} instead "
                                  "(server.public_url changed?)", B24_INSTALL)
    return check


def _robots(client: Bitrix24Client) -> Check:
    robots = set(client.call("bizproc.robot.list", {}).result or [])
    return _missing("bitrix24 robots", "robot(s) missing",
                    [code for code in ROBOTS if code not in robots], len(ROBOTS), B24_INSTALL)


def _triggers(client: Bitrix24Client, settings: Bitrix24Settings) -> Check:
    """A transition fires the app's trigger, or the portal trigger whose code is set."""
    triggers = {item.get("CODE") for item in
                client.call("crm.automation.trigger.list", {}).result or []}
    return _missing("bitrix24 triggers", "trigger(s) missing",
                    [code for code in CODES if code not in triggers
                     and code not in settings.triggers], len(CODES), B24_INSTALL)


def _trigger_codes(settings: Bitrix24Settings) -> Check:
    """With an inbound webhook a transition fires only the portal trigger whose code is
    configured; the API cannot list those triggers, so the configuration is what is read."""
    name = "bitrix24 triggers"
    missing = [code for code in CODES if code not in settings.triggers]
    fix = (f"add a \"Track incoming webhook\" trigger per transition in the portal and set "
           f"its code in [bitrix24.triggers.<transition>] ({B24_INSTALL} prints the steps)")
    if len(missing) == len(CODES):
        return failed(name, "no transition has a trigger code: no automation trigger ever "
                            "fires (mailings on loyalty events never start)", fix)
    if missing:
        return warn(name, f"{len(missing)} of {len(CODES)} transition(s) fire nothing: "
                          f"{', '.join(missing)}", fix)
    return ok(name, f"all {len(CODES)} transitions have a portal trigger code (that the "
                    "codes exist is shown only in the portal)")


def _tab(client: Bitrix24Client, installer: Bitrix24Installer) -> Check:
    bound = {(item.get("placement"), item.get("handler"))
             for item in client.call("placement.get", {}).result or []}
    missing = [code for code in PLACEMENTS if (code, installer.tab_url) not in bound]
    if missing:  # the program works without it: managers only miss the card tab
        return warn("bitrix24 tab", f"{len(missing)} of {len(PLACEMENTS)} card tab(s) not "
                                    f"registered at {installer.tab_url}: {', '.join(missing)}",
                    B24_INSTALL)
    return ok("bitrix24 tab", f"contact and deal cards open {installer.tab_url}")


def _attempt(name: str, check: Callable[[], Check], *, refused: str) -> Check:
    """One check whose CRM call may fail on its own (retries are off): say so on its line."""
    try:
        return check()
    except FatalCRMError as exc:
        return failed(name, f"refused: {exc.detail}", refused)
    except CRMError as exc:
        return failed(name, f"could not check: {exc.detail}",
                      "run doctor again in a minute; if it persists, read the service log")


def _missing(name: str, what: str, missing: list[str], total: int, fix: str) -> Check:
    if missing:
        return failed(name, f"{len(missing)} of {total} {what}: {', '.join(missing)}", fix)
    return ok(name, f"all {total} present")


# -- amoCRM ----------------------------------------------------------------------------------
def amocrm(services: Services, *, database_usable: bool, now: datetime) -> Iterator[Check]:
    settings = services.settings.amocrm
    client = AmoCRMClient(quick(settings), credentials=services.amocrm_credentials)
    installer = AmoCRMInstaller(services, client)
    oauth = settings.long_lived_token is None
    if oauth:
        if not database_usable:
            yield warn("amocrm", "not checked: the OAuth tokens are kept in the database",
                       "fix the database first")
            return
        yield _amocrm_redirect_uri(settings, services.settings.server.public_url)
        state = services.amocrm_credentials.status()
        if state is None:
            yield failed("amocrm", "not authorized yet", authorize_hint(services))
            return
        if state[0] == "revoked":
            yield failed("amocrm", f"credentials revoked ({state[1]})",
                         f"re-authorize: {authorize_hint(services)}")
            return
    try:
        account = client.request("GET", "/api/v4/account") or {}
    except CRMError as exc:
        if needs_authorization(services):  # amoCRM refused the refresh token just now
            yield failed("amocrm", f"credentials revoked ({exc.detail})",
                         f"re-authorize: {authorize_hint(services)}")
        else:
            yield _amocrm_failure(exc, settings, oauth=oauth,
                                  reauthorize=f"re-authorize: {authorize_hint(services)}"
                                  if oauth and isinstance(exc, CRMAuthError)
                                  and exc.status == 401 else "")
        return
    subdomain = str(account.get("subdomain") or "")
    if subdomain != settings.account_subdomain:
        yield failed("amocrm", f"the token is for account {subdomain}, but webhooks are "
                               f"expected from {settings.account_subdomain}",
                     "set amocrm.base_url (or amocrm.subdomain) to this account's")
        return
    yield ok("amocrm", f"account {subdomain} (id {account.get('id')}) answers, "
                       f"{'OAuth' if oauth else 'long-lived'} token accepted")
    rights = "install needs an account administrator's token"
    yield _attempt("amocrm fields", lambda: _amocrm_fields(settings, installer),
                   refused=rights)
    yield _attempt("amocrm webhook", lambda: _amocrm_webhook(
        client, installer, services.settings.server.public_url), refused=rights)
    yield _amocrm_token(services, now)


def _amocrm_failure(exc: CRMError, settings: AmoCRMSettings, *, oauth: bool,
                    reauthorize: str) -> Check:
    if isinstance(exc, CRMAuthError) and exc.status == 401:
        return failed("amocrm", "token rejected (401)", reauthorize if oauth else (
            "generate a new long-lived token (amoCRM: integration settings > Keys) and set "
            "LOYALTY_AMOCRM__LONG_LIVED_TOKEN"))
    if isinstance(exc, CRMAuthError) and exc.status == 402:
        return failed("amocrm", "payment required (402): the subscription has ended",
                      "renew the amoCRM subscription")
    if isinstance(exc, CRMAuthError):
        return failed("amocrm", exc.detail.removeprefix("amocrm GET /api/v4/account: "),
                      "contact amoCRM support, or allow this host's IP in the account")
    if isinstance(exc, RetriableCRMError) and exc.code in UNREACHABLE:
        return failed("amocrm", f"unreachable: {exc.detail}",
                      f"check amocrm.base_url ({settings.base_url}) and that this host can "
                      "reach it")
    return failed("amocrm", f"not answering normally: {exc.detail}",
                  "try again in a minute; if it persists, check amoCRM's status")


def _amocrm_redirect_uri(settings: AmoCRMSettings, public: str) -> Check:
    # amoCRM sends the code to the redirect URI registered with the integration; the
    # connector answers it at /amocrm/oauth/callback only.
    expected = f"{public.rstrip('/')}{CALLBACK}"
    if settings.redirect_uri != expected:
        return warn("amocrm redirect uri", f"{settings.redirect_uri} is not {expected}",
                    "unless a proxy maps it there, set amocrm.redirect_uri (and the "
                    "integration's redirect URI in amoCRM) to it")
    return ok("amocrm redirect uri", f"{expected}; only authorizations started by install "
                                     "or doctor are taken")


def _amocrm_fields(settings: AmoCRMSettings, installer: AmoCRMInstaller) -> Check:
    codes = installer.fields()
    return _missing("amocrm fields", "contact field(s)",
                    [code for code in settings.fields.values() if code not in codes],
                    len(settings.fields), AMO_INSTALL)


def _amocrm_webhook(client: AmoCRMClient, installer: AmoCRMInstaller, public: str) -> Check:
    install = AMO_INSTALL
    shown = f"{installer.destination.rsplit('/', 1)[0]}/<webhook_secret>"
    hooks = ((client.request("GET", "/api/v4/webhooks") or {}).get("_embedded") or {}
             ).get("webhooks") or []
    ours = next((hook for hook in hooks if hook.get("destination") == installer.destination),
                None)
    if ours is None:
        return failed("amocrm webhook", f"no account webhook to {shown}", install)
    if ours.get("disabled"):
        return failed("amocrm webhook", "amoCRM disabled the webhook (too many failed "
                                        "deliveries)", f"make sure {public} is reachable, "
                                                       f"then {install}")
    events = hook_events(installer.services.settings)
    missing = [event for event in events if event not in (ours.get("settings") or [])]
    if missing:
        return failed("amocrm webhook", f"not sent on {', '.join(missing)}", install)
    return ok("amocrm webhook", f"{len(events)} events -> {shown}")


def _amocrm_token(services: Services, now: datetime) -> Check:
    long_lived = services.settings.amocrm.long_lived_token
    if long_lived is None:
        tokens = services.amocrm_credentials.load()
        until = f" until {_when(tokens.expires_at)}" if tokens and tokens.expires_at else ""
        return ok("amocrm token", f"access token valid{until}, renewed on use (the refresh "
                                  "token lapses after 3 months unused)")
    expires = jwt_expiry(long_lived.get_secret_value())
    if expires is None:
        return ok("amocrm token", "long-lived token accepted (its expiry is not readable)")
    renew = ("generate a new long-lived token (amoCRM: integration settings > Keys) and set "
             "LOYALTY_AMOCRM__LONG_LIVED_TOKEN")
    if expires <= now:
        return failed("amocrm token", f"long-lived token expired {_when(expires)}", renew)
    if expires - now < TOKEN_WARNING:
        return warn("amocrm token", f"long-lived token expires {_when(expires)} "
                                    f"(in {age_text(expires - now)})", renew + " before then")
    return ok("amocrm token", f"long-lived token valid until {_when(expires)}")


def jwt_expiry(token: str) -> datetime | None:
    """amoCRM tokens are JWTs; `exp` says when one lapses (read, not verified)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return datetime.fromtimestamp(int(payload["exp"]), UTC)
    except (ValueError, KeyError, TypeError, OverflowError):
        return None


# -- the public URL --------------------------------------------------------------------------
def public_url(settings: Settings, *, session: requests.Session | None = None) -> Check:
    """GET {server.public_url}/healthz from here: what the CRMs post to must lead to us."""
    url = settings.server.public_url.rstrip("/") + "/healthz"
    start = "start the service (loyalty-connector serve) and make sure server.public_url " \
            "leads to it (DNS, TLS, reverse proxy)"
    # /healthz shows its checks only to the metrics or admin token: send one when set.
    token = settings.server.metrics_token or settings.server.admin_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        response = (session or requests.Session()).get(url, timeout=HEALTHZ_TIMEOUT_S,
                                                       headers=headers)
    except requests.exceptions.SSLError:
        return failed("public url", f"GET {url}: TLS certificate refused",
                      "install a valid certificate: the CRMs refuse invalid ones")
    except requests.RequestException as exc:
        return failed("public url", f"GET {url}: {type(exc).__name__}", start)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") not in ("ok", "unhealthy"):
        return failed("public url", f"GET {url} answered HTTP {response.status_code}, not "
                                    "this service's /healthz",
                      f"point server.public_url (or the proxy behind it) at the service "
                      f"({settings.server.host}:{settings.server.port})")
    if response.status_code != 200:
        checks = body.get("checks")
        problems = "; ".join(f"{key}: {value}" for key, value in checks.items()
                             if value != "ok") if isinstance(checks, dict) else \
            "details need server.metrics_token or server.admin_token"
        return warn("public url", f"reachable, but the service there is unhealthy ({problems})",
                    "see the lines above; if they are ok, the service behind public_url runs "
                    "with another configuration")
    host = urlsplit(url).hostname or ""
    remote = [crm for crm in _crm_hosts(settings) if not _local(crm)]
    if _local(host) and remote:
        return warn("public url", f"{url} answers here, but {remote[0]} cannot reach {host}",
                    "set server.public_url to the HTTPS address the CRM can reach")
    return ok("public url", f"GET {url} answered 200")


def card_pages(settings: Settings) -> Check:
    """Card page links go out in mailings: over plain HTTP anyone on the way could read
    them, and a link read is a page opened."""
    base = settings.server.public_url.rstrip("/") + "/card/<token>"
    if urlsplit(base).scheme != "https" and not _local(urlsplit(base).hostname or ""):
        return warn("card pages", f"links go out as {base}",
                    "set server.public_url to the service's https:// address")
    return ok("card pages", f"on: {base}")


def _crm_hosts(settings: Settings) -> list[str]:
    hosts = []
    if settings.bitrix24.enabled:
        hosts.append(urlsplit(f"//{settings.bitrix24.portal_key}").hostname or "")
    if settings.amocrm.enabled:
        hosts.append(urlsplit(settings.amocrm.base_url or "").hostname or "")
    return [host for host in hosts if host]


def _local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a DNS name: assume it resolves publicly
    return address.is_loopback or address.is_private or address.is_link_local


# -- the inbox -------------------------------------------------------------------------------
def inbox(box: Inbox, now: datetime) -> Iterator[Check]:
    depth = box.depth()
    received, due = box.oldest_pending()
    pending = depth["pending"]
    summary = f"{pending} pending"
    if received:
        summary += f", oldest {age_text(now - received)} old"
    summary += f", {depth['processing']} processing"
    if due is not None and now - due > STALLED:
        yield warn("inbox", f"{summary}; due for {age_text(now - due)} and not taken",
                   "no worker is draining it: make sure `loyalty-connector serve` (or "
                   "`worker`) runs, and read its log")
    elif received is not None and now - received > STALE:
        yield warn("inbox", f"{summary}; events keep failing or wait for the CRM",
                   f"see why: {CLI} inbox list --status pending")
    else:
        yield ok("inbox", summary)
    lapsed = box.lapsed_claims(now)
    if lapsed:
        yield warn("inbox claims", f"{lapsed} item(s) still claimed after their lease ended",
                   "a worker stopped (killed, or lost its database) while processing them; "
                   "any running worker takes them again now: make sure one runs")
    dead = depth["dead"]
    if dead:
        yield warn("dead letters", f"{dead} event(s) gave up after "
                                   f"{box.settings.max_attempts} attempt(s)",
                   f"see why: {CLI} inbox list --status dead; fix the cause, then: "
                   f"{CLI} inbox retry --all-dead")
    else:
        yield ok("dead letters", "none")


# -- write-back ------------------------------------------------------------------------------
def writeback(db: Database) -> Iterator[Check]:
    refused = mirror.count_refused(db)
    if not refused:
        yield ok("write-back refusals", "no contact refused by a CRM")
        return
    [latest] = mirror.refusals(db, limit=1)
    yield warn("write-back refusals",
               f"{refused} contact(s) refused for good by the CRM and no longer written to "
               f"(deleted, or not in the CRM); latest {latest.crm} contact "
               f"{latest.contact_id}: {latest.error}",
               f"see: {CLI} account refused; a contact that changes in the CRM is written "
               f"again, or after restoring one: {CLI} account retry-writeback CRM PORTAL "
               "CONTACT_ID")


# -- secrets and formatting ------------------------------------------------------------------
def crm_budget(limits: LimitsSettings) -> Check:
    """Where the CRM request budget every process shares lives (database: see there)."""
    if limits.backend == "process":
        return warn("crm budget", "each process keeps its own CRM request budget",
                    "with more than one process (web, worker, scheduler, a CLI sync) set "
                    "limits.backend = \"database\" or \"redis\", or together they pass the "
                    "CRM's limit")
    import redis

    assert limits.redis_url is not None  # the settings' validator saw to it
    try:
        client = redis.Redis.from_url(limits.redis_url.get_secret_value(),
                                      socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except (redis.RedisError, ValueError) as exc:
        return failed("crm budget", f"Redis unreachable ({type(exc).__name__})",
                      "check limits.redis_url (LOYALTY_LIMITS__REDIS_URL) and that Redis is up")
    return ok("crm budget", "shared in Redis, which answers")


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret, longest first, so no message can print one."""
    values: list[str] = []
    for secret in (settings.secret_key, settings.server.admin_token,
                   settings.server.metrics_token,
                   settings.bitrix24.client_secret,
                   settings.bitrix24.application_token, settings.amocrm.client_secret,
                   settings.amocrm.long_lived_token, settings.amocrm.webhook_secret,
                   settings.bitrix24.webhook_url, settings.bitrix24.actions_secret,
                   settings.limits.redis_url, settings.card.secret):
        if secret is not None:
            values.append(secret.get_secret_value())
    if settings.secret_key is not None:  # each of several keys alone, too
        values += settings.secret_key.get_secret_value().replace(",", " ").split()
    if settings.bitrix24.webhook_url is not None:
        # https://PORTAL/rest/USER_ID/SECRET/: the secret alone must not show either.
        path = urlsplit(settings.bitrix24.webhook_url.get_secret_value()).path
        values += [part for part in path.split("/") if part and part != "rest"
                   and not part.isdigit()]
    try:
        password = make_url(settings.database.url).password
    except (SQLAlchemyError, ValueError):
        password = None
    if password:
        values.append(str(password))
    return sorted({value for value in values if len(value) >= 4}, key=len, reverse=True)


def redact(check: Check, secrets: list[str]) -> Check:
    def clean(value: str) -> str:
        for secret in secrets:
            value = value.replace(secret, "***")
        return value

    return Check(check.name, check.status, clean(check.detail),
                 clean(check.fix) if check.fix else None)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
