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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from connector import mirror
from connector.amocrm.authorization import authorization_url, needs_authorization
from connector.amocrm.install import AmoCRMInstaller, hook_events
from connector.bitrix24.install import CODES, EVENTS, ROBOTS, Bitrix24Installer
from connector.bitrix24.portal import url_domain
from connector.bitrix24.tab import PLACEMENTS
from connector.config import AmoCRMSettings, Bitrix24Settings, LimitsSettings, Settings
from connector.crm.amocrm import AmoCRMClient
from connector.crm.bitrix24 import Bitrix24Client
from connector.crm.credentials import Tokens
from connector.crm.oauth_states import LIFETIME
from connector.db import Database
from connector.errors import (
    ConfigError,
    CRMAuthError,
    CRMError,
    FatalCRMError,
    RetriableCRMError,
    SealError,
)
from connector.i18n import N_, Message, Translator, render
from connector.inbox import Inbox
from connector.sealing import Sealer
from connector.sealing.keys import ENV as KEY_ENV
from connector.sealing.keys import KeySource, too_open
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
B24_INSTALL = N_("run: %(command)s", command=CLI + " install bitrix24")
AMO_INSTALL = N_("run: %(command)s", command=CLI + " install amocrm")
CALLBACK = "/amocrm/oauth/callback"
# Every check's name, marked for the catalogue: `line()` shows it in the program's language,
# `as_json()` keeps the English one, which scripts match on.
NAMES = (N_("config"), N_("database"), N_("secret key"), N_("stored tokens"), N_("bitrix24"),
         N_("bitrix24 binding"), N_("bitrix24 fields"), N_("bitrix24 events"),
         N_("bitrix24 robots"), N_("bitrix24 triggers"), N_("bitrix24 tab"),
         N_("bitrix24 token"), N_("bitrix24 check"), N_("amocrm"), N_("amocrm redirect uri"),
         N_("amocrm fields"), N_("amocrm webhook"), N_("amocrm token"), N_("amocrm check"),
         N_("public url"), N_("crm budget"), N_("card pages"), N_("inbox"),
         N_("inbox claims"), N_("inbox check"), N_("dead letters"), N_("write-back refusals"),
         N_("write-back check"))
Text = Message | str  # a marked message, or words a CRM or a library said (shown as they are)


@dataclass(frozen=True)
class Check:
    """`detail` and `fix` are the English words (JSON, logs); `texts` the same as marked
    messages, which `line()` shows in the program's language."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    texts: tuple[Text, Text | None] | None = field(default=None, compare=False, repr=False)

    def as_json(self) -> dict[str, Any]:
        """Language-neutral: the English name, detail and fix, whatever program.language."""
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "fix": self.fix}

    def line(self, t: Translator | None = None) -> str:
        """One line for a terminal, in `t`'s language (English without one)."""
        label = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}[self.status]
        detail, fix = self.texts or (self.detail, self.fix)
        name = t._(self.name) if t is not None else self.name
        return f"{label:<4} {name}: {render(detail, t)}" + (
            f" — {render(fix, t)}" if fix else "")

    @property
    def detail_text(self) -> Text:
        return self.texts[0] if self.texts else self.detail


def _check(name: str, status: Status, detail: Text, fix: Text | None) -> Check:
    return Check(name, status, str(detail), None if fix is None else str(fix), (detail, fix))


def ok(name: str, detail: Text) -> Check:
    return _check(name, "ok", detail, None)


def warn(name: str, detail: Text, fix: Text) -> Check:
    return _check(name, "warn", detail, fix)


def failed(name: str, detail: Text, fix: Text) -> Check:
    return _check(name, "fail", detail, fix)


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
        yield failed("database", N_("database.url cannot be used (%(error)s)",
                                    error=type(exc).__name__),
                     N_("fix database.url (LOYALTY_DATABASE__URL)"))
        yield public_url(settings, session=session)
        return
    except ConfigError as exc:  # PostgreSQL without a key: the service would not start
        yield from (failed("secret key", problem, N_("the service refuses to start without it "
                                                     "(README, Security)"))
                    for problem in exc.problems)
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
        yield failed(f"{name} check", N_("stopped: %(error)s",
                                         error=type(exc).__name__ + ": " + str(exc)),
                     N_("run doctor again; if it persists, read the service log"))


