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
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.wrappers import Request

from connector import logs
from connector.inbox import Stored
from connector.services import Services
from webhooks import amocrm, bitrix24
from webhooks.errors import ApiError, error_payload, log_unexpected, too_large_detail
from webhooks.validation import read_body

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# Only requests under these prefixes are matched here; every other passes straight to Flask.
PREFIXES = ("/bitrix24/events", "/amocrm/webhooks/")


class Intake:
    """WSGI middleware: POST /bitrix24/events and POST /amocrm/webhooks/<secret>.

    Its `url_map` is a werkzeug Map like Flask's (same matching, the same rule strings as
    metrics labels), so route audits can list these routes beside the app's."""

    def __init__(self, app: WSGIApp, services: Services, *, max_body: int | None,
                 request_ids: Callable[[], str]) -> None:
        self.app = app
        self.services = services
        self.max_body = max_body
        self.request_ids = request_ids
        self.url_map = Map([
            Rule("/bitrix24/events", endpoint="bitrix24_events", methods=["POST"]),
            Rule("/amocrm/webhooks/<secret>", endpoint="amocrm_webhooks", methods=["POST"]),
        ])
        self._handlers: dict[str, Callable[[Request, dict[str, Any]], dict[str, Any]]] = {
            "bitrix24_events": self._bitrix24, "amocrm_webhooks": self._amocrm}
        # The rules name no host, so one adapter serves every request (binding one per
        # request, as bind_to_environ does, was a tenth of this layer's time).
        self._routes = self.url_map.bind("localhost")

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIXES):
            return self.app(environ, start_response)
        try:
            rule, arguments = self._routes.match(_wsgi_text(path), environ["REQUEST_METHOD"],
                                                 return_rule=True)
        except NotFound:
            return self.app(environ, start_response)  # answered as any unknown URL
        except MethodNotAllowed as exc:
            return self._answer(environ, start_response, exc.valid_methods or [])
        except RequestRedirect as exc:  # `//` merged, as Flask's routing answers it
            return exc(environ, start_response)
        return self._answer(environ, start_response, rule, arguments)

    def _bitrix24(self, incoming: Request, _arguments: dict[str, Any]) -> dict[str, Any]:
        bitrix24.require_enabled(self.services)
        stored = bitrix24.accept_event(self.services, incoming.mimetype, self._body(incoming))
        return {"status": "accepted", "id": stored.id}

    def _amocrm(self, incoming: Request, arguments: dict[str, Any]) -> dict[str, Any]:
        if not amocrm.secret_ok(self.services, arguments["secret"]):
            raise amocrm.not_found()
        stored: Stored = amocrm.accept(self.services, "webhook", incoming.mimetype,
                                       self._body(incoming),
                                       incoming.headers.get("X-Amocrm-Requestid"))
        return {"status": "accepted", "id": stored.id, "duplicate": stored.duplicate}

    def _body(self, incoming: Request) -> bytes:
        incoming.max_content_length = self.max_body
        return read_body(incoming, self.max_body)

    def _answer(self, environ: dict[str, Any], start_response: Callable[..., Any],
                rule: Rule | list[str], arguments: dict[str, Any] | None = None,
                ) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = logs.request_id(environ.get("HTTP_X_REQUEST_ID"), self.request_ids)
        token = logs.bind(request_id=request_id)
        headers = {"X-Request-Id": request_id}
        try:
            status, payload = self._outcome(environ, rule, arguments or {}, headers)
        finally:
            logs.unbind(token)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        start_response(f"{status} {HTTPStatus(status).phrase}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            *headers.items()])
        label = rule.rule if isinstance(rule, Rule) else None
        self.services.metrics.observe_request(label, status, time.perf_counter() - started)
        return [body]

    def _outcome(self, environ: dict[str, Any], rule: Rule | list[str],
                 arguments: dict[str, Any],
                 headers: dict[str, str]) -> tuple[int, Mapping[str, object]]:
        incoming = Request(environ)
        if not isinstance(rule, Rule):  # another method: the ones allowed
            headers["Allow"] = ", ".join(sorted(rule))
            return 405, error_payload("method_not_allowed", MethodNotAllowed.description)
        try:
            return 200, self._handlers[str(rule.endpoint)](incoming, arguments)
        except ApiError as exc:
            headers.update(exc.headers)
            return exc.status, error_payload(exc.code, exc.detail)
        except RequestEntityTooLarge:
            return 413, error_payload("body_too_large", too_large_detail(self.max_body))
        except Exception as exc:
            log_unexpected(exc, incoming.method, incoming.path)
            return 500, error_payload("internal_error")


def _wsgi_text(path: str) -> str:
    # PEP 3333 hands the path over as latin-1; Flask's routing reads it as UTF-8.
    try:
        return path.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # not from a WSGI server: already text
        return path
