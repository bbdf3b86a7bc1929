"""HTTP side of the fake portal: routing, authentication, rate limit, faults, `batch`, the
`time` object and the OAuth token endpoint.

URLs (local-integrations/local-webhooks.md, settings/how-to-call-rest-api/general-principles.md):
  {base}/rest/{user_id}/{secret}/{method}[.json]   inbound webhook
  {base}/rest/{method}[.json]?auth={access_token}  OAuth application (auth in query or body)
  {base}/oauth/token/                              the OAuth server (settings/oauth/*.md)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from connector.sandbox import (
    bitrix24_automation,  # noqa: F401  (registers the app-context methods)
    bitrix24_widgets,  # noqa: F401  (users and placements)
)
from connector.sandbox.bitrix24_methods import METHODS, Context, ListPage, RestError
from connector.sandbox.bitrix24_php import ci_get, from_pairs, parse_query, php_json, scalar
from connector.sandbox.bitrix24_state import AppToken, Call, Fault
from connector.sandbox.faults import drop_connection

if TYPE_CHECKING:
    from collections.abc import Callable

    from connector.sandbox.bitrix24 import FakeBitrix24Portal

BATCH_LIMIT = 50  # settings/how-to-call-rest-api/batch.md: "no more than 50 subqueries"
REFERENCE = re.compile(r"\$result((?:\[[^\[\]]*\])+)")  # batch.md: $result[cmd][field]...
JSON_TYPE = "application/json; charset=utf-8"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Tests make thousands of requests; keep werkzeug's access log out of the output."""