# -- configuration and database ------------------------------------------------------------
def config(settings: Settings, config_file: Path | None) -> Check:
    b24, amo = settings.bitrix24, settings.amocrm
    crms: list[Message] = []
    if b24.enabled:
        crms.append(N_("bitrix24 (inbound webhook)") if b24.webhook_url else
                    N_("bitrix24 (app)"))
    if amo.enabled:
        crms.append(N_("amocrm (long-lived token)") if amo.long_lived_token else
                    N_("amocrm (OAuth)"))
    source: Text = str(config_file) if config_file else N_("defaults and LOYALTY_* environment")
    api = N_("admin API on") if settings.server.admin_token else N_("admin API off")
    if not crms:
        return warn("config", N_("%(source)s; no CRM enabled; %(api)s", source=source, api=api),
                    N_("set bitrix24.enabled or amocrm.enabled = true with its credentials "
                       "(see config.example.toml)"))
    if len(crms) == 1:
        return ok("config", N_("%(source)s; %(crm)s; %(api)s", source=source, crm=crms[0],
                               api=api))
    return ok("config", N_("%(source)s; %(crm)s, %(other)s; %(api)s", source=source,
                           crm=crms[0], other=crms[1], api=api))


def config_errors(problems: list[str]) -> list[Check]:
    return [failed("config", problem, N_("fix it in the config file or the LOYALTY_* "
                                         "environment (see config.example.toml)"))
            for problem in problems]


def database(db: Database) -> Check:
    missing = db.missing_file()
    if missing is not None:  # looked at before connecting, which would make it empty
        return failed("database", N_("no database at %(path)s", path=str(missing)),
                      N_("run: %(command)s (or serve); or check database.url / --config",
                         command=CLI + " db upgrade"))
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = db.current_revision()
    except SQLAlchemyError as exc:
        return failed("database", N_("%(dialect)s unreachable (%(error)s)", dialect=db.dialect,
                                     error=type(exc).__name__),
                      N_("check database.url (LOYALTY_DATABASE__URL) and that the database "
                         "is up"))
    head = db.head_revision()
    if current != head:
        return failed("database", N_("at revision %(current)s, head is %(head)s",
                                     current=current or N_("nothing"), head=str(head)),
                      N_("run: %(command)s", command=CLI + " db upgrade"))
    return ok("database", N_("at revision %(head)s (head), %(dialect)s", head=str(head),
                             dialect=db.dialect))


# -- the secret key --------------------------------------------------------------------------
def secret_key(sealer: Sealer) -> Check:
    """Where the key sealing stored tokens comes from, and whether it is safe there."""
    source = sealer.source
    path = None if source.from_env else source.path
    if path is not None and not path.exists() and source.may_create:
        return warn("secret key", N_("no key file yet (%(path)s)", path=str(path)),
                    N_("it is made on first start: run %(command)s (or serve)",
                       command=CLI + " db upgrade"))
    try:
        keys = sealer.keys
    except SealError as exc:
        return failed("secret key", str(exc), N_("restore the key file from the backup of "
                                                 "this database, or set %(env)s", env=KEY_ENV))
    detail = N_("%(source)s, %(count)s key(s)", source=_key_source(source), count=len(keys))
    if path is not None:
        mode = too_open(path)
        if mode is not None:
            return warn("secret key", N_("%(detail)s; mode %(mode)s: other users of this host "
                                         "may read it", detail=detail, mode=mode),
                        N_("run: %(command)s", command="chmod 600 " + str(path)))
    return ok("secret key", detail)


def _key_source(source: KeySource) -> Text:
    """KeySource.describe(), in words doctor can translate."""
    if source.from_env:
        return KEY_ENV
    if source.path is not None:
        return N_("key file %(path)s", path=str(source.path))
    return N_("a key held in memory (in-memory database)")


