"""The two hottest routes, answered below Flask: Bitrix24 events and amoCRM webhooks.

Every CRM change arrives through one of these two, often in bursts, and the CRM waits for the
answer (amoCRM two seconds at most). Measured under load (benchmarks/ingest.py), Flask's
per-request machinery around them (request and app contexts, routing, hooks, the response
object) cost more CPU than parsing, authenticating and durably storing the event together. So
they are a small WSGI layer in front of the Flask app (`app.wsgi_app`): read the body within
server.max_body_bytes, hand it to the CRM module's accept function, answer JSON. Every other
request passes to Flask untouched.

What a caller sees is what the Flask routes gave: the same JSON bodies and error shapes
(`{"error", "detail"}`), 404 for a disabled CRM or a wrong secret, 405 for another method,
413 past the body limit, the X-Request-Id answer header and log context, the request metrics
under the route's own label.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.wrappers import Request

from connector import logs
from connector.db import is_unavailable
from connector.inbox import Stored
from connector.services import Services
from webhooks import amocrm, bitrix24, outage
from webhooks.errors import ApiError, error_payload, http_error, log_unexpected
from webhooks.validation import read_body

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# Only requests under these prefixes are matched here; every other passes straight to Flask.
PREFIXES = ("/bitrix24/events", "/amocrm/webhooks/")
SLASHES = re.compile("/{2,}")
# What Flask answered on these routes: OPTIONS by itself, 405 for the rest.
ALLOW = "OPTIONS, POST"
Route = tuple[Rule, dict[str, Any]] | MethodNotAllowed | RequestRedirect


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Intake:
    """WSGI middleware: POST /bitrix24/events and POST /amocrm/webhooks/<secret>.

    Its `url_map` is a werkzeug Map like Flask's (same matching, the same rule strings as
    metrics labels), so route audits can list these routes beside the app's."""

    def __init__(self, app: WSGIApp, services: Services, *, max_body: int | None,
                 request_ids: Callable[[], str], outages: outage.OutageLog) -> None:
        self.app = app
        self.outages = outages
        self.services = services
        self.max_body = max_body
        self.request_ids = request_ids
        self.url_map = Map([
            Rule("/bitrix24/events", endpoint="bitrix24_events", methods=["POST", "OPTIONS"]),
            Rule("/amocrm/webhooks/<secret>", endpoint="amocrm_webhooks",
                 methods=["POST", "OPTIONS"]),
        ])
        # Each answers a POST with its JSON, and an OPTIONS with None once the route is
        # available (Bitrix24's while it is enabled, as the Flask blueprint had it).
        self._handlers: dict[str, Callable[[Request, dict[str, Any]],
                                           dict[str, Any] | None]] = {
            "bitrix24_events": self._bitrix24, "amocrm_webhooks": self._amocrm}
        # The rules name no host, so one adapter serves every request (binding one per
        # request, as bind_to_environ does, was a tenth of this layer's time).
        self._routes = self.url_map.bind("localhost")

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIXES) and not (
                "//" in path and SLASHES.sub("/", path).startswith(PREFIXES)):
            return self.app(environ, start_response)
        route: Route
        try:
            route = self._routes.match(_wsgi_text(path), environ["REQUEST_METHOD"],
                                       return_rule=True)
        except NotFound:
            return self.app(environ, start_response)  # answered as any unknown URL
        except MethodNotAllowed as exc:
            route = exc
        except RequestRedirect:
            # `//` merged, as Flask's routing answered it: the URL with this request's
            # scheme, host, mount point and query, which the shared adapter does not know.
            try:
                self.url_map.bind_to_environ(environ).match()
            except RequestRedirect as exact:
                route = exact
            else:  # cannot happen: the same map; answered as an unknown URL if it did
                return self.app(environ, start_response)
        return self._answer(environ, start_response, route)

    def _bitrix24(self, incoming: Request, _arguments: dict[str, Any]) -> dict[str, Any] | None:
        bitrix24.require_enabled(self.services)
        if incoming.method == "OPTIONS":
            return None
        stored = bitrix24.accept_event(self.services, incoming.mimetype,
                                       lambda: read_body(incoming))
        return {"status": "accepted", "id": stored.id}

    def _amocrm(self, incoming: Request, arguments: dict[str, Any]) -> dict[str, Any] | None:
        if incoming.method == "OPTIONS":
            return None
        if not amocrm.secret_ok(self.services, arguments["secret"]):
            raise amocrm.not_found()
        stored: Stored = amocrm.accept(self.services, "webhook", incoming.mimetype,
                                       lambda: read_body(incoming),
                                       incoming.headers.get("X-Amocrm-Requestid"))
        return {"status": "accepted", "id": stored.id, "duplicate": stored.duplicate}

    def _answer(self, environ: dict[str, Any], start_response: Callable[..., Any],
                route: Route) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = logs.request_id(environ.get("HTTP_X_REQUEST_ID"), self.request_ids)
        token = logs.bind(request_id=request_id)
        try:
            answer = self._outcome(environ, route)
        finally:
            logs.unbind(token)
        answer.headers["X-Request-Id"] = request_id
        answer.headers.setdefault("Content-Type", "application/json")
        answer.headers["Content-Length"] = str(len(answer.body))
        start_response(f"{answer.status} {HTTP_STATUS_CODES[answer.status].upper()}",
                       list(answer.headers.items()))
        label = route[0].rule if isinstance(route, tuple) else None
        self.services.metrics.observe_request(label, answer.status,
                                              time.perf_counter() - started)
        # HEAD: the headers of the answer without its body, as werkzeug answers it.
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [answer.body]

    def _outcome(self, environ: dict[str, Any], route: Route) -> Answer:
        if isinstance(route, RequestRedirect):
            redirect = route.get_response(environ)
            return Answer(redirect.status_code, redirect.get_data(), dict(redirect.headers))
        if isinstance(route, MethodNotAllowed):
            return _json(405, error_payload("method_not_allowed", route.description),
                         {"Allow": ALLOW})
        incoming = Request(environ)
        incoming.max_content_length = self.max_body
        rule, arguments = route
        try:
            payload = self._handlers[str(rule.endpoint)](incoming, arguments)
        except ApiError as exc:
            return _json(exc.status, error_payload(exc.code, exc.detail), exc.headers)
        except HTTPException as exc:  # 413, a client gone mid-body (400), ...
            status, code, detail, headers = http_error(exc, self.max_body)
            return _json(status, error_payload(code, detail), headers)
        except Exception as exc:
            if is_unavailable(exc):  # not stored: the CRM must send it again
                self.outages.refused(exc, incoming.method, incoming.path)
                return _json(503, error_payload(outage.CODE, outage.DETAIL), outage.HEADERS)
            log_unexpected(exc, incoming.method, incoming.path)
            return _json(500, error_payload("internal_error"))
        self.outages.answered()
        if payload is None:  # OPTIONS: Flask's default answer
            return Answer(200, headers={"Allow": ALLOW,
                                        "Content-Type": "text/html; charset=utf-8"})
        return _json(200, payload)


def _json(status: int, payload: Mapping[str, object],
          headers: Mapping[str, str] | None = None) -> Answer:
    # As Flask's JSON provider writes it: sorted keys, ASCII, a closing newline.
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    return Answer(status, body, dict(headers or {}))


def _wsgi_text(path: str) -> str:
    # PEP 3333 hands the path over as latin-1; Flask's routing reads it as UTF-8.
    try:
        return path.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # not from a WSGI server: already text
        return path
