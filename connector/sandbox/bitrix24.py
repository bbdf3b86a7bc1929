"""A fake Bitrix24 portal: a real local HTTP server speaking the portal's REST formats, for
end-to-end tests of the connector.

    @pytest.fixture
    def portal() -> Iterator[FakeBitrix24Portal]:
        with FakeBitrix24Portal(clock=ManualClock()) as fake:
            yield fake

    contact = portal.add_contact(NAME="Ann", PHONE="+79990000000")
    deal = portal.add_deal(OPPORTUNITY=1500, STAGE_ID="WON", contact_ids=[contact])
    # point the connector at portal.webhook_url, or at portal.rest_url + portal.oauth_url
    # with the pair from portal.issue_tokens() / portal.install_body(); then assert on
    # portal.calls, portal.contact_updates, portal.fired_triggers, ...

Layout: bitrix24_php (wire formats), bitrix24_state (clocks, limits, records), bitrix24_crm
(deals, contacts, user fields), bitrix24_methods and bitrix24_automation (REST methods),
bitrix24_server (HTTP: routing, auth, batch, OAuth server, faults), bitrix24_payloads (what
the portal POSTs to the connector). Doc paths in comments are in bitrix24/b24restdocs.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from connector.sandbox.bitrix24_crm import CrmStore, userfield_name
from connector.sandbox.bitrix24_payloads import (
    OAUTH_SERVER_ENDPOINT,
    event_body,
    new_event_token,
    new_workflow_id,
    placement_call,
    robot_body,
)
from connector.sandbox.bitrix24_payloads import document_id as as_document_id
from connector.sandbox.bitrix24_products import ProductStore
from connector.sandbox.bitrix24_server import PortalApp
from connector.sandbox.bitrix24_state import (
    AppToken,
    Call,
    Clock,
    Fault,
    LeakyBucket,
    ManualClock,
    OperatingMeter,
    OutgoingEvent,
    RealClock,
    Records,
    ScaledClock,
)
from connector.sandbox.faults import Chaos, Gate, RequestLog

__all__ = ["Call", "FakeBitrix24Portal", "ManualClock", "OutgoingEvent", "RealClock",
           "ScaledClock", "event_body", "robot_body"]

MOSCOW = timezone(timedelta(hours=3))
DOC_MEMBER_ID = "a223c6b3710f85df22e9377d6c4f7553"  # the value in the docs' examples
DOC_APPLICATION_TOKEN = "51856fefc120afa4b628cc82d3935cce"
DEFAULT_ERRORS = {  # _includes/system-errors.md
    500: ("INTERNAL_SERVER_ERROR", "Internal server error"),
    503: ("QUERY_LIMIT_EXCEEDED", "Too many requests"),
    429: ("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."),
    401: ("expired_token", "The access token provided has expired."),
    403: ("ACCESS_DENIED", "Access denied!"),
}


class FakeBitrix24Portal:
    """One portal, reachable by an inbound webhook and by an OAuth application at once.

    Rate limit defaults to the non-Enterprise plan (2 requests/s, burst 50, limits.md); pass
    requests_per_second=5, burst=250 for Enterprise. Give the client under test the same
    `clock` when it must not sleep for real; `latency` seconds hold every REST request, as a
    distant portal's round trip would."""

    def __init__(self, *, clock: Clock | None = None, tz: tzinfo = MOSCOW,
                 domain: str | None = None, member_id: str = DOC_MEMBER_ID,
                 webhook_user_id: int = 1, webhook_secret: str = "fakewebhooksecret01",
                 client_id: str = "local.fake0000000001.12345678",
                 client_secret: str = "fake-client-secret",
                 application_token: str = DOC_APPLICATION_TOKEN,
                 requests_per_second: float = 2.0, burst: int = 50,
                 operating_limit: float = 480.0, token_lifetime: int = 3600,
                 scope: str = "crm,bizproc,placement,user_brief", app_status: str = "L",
                 license: str = "pro100", host: str = "127.0.0.1",
                 latency: float = 0.0) -> None:
        self.clock: Clock = clock or RealClock()
        # Seconds every /rest/ request is held before it runs, in real time: a portal a
        # network round trip away (benchmarks/latency.py). The whole round trip is spent on
        # the way in, so a call's record is made one round trip after it was sent.
        self.latency = latency
        self.tz = tz
        self.member_id = member_id
        self.webhooks: set[tuple[int, str]] = {(webhook_user_id, webhook_secret)}
        self.webhook_user_id = webhook_user_id
        self.webhook_secret = webhook_secret
        self.client_id = client_id
        self.client_secret = client_secret
        self.application_token = application_token
        self.token_lifetime = token_lifetime
        self.scope = scope
        self.app_status = app_status
        self.license = license
        self.store = CrmStore(self.now, tz)
        self.products = ProductStore()
        self.records = Records()
        self.bucket = LeakyBucket(self.clock, requests_per_second, burst)
        self.operating = OperatingMeter(self.clock, operating_limit)
        self.rate_limit_enabled = True
        self.http_requests = 0  # requests to /rest/ (a batch is one)
        self.oauth_requests = 0  # requests to /oauth/token/
        self.limit_errors = 0  # 503 QUERY_LIMIT_EXCEEDED the bucket produced
        # docs: NO_AUTH_FOUND covers a bad access token too; real portals are also seen
        # answering ("invalid_token", "Unable to get application by token"): set that here.
        self.invalid_token_error = ("NO_AUTH_FOUND", "Wrong authorization data")
        # Portal users by id (profile, user.current, user.admin); tokens name one of them.
        self.users: dict[int, dict[str, Any]] = {1: {  # user 1 installs the app
            "NAME": "Admin", "LAST_NAME": "Portal", "ADMIN": True, "EMAIL": "",
            "WORK_POSITION": ""}}
        self.tokens: dict[str, AppToken] = {}
        self.refresh_tokens: dict[str, AppToken] = {}
        self.auth_codes: dict[str, tuple[int, float]] = {}
        self.event_tokens: dict[str, dict[str, Any]] = {}
        self.faults: deque[Fault] = deque()
        self.delays: deque[list[float]] = deque()  # [remaining, seconds]
        # Random faults on top of the queued ones (connector.sandbox.faults.Chaos), the arrival
        # time of every /rest/ request, and a gate that can hold requests at the door.
        self.chaos: Chaos | None = None
        self.request_log = RequestLog()
        self.gate = Gate()
        self.lock = threading.RLock()
        self._handler_ids = 200
        self._app = PortalApp(self)
        self._host = host
        self._server: BaseWSGIServer = make_server(host, 0, self._app, threaded=True,
                                                   request_handler=self._app.handler)
        self.port = self._server.port
        self.domain = domain or f"{host}:{self.port}"
        self._thread: threading.Thread | None = None
        self.is_down = False

    # -- addresses -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """client_endpoint: where OAuth calls go (`{rest_url}{method}.json?auth=...`)."""
        return f"{self.url}/rest/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/rest/{self.webhook_user_id}/{self.webhook_secret}/"

    @property
    def oauth_url(self) -> str:
        return f"{self.url}/oauth/token/"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeBitrix24Portal:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True,
                                            name=f"fake-bitrix24-{self.port}")
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeBitrix24Portal:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.gate.release()  # a request held at the door must not outlive the portal
        self.stop()

    def down(self) -> None:
        """Stop listening: new connections are refused until up()."""
        with self.lock:
            self.is_down = True
        self.stop()

    def up(self) -> None:
        if not self.is_down:
            return
        self._server = make_server(self._host, self.port, self._app, threaded=True,
                                   request_handler=self._app.handler)
        with self.lock:
            self.is_down = False
        self.start()

    # -- time ------------------------------------------------------------------------------
    def now(self) -> datetime:
        """Portal time, to the second, with the portal's offset."""
        return datetime.fromtimestamp(int(self.clock.time()), self.tz)

    # -- fault injection -------------------------------------------------------------------
    def fail_next(self, count: int = 1, status: int = 500, error: str | None = None,
                  description: str | None = None, *, method: str | None = None,
                  after: int = 0) -> None:
        """The next `count` requests answer `status` with a JSON error (default code by
        status: 500 INTERNAL_SERVER_ERROR, 503 QUERY_LIMIT_EXCEEDED, 429
        OPERATION_TIME_LIMIT, ...). With `method`, only calls of that method fail, including
        commands inside a batch (their error lands in result_error), the first `after` of
        them passing."""
        code, text = DEFAULT_ERRORS.get(status, ("", f"HTTP {status}"))
        if error is not None and description is None:
            description = {c: d for c, d in DEFAULT_ERRORS.values()}.get(error, error)
        with self.lock:
            self.faults.append(Fault("error", count, status, code if error is None else error,
                                     text if description is None else description,
                                     method=method, after=after))

    def malformed_next(self, count: int = 1, *, status: int = 502,
                       body: bytes = b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                       content_type: str = "text/html") -> None:
        """Answers that are not the portal's JSON (a proxy's HTML page, a cut-off body)."""
        with self.lock:
            self.faults.append(Fault("malformed", count, status, body=body,
                                     content_type=content_type))

    def reset_next(self, count: int = 1) -> None:
        """Drop the connection without an answer (the client sees a connection error)."""
        with self.lock:
            self.faults.append(Fault("reset", count))

    def delay_next(self, count: int, seconds: float) -> None:
        """Hold the next `count` answers for `seconds` of real time (for client timeouts);
        the call still runs afterwards, as a slow portal would."""
        with self.lock:
            self.delays.append([count, seconds])

    def chaos_draw(self) -> tuple[Fault | None, float]:
        """What `chaos` does to a request arriving now: a fault, or seconds to hold it.
        A down window resets the connection; a 503 is QUERY_LIMIT_EXCEEDED, a 429
        OPERATION_TIME_LIMIT, a 500 INTERNAL_SERVER_ERROR, as the portal answers them."""
        if self.chaos is None:
            return None, 0.0
        verdict, status = self.chaos.draw(self.clock.time())
        if verdict in ("down", "reset"):
            return Fault("reset", 1), 0.0
        if verdict == "error":
            code, text = DEFAULT_ERRORS.get(status, ("", f"HTTP {status}"))
            return Fault("error", 1, status, code, text), 0.0
        if verdict == "slow":
            return None, self.chaos.slow_seconds
        return None, 0.0

    # -- OAuth -----------------------------------------------------------------------------
    def issue_tokens(self, user_id: int = 1) -> dict[str, Any]:
        """A fresh token pair, as the OAuth server answers (settings/oauth/auto-renewal.md)."""
        with self.lock:
            token = AppToken(secrets.token_hex(16), secrets.token_hex(16), user_id,
                             self.clock.time() + self.token_lifetime, self.scope)
            self.tokens[token.access_token] = token
            self.refresh_tokens[token.refresh_token] = token
            return self.token_json(token)

    def token_json(self, token: AppToken, *, with_user: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": token.access_token, "client_endpoint": self.rest_url,
            "domain": "oauth.bitrix.info", "expires": int(token.expires_at),
            "expires_in": self.token_lifetime, "member_id": self.member_id,
            "refresh_token": token.refresh_token, "scope": token.scope,
            "server_endpoint": OAUTH_SERVER_ENDPOINT, "status": self.app_status,
            "user_id": token.user_id}
        if not with_user:  # the code exchange answer has neither (settings/oauth/index.md)
            body.pop("expires")
            body.pop("user_id")
        return body

    def authorization_code(self, user_id: int = 1) -> str:
        """A `code` for grant_type=authorization_code; it lives 30 seconds (oauth/index.md)."""
        code = secrets.token_hex(16)
        with self.lock:
            self.auth_codes[code] = (user_id, self.clock.time() + 30)
        return code

    def expire_tokens(self) -> None:
        """Every access token issued so far answers 401 expired_token from now on."""
        with self.lock:
            for token in self.tokens.values():
                token.expires_at = min(token.expires_at, self.clock.time() - 1)

    def revoke_refresh_tokens(self) -> None:
        """Refresh answers invalid_grant, as after 180 days or an uninstall."""
        with self.lock:
            self.refresh_tokens.clear()

    # -- users and widgets -----------------------------------------------------------------
    def add_user(self, name: str, last_name: str = "", *, admin: bool = False,
                 email: str = "", position: str = "") -> int:
        """A portal user (an employee); returns the id."""
        with self.lock:
            user_id = max(self.users, default=0) + 1
            self.users[user_id] = {"NAME": name, "LAST_NAME": last_name, "ADMIN": admin,
                                   "EMAIL": email, "WORK_POSITION": position}
            return user_id

    def placement_call(self, placement: str, entity_id: int | str, *, user_id: int = 1,
                       **overrides: Any) -> tuple[str, bytes, str]:
        """What Bitrix24 POSTs to a widget's handler when `user_id` opens it: (query string,
        body, content type), with a live token pair of that user."""
        tokens = self.issue_tokens(user_id)
        values: dict[str, Any] = {
            "domain": self.domain, "member_id": self.member_id,
            "application_token": self.application_token,
            "access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"],
            "expires_in": self.token_lifetime, "status": self.app_status}
        values.update(overrides)
        return placement_call(placement, entity_id, **values)

    @property
    def placements(self) -> list[dict[str, Any]]:
        """Registered widget handlers, as placement.get shows them."""
        return self.records.placements

    # -- CRM data helpers (DATE_MODIFY comes from the portal clock) ------------------------
    def add_deal(self, *, contact_ids: list[int] | None = None, **fields: Any) -> int:
        with self.lock:
            deal_id = self.store.add_deal(fields, contact_ids)
            self.emit("ONCRMDEALADD", deal_id)
            return deal_id

    def update_deal(self, deal_id: int, *, contact_ids: list[int] | None = None,
                    **fields: Any) -> None:
        with self.lock:
            self.emit(self.store.update_deal(deal_id, fields, contact_ids), deal_id)

    def add_product(self, name: str, price: str | Decimal = "0", *,
                    section_id: int | None = None, **properties: Any) -> int:
        """A catalog product; `properties` as PROPERTY_<id>=value (a list: multiple)."""
        with self.lock:
            return self.products.add_product({"NAME": name, "PRICE": price,
                                              "SECTION_ID": section_id, **properties})

    def set_deal_rows(self, deal_id: int, rows: list[Any]) -> None:
        """crm.deal.productrows.set, as a manager saving the deal's products."""
        with self.lock:
            total = self.products.set_rows(deal_id, rows)
            fields = {} if self.store.deals[deal_id]["IS_MANUAL_OPPORTUNITY"] == "Y" \
                else {"OPPORTUNITY": total}
            self.emit(self.store.update_deal(deal_id, fields), deal_id)

    def deal_rows(self, deal_id: int) -> list[dict[str, Any]]:
        """The deal's rows as crm.deal.productrows.get shows them."""
        with self.lock:
            return self.products.show_rows(deal_id)

    def delete_deal(self, deal_id: int) -> None:
        with self.lock:
            del self.store.deals[deal_id]
            self.store.deal_contacts.pop(deal_id, None)
            self.emit("ONCRMDEALDELETE", deal_id)

    def add_contact(self, **fields: Any) -> int:
        """PHONE / EMAIL take a string, a list of strings or of {"VALUE", "VALUE_TYPE"};
        BIRTHDATE a date or "YYYY-MM-DD"; UF_CRM_* anything (stored as given)."""
        with self.lock:
            contact_id = self.store.add_contact(fields)
            self.emit("ONCRMCONTACTADD", contact_id)
            return contact_id

    def update_contact(self, contact_id: int, **fields: Any) -> None:
        with self.lock:
            self.store.update_contact(contact_id, fields, strict=False)
            self.emit("ONCRMCONTACTUPDATE", contact_id)

    def delete_contact(self, contact_id: int) -> None:
        with self.lock:
            del self.store.contacts[contact_id]
            for deal_id, contacts in self.store.deal_contacts.items():
                if contact_id in contacts:
                    contacts.remove(contact_id)
                    # The deal's CONTACT_ID is its first contact left, as crm.deal.get shows.
                    self.store.deals[deal_id]["CONTACT_ID"] = contacts[0] if contacts else None
            self.emit("ONCRMCONTACTDELETE", contact_id)

    def deal(self, deal_id: int) -> dict[str, Any]:
        """The deal as crm.deal.get shows it."""
        with self.lock:
            return self.store.show(self.store.deals[deal_id], "CRM_DEAL")

    def contact(self, contact_id: int) -> dict[str, Any]:
        """The contact as crm.contact.get shows it."""
        with self.lock:
            return self.store.show(self.store.contacts[contact_id], "CRM_CONTACT")

    def add_userfield(self, name: str, user_type: str = "string", *,
                      entity: str = "contact", **settings: Any) -> str:
        """Register a user field as if created in the UI; returns its full UF_CRM_ name."""
        full = userfield_name(name)
        with self.lock:
            self.store.add_userfield(f"CRM_{entity.upper()}", full, user_type, settings)
        return full

    def set_stage_semantics(self, stage_id: str, semantics: str) -> None:
        """A custom funnel stage that counts as won ("S") or lost ("F")."""
        self.store.stage_overrides[stage_id] = semantics

    # -- events and robots -----------------------------------------------------------------
    def next_handler_id(self) -> int:
        self._handler_ids += 1
        return self._handler_ids

    def bind_event(self, event: str, handler: str) -> None:
        """Seed an event.bind registration without a REST call."""
        with self.lock:
            self.records.bound_events.append({
                "id": self.next_handler_id(), "event": event.upper(), "handler": handler,
                "auth_type": "0", "offline": 0, "auth_connector": None})

    def emit(self, event: str, entity_id: int) -> None:
        """Queue the event for every handler bound to it (portal.outbox). Changes come from
        tests or robots, so `auth` carries no tokens (api-reference/events/index.md)."""
        for bound in self.records.bound_events:
            if bound["event"] == event and not bound["offline"]:
                body, content_type = self.event_body(event, entity_id,
                                                     event_handler_id=bound["id"])
                self.records.outbox.append(OutgoingEvent(event, bound["handler"], body,
                                                         content_type, entity_id))

    def drain_outbox(self) -> list[OutgoingEvent]:
        with self.lock:
            events, self.records.outbox[:] = list(self.records.outbox), []
            return events

    def event_body(self, event: str, entity_id: int | str | None = None, *,
                   with_tokens: bool = False, **overrides: Any) -> tuple[bytes, str]:
        """event_body() with this portal's domain, member_id, application_token and
        endpoints; with_tokens adds a live access token (an event caused by a user)."""
        values: dict[str, Any] = {
            "application_token": self.application_token, "domain": self.domain,
            "member_id": self.member_id, "client_endpoint": self.rest_url,
            "ts": int(self.clock.time()), "scope": self.scope, "status": self.app_status,
            "expires_in": self.token_lifetime}
        if with_tokens or event.upper() == "ONAPPINSTALL":
            tokens = self.issue_tokens()
            values["access_token"] = tokens["access_token"]
            if event.upper() == "ONAPPINSTALL":
                values["refresh_token"] = tokens["refresh_token"]
        values.update(overrides)
        return event_body(event, entity_id, **values)

    def install_body(self, **overrides: Any) -> tuple[bytes, str]:
        """ONAPPINSTALL with a usable token pair (on-app-install.md)."""
        return self.event_body("ONAPPINSTALL", **overrides)

    def uninstall_body(self, **overrides: Any) -> tuple[bytes, str]:
        return self.event_body("ONAPPUNINSTALL", **overrides)

    def robot_body(self, code: str, document: str | list[str], properties: dict[str, Any],
                   *, with_tokens: bool = True, **overrides: Any) -> tuple[bytes, str]:
        """robot_body() for this portal; its event_token is registered, so the connector's
        bizproc.event.send with it succeeds once (a second use is ACCESS_DENIED)."""
        workflow_id = overrides.pop("workflow_id", None) or new_workflow_id()
        token = overrides.pop("event_token", None) or new_event_token(workflow_id)
        values: dict[str, Any] = {
            "application_token": self.application_token, "domain": self.domain,
            "member_id": self.member_id, "client_endpoint": self.rest_url,
            "ts": int(self.clock.time()), "status": self.app_status,
            "expires_in": self.token_lifetime}
        if with_tokens:
            tokens = self.issue_tokens()
            values.update(access_token=tokens["access_token"],
                          refresh_token=tokens["refresh_token"], scope=self.scope)
        values.update(overrides)
        with self.lock:
            self.event_tokens[token] = {"code": code, "document_id": as_document_id(document),
                                        "workflow_id": workflow_id, "used": False}
        return robot_body(code, document, properties, event_token=token,
                          workflow_id=workflow_id, **values)

    # -- observations ----------------------------------------------------------------------
    @property
    def calls(self) -> list[Call]:
        return self.records.calls

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.records.calls if c.method == method]

    @property
    def bound_events(self) -> list[dict[str, Any]]:
        return self.records.bound_events

    @property
    def robots(self) -> dict[str, dict[str, Any]]:
        return self.records.robots

    @property
    def triggers(self) -> dict[str, dict[str, Any]]:
        return self.records.triggers

    @property
    def fired_triggers(self) -> list[dict[str, Any]]:
        return self.records.fired_triggers

    @property
    def fired_webhook_triggers(self) -> list[dict[str, Any]]:
        return self.records.fired_webhook_triggers

    def add_webhook_trigger(self, code: str, stage_id: str | None = None, *,
                            category_id: int = 0) -> None:
        """What an admin does in the portal: a "Track incoming webhook" trigger on a stage of
        one deal funnel, with the code Bitrix24 generated for it."""
        with self.lock:
            self.records.webhook_triggers[code] = {"code": code, "stage_id": stage_id,
                                                   "category_id": category_id}

    @property
    def bizproc_events(self) -> list[dict[str, Any]]:
        return self.records.bizproc_events

    @property
    def timeline_comments(self) -> list[dict[str, Any]]:
        return self.records.timeline_comments

    @property
    def contact_updates(self) -> dict[int, list[dict[str, Any]]]:
        return self.records.contact_updates

    @property
    def outbox(self) -> list[OutgoingEvent]:
        return self.records.outbox