def stored_tokens(services: Services) -> Check:
    rows, bad = unreadable(services.db, services.sealer)
    if bad:
        return failed("stored tokens", N_("%(bad)s of %(rows)s CRM credential(s) do not open "
                                          "with %(key)s: %(names)s", bad=len(bad), rows=rows,
                                          key=_key_source(services.sealer.source),
                                          names=", ".join(bad)),
                      N_("give the key they were sealed with (%(env)s, or the key file from "
                         "the backup), or authorize the integration again", env=KEY_ENV))
    return ok("stored tokens", N_("%(rows)s CRM credential(s), sealed, open with the current "
                                  "key", rows=rows) if rows else N_("none stored yet"))


# -- Bitrix24 --------------------------------------------------------------------------------
def bitrix24(services: Services, *, database_usable: bool) -> Iterator[Check]:
    settings = services.settings.bitrix24
    client = Bitrix24Client(quick(settings), credentials=services.bitrix24_credentials)
    installer = Bitrix24Installer(services, client)
    webhook = installer.webhook_mode
    reinstall = N_("reinstall the app in Bitrix24: its ONAPPINSTALL brings new tokens to "
                   "%(url)s", url=installer.events_url)
    if not webhook:
        if not database_usable:
            yield warn("bitrix24", N_("not checked: the app's tokens are kept in the database"),
                       N_("fix the database first"))
            return
        state = services.bitrix24_credentials.status()
        if state is None:
            yield failed("bitrix24", N_("the app is not installed yet (no ONAPPINSTALL "
                                        "received)"),
                         N_("install the local app in Bitrix24 with its handler at %(url)s",
                            url=installer.events_url))
            return
        if state[0] == "revoked":
            yield failed("bitrix24", N_("app credentials revoked (%(reason)s)",
                                        reason=state[1]), reinstall)
            return
        yield _bound(settings, services.bitrix24_credentials.load(), reinstall)
    try:
        fields = _userfields(client)
    except CRMError as exc:
        yield _bitrix24_failure(exc, settings, webhook=webhook, reinstall=reinstall)
        return
    yield ok("bitrix24", N_("%(portal)s answers, inbound webhook accepted",
                            portal=settings.portal_key) if webhook else
             N_("%(portal)s answers, app token accepted", portal=settings.portal_key))
    missing = [name for name in settings.fields.values() if name not in fields]
    yield _missing("bitrix24 fields", N_("%(count)s of %(total)s contact field(s): %(names)s"),
                   missing, len(settings.fields), B24_INSTALL)
    if webhook:
        yield _outgoing_webhook(services, database_usable)
        yield _trigger_codes(settings)
        return
    scopes = N_("give the app the crm and bizproc scopes and reinstall it")
    yield _attempt("bitrix24 events", lambda: _events(client, installer), refused=scopes)
    yield _attempt("bitrix24 robots", lambda: _robots(client), refused=scopes)
    yield _attempt("bitrix24 triggers", lambda: _triggers(client, settings), refused=scopes)
    yield _attempt("bitrix24 tab", lambda: _tab(client, installer),
                   refused=N_("give the app the placement scope and reinstall it"))
    tokens = services.bitrix24_credentials.load()
    if tokens is not None and tokens.expires_at is not None:
        yield ok("bitrix24 token", N_("access token valid until %(when)s, renewed on use (the "
                                      "refresh token lapses after 180 days unused)",
                                      when=_when(tokens.expires_at)))


def _bound(settings: Bitrix24Settings, tokens: Tokens | None, reinstall: Message) -> Check:
    """The stored app credentials belong to the configured portal: an install accepted
    before the connector was bound to its portal may have named another endpoint."""
    portal = settings.portal_key
    stored = tokens.endpoint if tokens else None
    if stored and url_domain(stored) != portal:
        return failed("bitrix24 binding", N_("the stored app credentials name the endpoint "
                                             "%(endpoint)s, not the configured portal "
                                             "%(portal)s (a forged or foreign install?)",
                                             endpoint=repr(stored[:100]), portal=portal),
                      N_("%(reinstall)s; calls go only to %(url)s meanwhile",
                         reinstall=reinstall, url=settings.rest_url))
    if tokens and tokens.member_id and settings.member_id and \
            tokens.member_id != settings.member_id:
        return failed("bitrix24 binding", N_("the stored app credentials carry another "
                                             "member_id than bitrix24.member_id"), reinstall)
    return ok("bitrix24 binding", N_("app credentials bound to %(portal)s; installs and events "
                                     "from other domains are refused", portal=portal))