class PortalApp:
    handler = _QuietHandler

    def __init__(self, portal: FakeBitrix24Portal) -> None:
        self.portal = portal

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        path = request.path
        if path.rstrip("/") == "/oauth/token":
            response = self._oauth(request)
        elif path.startswith("/rest/"):
            response = self._rest(request, environ)
        else:
            response = Response("Not Found", status=404, content_type="text/plain")
        return response(environ, start_response)

    # -- REST ------------------------------------------------------------------------------
    def _rest(self, request: Request, environ: dict[str, Any]) -> Response:
        portal = self.portal
        parts = [p for p in request.path[len("/rest/"):].split("/") if p]
        method = (parts[-1] if parts else "").lower()
        if method.endswith(".json"):  # ".json — response format. This suffix can be omitted"
            method = method[:-5]
        portal.gate.enter()
        params = self._params(request)
        auth_token = params.pop("auth", None)
        with portal.lock:
            portal.http_requests += 1
            portal.request_log.add(portal.clock.monotonic())
            fault = self._take_fault(None)
            delay = self._take_delay()
            if fault is None and not delay:
                fault, delay = portal.chaos_draw()
        delay += portal.latency
        if delay:
            time.sleep(delay)  # real time: the point is the client's socket timeout
        if portal.is_down:
            drop_connection(environ)
        if fault is not None:
            return self._fault(fault, method, params, environ)
        with portal.lock:
            started = portal.clock.time()
            if portal.rate_limit_enabled and not portal.bucket.admit():
                portal.limit_errors += 1
                return self._error(RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
                                   method, params)
            try:
                ctx = self._authenticate(parts, auth_token)
            except RestError as exc:
                return self._error(exc, method, params)
            try:
                out = self.run(ctx, method, params)
            except RestError as exc:
                return self._json(exc.body(), exc.status)
            out["time"] = self.time_object(started, "" if method == "batch" else method)
            return self._json(out, 200)

    def _params(self, request: Request) -> dict[str, Any]:
        """Query string plus body: JSON when the content type says so, otherwise PHP-style
        form fields (CORE reads JSON only for application/json)."""
        params = parse_query(request.query_string.decode("utf-8", "replace"))
        if request.mimetype == "application/json":
            try:
                body = json.loads(request.get_data() or b"{}")
            except ValueError:
                body = {}
            if isinstance(body, dict):
                params.update(body)
        elif request.mimetype == "multipart/form-data":
            params.update(from_pairs(request.form.items(multi=True)))
        else:
            params.update(parse_query(request.get_data().decode("utf-8", "replace")))
        return params

    def _authenticate(self, parts: list[str], token: Any) -> Context:
        portal = self.portal
        if len(parts) == 3:
            user, secret = parts[0], parts[1]
            if user.isdigit() and (int(user), secret) in portal.webhooks:
                return Context(portal, "webhook", int(user))
            # _includes/system-errors.md: 401 NO_AUTH_FOUND "Wrong authorization data"
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        if len(parts) != 1:
            raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        if not token:
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        issued: AppToken | None = portal.tokens.get(str(token))
        if issued is None:
            code, description = portal.invalid_token_error
            raise RestError(401, code, description)
        if portal.clock.time() >= issued.expires_at:
            # settings/oauth/auto-renewal.md: "Wait for the expired_token error with status 401"
            raise RestError(401, "expired_token", "The access token provided has expired.")
        return Context(portal, "oauth", issued.user_id, access_token=issued.access_token)

    def run(self, ctx: Context, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Execute one method (a top-level call or a batch command) and record it."""
        portal = self.portal
        at = portal.clock.time()
        status = 200
        try:
            if method == "batch":
                if ctx.batch is not None:  # batch.md: nesting ends with this error
                    raise RestError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED",
                                    "Method is not allowed for batch usage")
                portal.records.calls.append(Call(method, _recorded(params), 200, at))
                return self._batch(ctx, params)
            handler = METHODS.get(method)
            if handler is None:
                raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
            fault = self._take_fault(method)
            if fault is not None:
                raise RestError(fault.status, fault.error, fault.description)
            if portal.operating.blocked(method):
                # limits.md: 429 once the method's accumulated time is over the limit
                raise RestError(429, "OPERATION_TIME_LIMIT",
                                "Method is blocked due to operation time limit.")
            portal.operating.record(method)
            result = handler(ctx, params)
            if isinstance(result, ListPage):
                out: dict[str, Any] = {"result": result.items, "total": result.total}
                if result.next is not None:
                    out["next"] = result.next
                return out
            return {"result": result}
        except RestError as exc:
            status = exc.status
            raise
        finally:
            if method != "batch" or status != 200:
                portal.records.calls.append(Call(method, _recorded(params), status, at,
                                                 ctx.batch))

    def _batch(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        """batch.md: always 200; each command's error goes to result_error under its name while
        the others keep their results; halt=1 stops at the first error; commands past the
        50th get ERROR_BATCH_LENGTH_EXCEEDED. The batch is one request for the rate limit."""
        halt = str(ci_get(params, "halt", "0")).lower() in ("1", "true", "y")
        cmd = ci_get(params, "cmd")
        commands = list(cmd.items()) if isinstance(cmd, Mapping) else list(
            enumerate(cmd)) if isinstance(cmd, list) else []
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for index, (name, command) in enumerate(commands):
            name = str(name)
            if index >= BATCH_LIMIT:
                errors[name] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                                "error_description": "Max batch length exceeded"}
                if halt:
                    break
                continue
            method, _, query = str(command).partition("?")
            method = method.strip().lower()
            sub = _resolve(parse_query(query), results)
            sub.pop("auth", None)  # the outer request's authorization applies (CORE)
            started = self.portal.clock.time()
            try:
                out = self.run(replace(ctx, batch=name), method, sub)
            except RestError as exc:
                errors[name] = {"error": exc.error, "error_description": exc.description}
                if halt:
                    break
                continue
            results[name] = out["result"]
            if "total" in out:
                totals[name] = out["total"]
            if "next" in out:
                nexts[name] = out["next"]
            times[name] = self.time_object(started, method)
        return {"result": {"result": results, "result_error": errors, "result_total": totals,
                           "result_next": nexts, "result_time": times}}

    def time_object(self, started: float, method: str) -> dict[str, Any]:
        """api-reference/data-types.md#time; `operating` is the method's accumulated time
        (limits.md); an outer batch is not accounted."""
        portal = self.portal
        finished = max(portal.clock.time(), started)
        iso = portal.now().isoformat()
        return {"start": started, "finish": finished, "duration": finished - started,
                "processing": finished - started, "date_start": iso, "date_finish": iso,
                "operating_reset_at": portal.operating.reset_at(method) if method else int(
                    finished + 600), "operating": portal.operating.operating(method)
                if method else 0}

    # -- faults ----------------------------------------------------------------------------
    def _take_fault(self, method: str | None) -> Fault | None:
        for fault in self.portal.faults:
            if fault.method == method:
                if fault.after > 0:
                    fault.after -= 1
                    return None
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.portal.faults.remove(fault)
                return fault
        return None

    def _take_delay(self) -> float:
        delays = self.portal.delays
        if not delays:
            return 0.0
        delays[0][0] -= 1
        seconds = delays[0][1]
        if delays[0][0] <= 0:
            delays.popleft()
        return seconds

    def _fault(self, fault: Fault, method: str, params: dict[str, Any],
               environ: dict[str, Any]) -> Response:
        if fault.kind == "reset":
            self._record(method, params, 0)
            drop_connection(environ)
        if fault.kind == "malformed":
            self._record(method, params, fault.status)
            return Response(fault.body, status=fault.status, content_type=fault.content_type)
        return self._error(RestError(fault.status, fault.error, fault.description), method,
                           params)

    # -- responses -------------------------------------------------------------------------
    def _record(self, method: str, params: dict[str, Any], status: int) -> None:
        with self.portal.lock:
            self.portal.records.calls.append(Call(method, _recorded(params), status,
                                                  self.portal.clock.time()))

    def _error(self, exc: RestError, method: str, params: dict[str, Any]) -> Response:
        self._record(method, params, exc.status)
        return self._json(exc.body(), exc.status)

    @staticmethod
    def _json(body: Any, status: int) -> Response:
        # PHP json_encode: [] for empty maps, \/ in strings; error bodies carry no `time`.
        text = json.dumps(php_json(body)).replace("/", "\\/")
        response = Response(text, status=status, content_type=JSON_TYPE)
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    # -- OAuth server ----------------------------------------------------------------------
    def _oauth(self, request: Request) -> Response:
        """settings/oauth/index.md (authorization_code), auto-renewal.md (refresh_token),
        error-codes.md (invalid_client, invalid_grant, invalid_request). The docs give no
        HTTP status for errors; 400 as in OAuth 2.0 (RFC 6749 5.2)."""
        portal = self.portal
        params = parse_query(request.query_string.decode("utf-8", "replace"))
        params.update(parse_query(request.get_data().decode("utf-8", "replace")))
        with portal.lock:
            portal.oauth_requests += 1
            grant = params.get("grant_type")
            if (params.get("client_id") != portal.client_id
                    or params.get("client_secret") != portal.client_secret):
                return self._oauth_error("invalid_client", "Invalid client credentials")
            if grant == "refresh_token":
                old = portal.refresh_tokens.pop(str(params.get("refresh_token")), None)
                if old is None:
                    return self._oauth_error("invalid_grant", "Invalid refresh token")
                # "Retain it instead of the previous one": the used refresh token is spent.
                return self._json(portal.issue_tokens(old.user_id), 200)
            if grant == "authorization_code":
                found = portal.auth_codes.pop(str(params.get("code")), None)
                if found is None:
                    return self._oauth_error("invalid_grant", "Invalid authorization code")
                user_id, valid_until = found
                if portal.clock.time() > valid_until:
                    return self._oauth_error("expired_token",
                                             "The authorization token provided has expired.")
                body = portal.issue_tokens(user_id)
                token = portal.tokens[body["access_token"]]
                return self._json(portal.token_json(token, with_user=False), 200)
            return self._oauth_error("invalid_request", "Unsupported grant_type")

    def _oauth_error(self, error: str, description: str) -> Response:
        return self._json({"error": error, "error_description": description}, 400)


def _recorded(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "auth"}


def _resolve(value: Any, results: Mapping[str, Any]) -> Any:
    """Substitute `$result[cmd][key]...` from earlier commands (batch.md), as CORE's
    processBatchElement does: the path is walked until its first missing key and the node
    reached there is the value (so a reference to row 49 of a page of 20 rows gives that
    page, and one to a command that failed gives the map of all results). A value that is
    only the reference takes the node as is (even an array); inside a longer string it is
    interpolated when the node is a string or a number, and left as written otherwise."""
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if not isinstance(value, str) or "$result" not in value:
        return value
    whole = REFERENCE.fullmatch(value)
    if whole:
        return php_json(_lookup(whole.group(1), results))

    def interpolate(match: re.Match[str]) -> str:
        found = _lookup(match.group(1), results)
        if isinstance(found, dict | list) or found is None:
            return match.group(0)
        return scalar(found)

    return REFERENCE.sub(interpolate, value)


def _lookup(path: str, results: Mapping[str, Any]) -> Any:
    node: Any = results
    for key in re.findall(r"\[([^\[\]]*)\]", path):
        if isinstance(node, Mapping) and key in node and node[key] is not None:
            node = node[key]
        elif (isinstance(node, list) and key.isdigit() and int(key) < len(node)
              and node[int(key)] is not None):
            node = node[int(key)]
        else:
            break  # CORE: isset() fails, the walk stops where it is
    return node