def quick(settings: CRMSettings) -> CRMSettings:
    return settings.model_copy(update={
        "max_retries": 0, "timeout_seconds": min(settings.timeout_seconds, CALL_TIMEOUT_S)})


def _userfields(client: Bitrix24Client) -> set[str]:
    return {str(item.get("FIELD_NAME")) for item in client.pages("crm.contact.userfield.list")}


def _bitrix24_failure(exc: CRMError, settings: Bitrix24Settings, *, webhook: bool,
                      reinstall: Message) -> Check:
    if isinstance(exc, CRMAuthError):
        if webhook:
            return failed("bitrix24", N_("inbound webhook rejected (%(reason)s)",
                                         reason=exc.code or exc.reason),
                          N_("create an inbound webhook with the crm and bizproc scopes and "
                             "set LOYALTY_BITRIX24__WEBHOOK_URL"))
        return failed("bitrix24", N_("app token rejected (%(reason)s)",
                                     reason=exc.code or exc.reason), reinstall)
    if isinstance(exc, RetriableCRMError):
        if exc.code in UNREACHABLE:
            return failed("bitrix24", N_("unreachable: %(reason)s", reason=exc.reason),
                          N_("check that %(host)s is up and reachable from this host (DNS, "
                             "firewall, proxy)", host=settings.portal_key))
        return failed("bitrix24", N_("not answering normally: %(reason)s", reason=exc.reason),
                      N_("try again in a minute; if it persists, check the portal's status"))
    return failed("bitrix24", N_("refused: %(reason)s", reason=exc.reason),
                  N_("give the webhook or app the crm and bizproc scopes"))


def _outgoing_webhook(services: Services, database_usable: bool) -> Check:
    """With an inbound webhook the API cannot list the outgoing one; what can be checked is
    that its token is known, without which every event is refused."""
    known = services.settings.bitrix24.application_token is not None or (
        database_usable and services.bitrix24_credentials.application_token() is not None)
    if not known:
        return failed("bitrix24 events", N_("no application token: every event is refused "
                                            "(401)"),
                      N_("copy the outgoing webhook's application token into "
                         "LOYALTY_BITRIX24__APPLICATION_TOKEN"))
    return ok("bitrix24 events", N_("outgoing webhook token set (which events it sends is "
                                    "shown only in the portal)"))


def _events(client: Bitrix24Client, installer: Bitrix24Installer) -> Check:
    bound = [(str(item.get("event", "")).upper(), str(item.get("handler", "")))
             for item in client.call("event.get", {}).result or []]
    missing = [event for event in EVENTS if (event, installer.events_url) not in bound]
    check = _missing("bitrix24 events", N_("%(count)s of %(total)s event(s) unbound: "
                                           "%(names)s"), missing, len(EVENTS), B24_INSTALL)
    elsewhere = sorted({handler for event, handler in bound
                        if event in missing and handler.endswith("/bitrix24/events")})
    if elsewhere:
        return failed(check.name, N_("%(detail)s; bound to %(handlers)s instead "
                                     "(server.public_url changed?)", detail=check.detail_text,
                                     handlers=", ".join(elsewhere)), B24_INSTALL)
    return check


def _robots(client: Bitrix24Client) -> Check:
    robots = set(client.call("bizproc.robot.list", {}).result or [])
    return _missing("bitrix24 robots", N_("%(count)s of %(total)s robot(s) missing: %(names)s"),
                    [code for code in ROBOTS if code not in robots], len(ROBOTS), B24_INSTALL)


def _triggers(client: Bitrix24Client, settings: Bitrix24Settings) -> Check:
    """A transition fires the app's trigger, or the portal trigger whose code is set."""
    triggers = {item.get("CODE") for item in
                client.call("crm.automation.trigger.list", {}).result or []}
    return _missing("bitrix24 triggers", N_("%(count)s of %(total)s trigger(s) missing: "
                                            "%(names)s"),
                    [code for code in CODES if code not in triggers
                     and code not in settings.triggers], len(CODES), B24_INSTALL)


def _trigger_codes(settings: Bitrix24Settings) -> Check:
    """With an inbound webhook a transition fires only the portal trigger whose code is
    configured; the API cannot list those triggers, so the configuration is what is read."""
    name = "bitrix24 triggers"
    missing = [code for code in CODES if code not in settings.triggers]
    fix = N_("add a \"Track incoming webhook\" trigger per transition in the portal and set "
             "its code in [bitrix24.triggers.<transition>] (%(install)s prints the steps)",
             install=B24_INSTALL)
    if len(missing) == len(CODES):
        return failed(name, N_("no transition has a trigger code: no automation trigger ever "
                               "fires (mailings on loyalty events never start)"), fix)
    if missing:
        return warn(name, N_("%(count)s of %(total)s transition(s) fire nothing: %(names)s",
                             count=len(missing), total=len(CODES), names=", ".join(missing)),
                    fix)
    return ok(name, N_("all %(total)s transitions have a portal trigger code (that the codes "
                       "exist is shown only in the portal)", total=len(CODES)))


def _tab(client: Bitrix24Client, installer: Bitrix24Installer) -> Check:
    bound = {(item.get("placement"), item.get("handler"))
             for item in client.call("placement.get", {}).result or []}
    missing = [code for code in PLACEMENTS if (code, installer.tab_url) not in bound]
    if missing:  # the program works without it: managers only miss the card tab
        return warn("bitrix24 tab", N_("%(count)s of %(total)s card tab(s) not registered at "
                                       "%(url)s: %(names)s", count=len(missing),
                                       total=len(PLACEMENTS), url=installer.tab_url,
                                       names=", ".join(missing)), B24_INSTALL)
    return ok("bitrix24 tab", N_("contact and deal cards open %(url)s", url=installer.tab_url))


def _attempt(name: str, check: Callable[[], Check], *, refused: Message) -> Check:
    """One check whose CRM call may fail on its own (retries are off): say so on its line."""
    try:
        return check()
    except FatalCRMError as exc:
        return failed(name, N_("refused: %(reason)s", reason=exc.reason), refused)
    except CRMError as exc:
        return failed(name, N_("could not check: %(reason)s", reason=exc.reason),
                      N_("run doctor again in a minute; if it persists, read the service log"))


def _missing(name: str, what: Message, missing: list[str], total: int, fix: Message) -> Check:
    """`what` says what is missing with %(count)s, %(total)s and %(names)s in it."""
    if missing:
        return failed(name, Message(what.msgid, {"count": len(missing), "total": total,
                                                 "names": ", ".join(missing)}), fix)
    return ok(name, N_("all %(total)s present", total=total))


# -- amoCRM ----------------------------------------------------------------------------------
def amocrm(services: Services, *, database_usable: bool, now: datetime) -> Iterator[Check]:
    settings = services.settings.amocrm
    client = AmoCRMClient(quick(settings), credentials=services.amocrm_credentials)
    installer = AmoCRMInstaller(services, client)
    oauth = settings.long_lived_token is None
    if oauth:
        if not database_usable:
            yield warn("amocrm", N_("not checked: the OAuth tokens are kept in the database"),
                       N_("fix the database first"))
            return
        yield _amocrm_redirect_uri(settings, services.settings.server.public_url)
        state = services.amocrm_credentials.status()
        if state is None:
            yield failed("amocrm", N_("not authorized yet"), _authorize(services))
            return
        if state[0] == "revoked":
            yield failed("amocrm", N_("credentials revoked (%(reason)s)", reason=state[1]),
                         _reauthorize(services))
            return
    try:
        account = client.request("GET", "/api/v4/account") or {}
    except CRMError as exc:
        if needs_authorization(services):  # amoCRM refused the refresh token just now
            yield failed("amocrm", N_("credentials revoked (%(reason)s)", reason=exc.reason),
                         _reauthorize(services))
        else:
            yield _amocrm_failure(exc, settings, oauth=oauth,
                                  reauthorize=_reauthorize(services)
                                  if oauth and isinstance(exc, CRMAuthError)
                                  and exc.status == 401 else None)
        return
    subdomain = str(account.get("subdomain") or "")
    if subdomain != settings.account_subdomain:
        yield failed("amocrm", N_("the token is for account %(account)s, but webhooks are "
                                  "expected from %(expected)s", account=subdomain,
                                  expected=settings.account_subdomain),
                     N_("set amocrm.base_url (or amocrm.subdomain) to this account's"))
        return
    yield ok("amocrm", N_("account %(account)s (id %(id)s) answers, OAuth token accepted",
                          account=subdomain, id=str(account.get("id"))) if oauth else
             N_("account %(account)s (id %(id)s) answers, long-lived token accepted",
                account=subdomain, id=str(account.get("id"))))
    rights = N_("install needs an account administrator's token")
    yield _attempt("amocrm fields", lambda: _amocrm_fields(settings, installer),
                   refused=rights)
    yield _attempt("amocrm webhook", lambda: _amocrm_webhook(
        client, installer, services.settings.server.public_url), refused=rights)
    yield _amocrm_token(services, now)


def _authorize(services: Services) -> Message:
    return N_("open %(url)s as an account administrator and allow access (the link works "
              "once, within %(minutes)s minutes)", url=authorization_url(services),
              minutes=int(LIFETIME.total_seconds() // 60))


def _reauthorize(services: Services) -> Message:
    return N_("re-authorize: %(how)s", how=_authorize(services))


RENEW_LONG_LIVED = N_("generate a new long-lived token (amoCRM: integration settings > Keys) "
                      "and set LOYALTY_AMOCRM__LONG_LIVED_TOKEN")


def _amocrm_failure(exc: CRMError, settings: AmoCRMSettings, *, oauth: bool,
                    reauthorize: Message | None) -> Check:
    if isinstance(exc, CRMAuthError) and exc.status == 401:
        return failed("amocrm", N_("token rejected (401)"),
                      reauthorize if oauth and reauthorize else RENEW_LONG_LIVED)
    if isinstance(exc, CRMAuthError) and exc.status == 402:
        return failed("amocrm", N_("payment required (402): the subscription has ended"),
                      N_("renew the amoCRM subscription"))
    if isinstance(exc, CRMAuthError):
        return failed("amocrm", exc.detail.removeprefix("amocrm GET /api/v4/account: "),
                      N_("contact amoCRM support, or allow this host's IP in the account"))
    if isinstance(exc, RetriableCRMError) and exc.code in UNREACHABLE:
        return failed("amocrm", N_("unreachable: %(reason)s", reason=exc.reason),
                      N_("check amocrm.base_url (%(url)s) and that this host can reach it",
                         url=str(settings.base_url)))
    return failed("amocrm", N_("not answering normally: %(reason)s", reason=exc.reason),
                  N_("try again in a minute; if it persists, check amoCRM's status"))


def _amocrm_redirect_uri(settings: AmoCRMSettings, public: str) -> Check:
    # amoCRM sends the code to the redirect URI registered with the integration; the
    # connector answers it at /amocrm/oauth/callback only.
    expected = f"{public.rstrip('/')}{CALLBACK}"
    if settings.redirect_uri != expected:
        return warn("amocrm redirect uri", N_("%(configured)s is not %(expected)s",
                                              configured=str(settings.redirect_uri),
                                              expected=expected),
                    N_("unless a proxy maps it there, set amocrm.redirect_uri (and the "
                       "integration's redirect URI in amoCRM) to it"))
    return ok("amocrm redirect uri", N_("%(expected)s; only authorizations started by install "
                                        "or doctor are taken", expected=expected))


def _amocrm_fields(settings: AmoCRMSettings, installer: AmoCRMInstaller) -> Check:
    codes = installer.fields()
    return _missing("amocrm fields", N_("%(count)s of %(total)s contact field(s): %(names)s"),
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
        return failed("amocrm webhook", N_("no account webhook to %(url)s", url=shown), install)
    if ours.get("disabled"):
        return failed("amocrm webhook", N_("amoCRM disabled the webhook (too many failed "
                                           "deliveries)"),
                      N_("make sure %(url)s is reachable, then %(install)s", url=public,
                         install=install))
    events = hook_events(installer.services.settings)
    missing = [event for event in events if event not in (ours.get("settings") or [])]
    if missing:
        return failed("amocrm webhook", N_("not sent on %(events)s", events=", ".join(missing)),
                      install)
    return ok("amocrm webhook", N_("%(count)s events -> %(url)s", count=len(events),
                                   url=shown))


def _amocrm_token(services: Services, now: datetime) -> Check:
    long_lived = services.settings.amocrm.long_lived_token
    if long_lived is None:
        tokens = services.amocrm_credentials.load()
        if tokens and tokens.expires_at:
            return ok("amocrm token", N_("access token valid until %(when)s, renewed on use "
                                         "(the refresh token lapses after 3 months unused)",
                                         when=_when(tokens.expires_at)))
        return ok("amocrm token", N_("access token valid, renewed on use (the refresh token "
                                     "lapses after 3 months unused)"))
    expires = jwt_expiry(long_lived.get_secret_value())
    if expires is None:
        return ok("amocrm token", N_("long-lived token accepted (its expiry is not readable)"))
    if expires <= now:
        return failed("amocrm token", N_("long-lived token expired %(when)s",
                                         when=_when(expires)), RENEW_LONG_LIVED)
    if expires - now < TOKEN_WARNING:
        return warn("amocrm token", N_("long-lived token expires %(when)s (in %(left)s)",
                                       when=_when(expires), left=expires - now),
                    N_("%(renew)s before then", renew=RENEW_LONG_LIVED))
    return ok("amocrm token", N_("long-lived token valid until %(when)s", when=_when(expires)))


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
    start = N_("start the service (loyalty-connector serve) and make sure server.public_url "
               "leads to it (DNS, TLS, reverse proxy)")
    # /healthz shows its checks only to the metrics or admin token: send one when set.
    token = settings.server.metrics_token or settings.server.admin_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        response = (session or requests.Session()).get(url, timeout=HEALTHZ_TIMEOUT_S,
                                                       headers=headers)
    except requests.exceptions.SSLError:
        return failed("public url", N_("GET %(url)s: TLS certificate refused", url=url),
                      N_("install a valid certificate: the CRMs refuse invalid ones"))
    except requests.RequestException as exc:
        return failed("public url", N_("GET %(url)s: %(error)s", url=url,
                                       error=type(exc).__name__), start)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") not in ("ok", "unhealthy"):
        return failed("public url", N_("GET %(url)s answered HTTP %(status)s, not this "
                                       "service's /healthz", url=url,
                                       status=response.status_code),
                      N_("point server.public_url (or the proxy behind it) at the service "
                         "(%(host)s:%(port)s)", host=settings.server.host,
                         port=settings.server.port))
    if response.status_code != 200:
        checks = body.get("checks")
        problems: Text = "; ".join(f"{key}: {value}" for key, value in checks.items()
                                   if value != "ok") if isinstance(checks, dict) else \
            N_("details need server.metrics_token or server.admin_token")
        return warn("public url", N_("reachable, but the service there is unhealthy "
                                     "(%(problems)s)", problems=problems),
                    N_("see the lines above; if they are ok, the service behind public_url "
                       "runs with another configuration"))
    host = urlsplit(url).hostname or ""
    remote = [crm for crm in _crm_hosts(settings) if not _local(crm)]
    if _local(host) and remote:
        return warn("public url", N_("%(url)s answers here, but %(crm)s cannot reach %(host)s",
                                     url=url, crm=remote[0], host=host),
                    N_("set server.public_url to the HTTPS address the CRM can reach"))
    return ok("public url", N_("GET %(url)s answered 200", url=url))


def card_pages(settings: Settings) -> Check:
    """Card page links go out in mailings: over plain HTTP anyone on the way could read
    them, and a link read is a page opened."""
    base = settings.server.public_url.rstrip("/") + "/card/<token>"
    if urlsplit(base).scheme != "https" and not _local(urlsplit(base).hostname or ""):
        return warn("card pages", N_("links go out as %(url)s", url=base),
                    N_("set server.public_url to the service's https:// address"))
    return ok("card pages", N_("on: %(url)s", url=base))


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
    pending, processing = depth["pending"], depth["processing"]
    summary = N_("%(pending)s pending, oldest %(age)s old, %(processing)s processing",
                 pending=pending, age=now - received, processing=processing) \
        if received else N_("%(pending)s pending, %(processing)s processing", pending=pending,
                            processing=processing)
    if due is not None and now - due > STALLED:
        yield warn("inbox", N_("%(summary)s; due for %(age)s and not taken", summary=summary,
                               age=now - due),
                   N_("no worker is draining it: make sure `loyalty-connector serve` (or "
                      "`worker`) runs, and read its log"))
    elif received is not None and now - received > STALE:
        yield warn("inbox", N_("%(summary)s; events keep failing or wait for the CRM",
                               summary=summary),
                   N_("see why: %(command)s", command=CLI + " inbox list --status pending"))
    else:
        yield ok("inbox", summary)
    lapsed = box.lapsed_claims(now)
    if lapsed:
        yield warn("inbox claims", N_("%(count)s item(s) still claimed after their lease ended",
                                      count=lapsed),
                   N_("a worker stopped (killed, or lost its database) while processing them; "
                      "any running worker takes them again now: make sure one runs"))
    dead = depth["dead"]
    if dead:
        yield warn("dead letters", N_("%(count)s event(s) gave up after %(attempts)s "
                                      "attempt(s)", count=dead,
                                      attempts=box.settings.max_attempts),
                   N_("see why: %(list)s; fix the cause, then: %(retry)s",
                      list=CLI + " inbox list --status dead",
                      retry=CLI + " inbox retry --all-dead"))
    else:
        yield ok("dead letters", N_("none"))


# -- write-back ------------------------------------------------------------------------------
def writeback(db: Database) -> Iterator[Check]:
    refused = mirror.count_refused(db)
    if not refused:
        yield ok("write-back refusals", N_("no contact refused by a CRM"))
        return
    [latest] = mirror.refusals(db, limit=1)
    yield warn("write-back refusals",
               N_("%(count)s contact(s) refused for good by the CRM and no longer written to "
                  "(deleted, or not in the CRM); latest %(crm)s contact %(contact)s: "
                  "%(error)s", count=refused, crm=latest.crm, contact=latest.contact_id,
                  error=latest.error),
               N_("see: %(list)s; a contact that changes in the CRM is written again, or "
                  "after restoring one: %(retry)s", list=CLI + " account refused",
                  retry=CLI + " account retry-writeback CRM PORTAL CONTACT_ID"))


# -- secrets and formatting ------------------------------------------------------------------
def crm_budget(limits: LimitsSettings) -> Check:
    """Where the CRM request budget every process shares lives (database: see there)."""
    if limits.backend == "process":
        return warn("crm budget", N_("each process keeps its own CRM request budget"),
                    N_("with more than one process (web, worker, scheduler, a CLI sync) set "
                       "limits.backend = \"database\" or \"redis\", or together they pass "
                       "the CRM's limit"))
    import redis

    assert limits.redis_url is not None  # the settings' validator saw to it
    try:
        client = redis.Redis.from_url(limits.redis_url.get_secret_value(),
                                      socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except (redis.RedisError, ValueError) as exc:
        return failed("crm budget", N_("Redis unreachable (%(error)s)",
                                       error=type(exc).__name__),
                      N_("check limits.redis_url (LOYALTY_LIMITS__REDIS_URL) and that Redis "
                         "is up"))
    return ok("crm budget", N_("shared in Redis, which answers"))


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

    def cleaned(text: Text) -> Text:
        return text.map_values(clean) if isinstance(text, Message) else clean(text)

    detail, fix = check.texts or (check.detail, check.fix)
    return _check(check.name, check.status, cleaned(detail), cleaned(fix) if fix else None)


def _when(moment: datetime) -> datetime:
    """A moment for a message: shown in UTC, the way the reader's language writes it."""
    return moment.astimezone(UTC)
