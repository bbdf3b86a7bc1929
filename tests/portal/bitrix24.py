"""A fake Bitrix24 portal: a real local HTTP server speaking the documented REST formats.

Formats follow the official docs (bitrix24/b24restdocs): calls at `/rest/{user}/{secret}/
{method}[.json]` with a JSON or form body; answers `{"result": ..., "time": {...}}` or
`{"error": CODE, "error_description": ...}` (no `time` on errors); lists of 50 with `next`
and `total`, and `start=-1` for the fast mode (`total: 0`, no `next`); `batch` with
`cmd[name]="method?php-query"` answering `result/result_error/result_total/result_next/
result_time` (empty maps as `[]`, PHP style); the leaky bucket answering 503
`QUERY_LIMIT_EXCEEDED` (settings/performance/limits.md); legacy CRM errors with an empty code
and HTTP 400 ("Not found").
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

PORTAL_TZ = timezone(timedelta(hours=3))
PAGE = 50


class VirtualClock:
    """Time that only moves when someone sleeps: a 2 requests/s bucket runs at full speed."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(seconds, 0.0)


class RealClock:
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)


def php_decode(query: str) -> dict[str, Any]:
    """`a[b][]=1&c=2` -> {"a": {"b": ["1"]}, "c": "2"}, the way PHP's parse_str reads it."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        parts = [key.split("[", 1)[0], *re.findall(r"\[([^\]]*)\]", key)]
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return root


class ApiError(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        self.status, self.code, self.description = status, code, description


@dataclass
class Fault:
    status: int
    body: Any


@dataclass
class Portal:
    """What the portal holds and what it was asked."""

    deals: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    userfields: list[dict[str, Any]] = field(default_factory=list)
    bound_events: list[dict[str, str]] = field(default_factory=list)
    robots: dict[str, dict[str, Any]] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)
    fired_triggers: list[dict[str, Any]] = field(default_factory=list)
    bizproc_events: list[dict[str, Any]] = field(default_factory=list)
    timeline_comments: list[dict[str, Any]] = field(default_factory=list)
    contact_updates: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    http_requests: int = 0
    limit_errors: int = 0
    app_only: bool = False  # True: an inbound webhook, refused app-context methods


class FakeBitrix24:
    def __init__(self, *, secret: str = "hooksecret0001", rate: float = 2.0, burst: int = 50,
                 clock: VirtualClock | RealClock | None = None) -> None:
        self.secret = secret
        self.rate, self.burst = rate, burst
        self.clock = clock or RealClock()
        self.state = Portal()
        self._level = 0.0
        self._at = self.clock.monotonic()
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._delays: list[float] = []
        self._modified = datetime(2026, 11, 1, 9, 0, tzinfo=PORTAL_TZ)
        # OAuth (settings/oauth): access tokens -> still valid; refresh tokens are replaced.
        self.client_id, self.client_secret = "local.fake.1", "fake-client-secret"
        self.access_tokens: dict[str, bool] = {}
        self.refresh_tokens: set[str] = set()
        self.refreshes = 0
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.host = f"127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FakeBitrix24:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}/rest/1/{self.secret}/"

    # -- test controls ---------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 503, body: Any = None) -> None:
        body = body if body is not None else (
            {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}
            if status >= 500 and status != 503 else
            {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
        self._faults += [Fault(status, body) for _ in range(count)]

    def delay_next(self, count: int, seconds: float) -> None:
        self._delays += [seconds] * count

    def tick(self, minutes: int = 1) -> str:
        """Move the portal's modification clock; returns the new DATE_MODIFY."""
        self._modified += timedelta(minutes=minutes)
        return self._modified.isoformat()

    def put_contact(self, contact_id: int, **fields: Any) -> dict[str, Any]:
        contact = {"ID": str(contact_id), "NAME": f"Client {contact_id}", "LAST_NAME": "",
                   "BIRTHDATE": "", "DATE_MODIFY": self.tick(), **fields}
        self.state.contacts[contact_id] = {**self.state.contacts.get(contact_id, {}), **contact}
        return self.state.contacts[contact_id]

    def put_deal(self, deal_id: int, *, contact: int | None, amount: str, won: bool = True,
                 category: int = 0, lost: bool = False) -> dict[str, Any]:
        stage = "WON" if won else ("LOSE" if lost else "NEW")
        semantic = "S" if won else ("F" if lost else "P")
        prefix = f"C{category}:" if category else ""
        deal = {"ID": str(deal_id), "TITLE": f"Deal #{deal_id}", "STAGE_ID": prefix + stage,
                "STAGE_SEMANTIC_ID": semantic, "CATEGORY_ID": str(category),
                "OPPORTUNITY": amount, "CURRENCY_ID": "RUB",
                "CONTACT_ID": str(contact) if contact else None, "CLOSED": "Y" if won else "N",
                "DATE_CREATE": self._modified.isoformat(), "DATE_MODIFY": self.tick(),
                "CLOSEDATE": self._modified.isoformat()}
        self.state.deals[deal_id] = deal
        return deal

    # -- HTTP ------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        status, body = self._handle(request)
        response = Response(json.dumps(body, ensure_ascii=False), status=status,
                            content_type="application/json; charset=utf-8")
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.state.http_requests += 1
            delay = self._delays.pop(0) if self._delays else 0.0
            fault = self._faults.pop(0) if self._faults else None
        if delay:
            time.sleep(delay)  # real time: the client's timeout is real too
        if fault is not None:
            return fault.status, fault.body
        if request.path.rstrip("/") == "/oauth/token":
            return self._oauth(php_decode(request.query_string.decode()))
        params = self._params(request)
        oauth = re.fullmatch(r"/rest/([a-z0-9_.]+?)(?:\.json)?/?", request.path)
        match = oauth or re.fullmatch(r"/rest/(\d+)/([^/]+)/([a-z0-9_.]+?)(?:\.json)?/?",
                                      request.path)
        if match is None:
            return 404, {"error": "ERROR_METHOD_NOT_FOUND",
                         "error_description": "Method not found!"}
        if oauth is not None:
            valid = self.access_tokens.get(str(params.pop("auth", "")))
            if valid is None:
                return 401, {"error": "invalid_token",
                             "error_description": "Unable to get application by token"}
            if not valid:
                return 401, {"error": "expired_token",
                             "error_description": "The access token provided has expired."}
        elif match.group(2) != self.secret:
            return 401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
        if not self._admit():
            self.state.limit_errors += 1
            return 503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        method = match.group(1) if oauth is not None else match.group(3)
        started = datetime.now(UTC)
        try:
            if method == "batch":
                self.state.calls["batch"] += 1
                result: Any = self._batch(params)
                extra: dict[str, Any] = {}
            else:
                result, extra = self._call(method, params)
        except ApiError as exc:
            return exc.status, {"error": exc.code, "error_description": exc.description}
        return 200, {"result": result, **extra, "time": _time(started)}

    def issue_tokens(self) -> dict[str, Any]:
        """A token pair as ONAPPINSTALL and the token endpoint hand it out."""
        self.refreshes += 1
        access, refresh = f"access-{self.refreshes:04d}", f"refresh-{self.refreshes:04d}"
        self.access_tokens[access] = True
        self.refresh_tokens.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": 3600,
                "client_endpoint": f"http://{self.host}/rest/", "member_id": "fake-member",
                "domain": "oauth.bitrix.info", "scope": "crm,bizproc", "status": "L",
                "server_endpoint": f"http://{self.host}/rest/"}

    def expire_tokens(self) -> None:
        self.access_tokens = dict.fromkeys(self.access_tokens, False)

    def _oauth(self, params: dict[str, Any]) -> tuple[int, Any]:
        if (params.get("client_id"), params.get("client_secret")) != (
                self.client_id, self.client_secret):
            return 401, {"error": "invalid_client", "error_description": "Invalid client"}
        refresh = params.get("refresh_token")
        if params.get("grant_type") != "refresh_token" or refresh not in self.refresh_tokens:
            return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
        self.refresh_tokens.discard(refresh)
        return 200, self.issue_tokens()

    def _admit(self) -> bool:
        """Leaky bucket: +1 per request, drains `rate` per second; over `burst` is refused."""
        with self._lock:
            now = self.clock.monotonic()
            self._level = max(0.0, self._level - (now - self._at) * self.rate)
            self._at = now
            if self._level + 1 > self.burst:
                return False
            self._level += 1
            return True

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        params = php_decode(request.query_string.decode())
        if request.mimetype == "application/json" and request.data:
            params.update(json.loads(request.data))
        elif request.data:
            params.update(php_decode(request.get_data(as_text=True)))
        return params

    def _batch(self, params: dict[str, Any]) -> dict[str, Any]:
        commands = params.get("cmd") or {}
        halt = str(params.get("halt", "0")) in ("1", "true")
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for position, (name, command) in enumerate(commands.items()):
            if position >= PAGE:
                errors[name] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                                "error_description": "Max batch length exceeded"}
                continue
            method, _, query = str(command).partition("?")
            query = re.sub(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)",
                           lambda m: _reference(results, m), query)
            started = datetime.now(UTC)
            try:
                result, extra = self._call(method, php_decode(query))
            except ApiError as exc:
                errors[name] = {"error": exc.code, "error_description": exc.description}
                if halt:
                    break
                continue
            results[name] = result
            if "total" in extra:
                totals[name] = extra["total"]
            if "next" in extra:
                nexts[name] = extra["next"]
            times[name] = _time(started)
        # PHP's json_encode writes an empty map as [].
        return {key: value or [] for key, value in (
            ("result", results), ("result_error", errors), ("result_total", totals),
            ("result_next", nexts), ("result_time", times))}

    def _call(self, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        self.state.calls[method] += 1
        handler = _METHODS.get(method)
        if handler is None:
            raise ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        if method in _APP_ONLY and self.state.app_only:
            raise ApiError(403, "ACCESS_DENIED", "Application context required")
        with self._lock:
            return handler(self, params)

    # -- methods ---------------------------------------------------------------------------
    def _get(self, table: dict[int, dict[str, Any]], params: dict[str, Any]) -> Any:
        raw = params.get("id", params.get("ID"))
        if not str(raw or "").isdigit():
            raise ApiError(400, "", "ID is not defined or invalid.")
        if int(raw) not in table:
            raise ApiError(400, "", "Not found")
        return dict(table[int(raw)]), {}

    def _list(self, table: dict[int, dict[str, Any]], params: dict[str, Any]) -> Any:
        rows = [row for row in table.values() if _matches(row, params.get("filter") or {})]
        order = params.get("order") or {"ID": "ASC"}
        for key, direction in reversed(list(order.items())):
            rows.sort(key=lambda row, k=key: _sortable(row.get(k)),
                      reverse=str(direction).upper() == "DESC")
        select = params.get("select")
        if isinstance(select, dict):
            select = list(select.values())
        if select and "*" not in select:
            rows = [{k: row.get(k) for k in ["ID", *select]} for row in rows]
        start = int(params.get("start", 0) or 0)
        if start < 0:  # fast mode: no count, no next (settings/performance/huge-data.md)
            return rows[:PAGE], {"total": 0}
        page = rows[start:start + PAGE]
        extra: dict[str, Any] = {"total": len(rows)}
        if start + PAGE < len(rows):
            extra["next"] = start + PAGE
        return page, extra

    def deal_get(self, p: dict[str, Any]) -> Any:
        return self._get(self.state.deals, p)

    def deal_list(self, p: dict[str, Any]) -> Any:
        return self._list(self.state.deals, p)

    def contact_get(self, p: dict[str, Any]) -> Any:
        return self._get(self.state.contacts, p)

    def contact_list(self, p: dict[str, Any]) -> Any:
        return self._list(self.state.contacts, p)

    def contact_update(self, p: dict[str, Any]) -> Any:
        contact_id = int(p.get("id") or 0)
        if contact_id not in self.state.contacts:
            raise ApiError(400, "", "Contact is not found")
        known = {uf["FIELD_NAME"] for uf in self.state.userfields}
        # "An incorrect field in fields will be ignored" (crm-contact-update.md)
        fields = {k: v for k, v in (p.get("fields") or {}).items()
                  if not k.startswith("UF_") or k in known}
        self.state.contacts[contact_id].update(fields)
        self.state.contacts[contact_id]["DATE_MODIFY"] = self.tick(0)
        self.state.contact_updates.append((contact_id, fields))
        return True, {}

    def userfield_list(self, p: dict[str, Any]) -> Any:
        return [dict(uf) for uf in self.state.userfields], {"total": len(self.state.userfields)}

    def userfield_add(self, p: dict[str, Any]) -> Any:
        fields = p.get("fields") or {}
        name = str(fields.get("FIELD_NAME", "")).removeprefix("UF_")
        name = "UF_CRM_" + name.removeprefix("CRM_")
        if not fields.get("USER_TYPE_ID"):
            raise ApiError(400, "", "The 'USER_TYPE_ID' field is not found.")
        if any(uf["FIELD_NAME"] == name for uf in self.state.userfields):
            raise ApiError(400, "", f"Field {name} already exists")
        uf_id = 100 + len(self.state.userfields)
        self.state.userfields.append({"ID": str(uf_id), "FIELD_NAME": name,
                                      "USER_TYPE_ID": fields["USER_TYPE_ID"]})
        return uf_id, {}

    def userfield_delete(self, p: dict[str, Any]) -> Any:
        self.state.userfields = [uf for uf in self.state.userfields
                                 if uf["ID"] != str(p.get("id"))]
        return True, {}

    def event_get(self, p: dict[str, Any]) -> Any:
        return [{**e, "auth_type": "0", "offline": 0} for e in self.state.bound_events], {}

    def event_bind(self, p: dict[str, Any]) -> Any:
        entry = {"event": str(p.get("event", "")).upper(), "handler": str(p.get("handler"))}
        if entry in self.state.bound_events:
            raise ApiError(400, "ERROR_HANDLER_ALREADY_EXIST", "Handler already exists!")
        self.state.bound_events.append(entry)
        return True, {}

    def event_unbind(self, p: dict[str, Any]) -> Any:
        before = len(self.state.bound_events)
        self.state.bound_events = [e for e in self.state.bound_events if not (
            e["event"] == str(p.get("event", "")).upper() and e["handler"] == p.get("handler"))]
        return {"count": before - len(self.state.bound_events)}, {}

    def robot_add(self, p: dict[str, Any]) -> Any:
        if p.get("CODE") in self.state.robots:
            raise ApiError(400, "ERROR_ACTIVITY_ALREADY_INSTALLED",
                           "Activity or Automation rule already installed!")
        self.state.robots[str(p["CODE"])] = p
        return True, {}

    def robot_list(self, p: dict[str, Any]) -> Any:
        return list(self.state.robots), {}

    def robot_delete(self, p: dict[str, Any]) -> Any:
        if self.state.robots.pop(str(p.get("CODE")), None) is None:
            raise ApiError(400, "ERROR_ACTIVITY_NOT_FOUND",
                           "Activity or Automation rule not found!")
        return True, {}

    def event_send(self, p: dict[str, Any]) -> Any:
        token = str(p.get("EVENT_TOKEN") or p.get("event_token") or "")
        if not token or any(e["EVENT_TOKEN"] == token for e in self.state.bizproc_events):
            raise ApiError(403, "ACCESS_DENIED", "Access denied!")
        self.state.bizproc_events.append({"EVENT_TOKEN": token,
                                          "RETURN_VALUES": p.get("RETURN_VALUES") or {},
                                          "LOG_MESSAGE": p.get("LOG_MESSAGE")})
        return True, {}

    def trigger_add(self, p: dict[str, Any]) -> Any:
        self.state.triggers[str(p["CODE"])] = str(p.get("NAME"))
        return True, {}

    def trigger_list(self, p: dict[str, Any]) -> Any:
        return [{"CODE": c, "NAME": n} for c, n in self.state.triggers.items()], {}

    def trigger_delete(self, p: dict[str, Any]) -> Any:
        self.state.triggers.pop(str(p.get("CODE")), None)
        return True, {}

    def trigger_execute(self, p: dict[str, Any]) -> Any:
        if str(p.get("OWNER_TYPE_ID")) != "2":
            raise ApiError(400, "", "Incorrect parameter OWNER_TYPE_ID.")
        if str(p.get("CODE")) not in self.state.triggers:
            raise ApiError(400, "", f"Trigger with code {p.get('CODE')} is not registered.")
        self.state.fired_triggers.append({"CODE": p["CODE"], "OWNER_ID": str(p["OWNER_ID"])})
        return True, {}

    def timeline_comment_add(self, p: dict[str, Any]) -> Any:
        self.state.timeline_comments.append(p.get("fields") or {})
        return len(self.state.timeline_comments), {}


_METHODS: dict[str, Callable[[FakeBitrix24, dict[str, Any]], Any]] = {
    "crm.deal.get": FakeBitrix24.deal_get, "crm.deal.list": FakeBitrix24.deal_list,
    "crm.contact.get": FakeBitrix24.contact_get, "crm.contact.list": FakeBitrix24.contact_list,
    "crm.contact.update": FakeBitrix24.contact_update,
    "crm.contact.userfield.list": FakeBitrix24.userfield_list,
    "crm.contact.userfield.add": FakeBitrix24.userfield_add,
    "crm.contact.userfield.delete": FakeBitrix24.userfield_delete,
    "event.get": FakeBitrix24.event_get, "event.bind": FakeBitrix24.event_bind,
    "event.unbind": FakeBitrix24.event_unbind,
    "bizproc.robot.add": FakeBitrix24.robot_add, "bizproc.robot.list": FakeBitrix24.robot_list,
    "bizproc.robot.delete": FakeBitrix24.robot_delete,
    "bizproc.event.send": FakeBitrix24.event_send,
    "crm.automation.trigger.add": FakeBitrix24.trigger_add,
    "crm.automation.trigger.list": FakeBitrix24.trigger_list,
    "crm.automation.trigger.delete": FakeBitrix24.trigger_delete,
    "crm.automation.trigger.execute": FakeBitrix24.trigger_execute,
    "crm.timeline.comment.add": FakeBitrix24.timeline_comment_add,
}
# Refused to inbound webhooks: "Application context required".
_APP_ONLY = {"event.bind", "event.get", "event.unbind", "bizproc.robot.add",
             "bizproc.robot.list", "bizproc.robot.delete", "crm.automation.trigger.add",
             "crm.automation.trigger.list", "crm.automation.trigger.delete"}


def _time(started: datetime) -> dict[str, Any]:
    finished = datetime.now(UTC)
    return {"start": started.timestamp(), "finish": finished.timestamp(),
            "duration": (finished - started).total_seconds(),
            "processing": (finished - started).total_seconds(),
            "date_start": started.astimezone(PORTAL_TZ).isoformat(timespec="seconds"),
            "date_finish": finished.astimezone(PORTAL_TZ).isoformat(timespec="seconds"),
            "operating_reset_at": int(finished.timestamp()) + 600, "operating": 0}


def _reference(results: dict[str, Any], match: re.Match[str]) -> str:
    node: Any = results.get(match.group(1))
    for part in re.findall(r"\[([^\]]*)\]", match.group(2)):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return match.group(0)
    return str(node)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(v) for v in value.values()]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _sortable(value: Any) -> Any:
    text = str(value or "")
    return (0, int(text)) if text.isdigit() else (1, text)


def _matches(row: dict[str, Any], filter_: dict[str, Any]) -> bool:
    for raw_key, wanted in filter_.items():
        key = unquote(raw_key)
        operator = re.match(r"^(>=|<=|!=|>|<|=|@|!)?", key).group(0)  # type: ignore[union-attr]
        name = key[len(operator):]
        value = row.get(name)
        if name in ("DATE_MODIFY", "DATE_CREATE") and value:
            have: Any = datetime.fromisoformat(str(value))
            want: Any = datetime.fromisoformat(str(wanted))
        elif str(value or "").lstrip("-").replace(".", "", 1).isdigit() and \
                str(wanted).lstrip("-").replace(".", "", 1).isdigit():
            have, want = float(value), float(wanted)
        else:
            have, want = str(value or ""), str(wanted)
        ok = {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want,
              "!=": have != want, "!": have != want, "=": have == want, "": have == want,
              "@": str(value) in _as_list(wanted)}[operator]
        if not ok:
            return False
    return True


# -- what the portal sends to our service (form-encoded, api-reference/events/index.md) -----
def _form(pairs: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in pairs.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict):
            out += _form(value, name)
        elif isinstance(value, list):
            out += _form({str(i): v for i, v in enumerate(value)}, name)
        else:
            out.append((name, "" if value is None else str(value)))
    return out


def form_encode(data: dict[str, Any]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(_form(data)).encode()


def event_body(event: str, entity_id: int | str | None, *, application_token: str,
               domain: str = "acme.bitrix24.ru", member_id: str = "fake-member",
               ts: int = 1736405807, tokens: dict[str, Any] | None = None) -> bytes:
    """An event as the portal POSTs it: event, event_handler_id, data[FIELDS][ID], ts, auth[]."""
    auth = {"domain": domain, "client_endpoint": f"https://{domain}/rest/",
            "server_endpoint": "https://oauth.bitrix.info/rest/", "member_id": member_id,
            "application_token": application_token, **(tokens or {})}
    data: dict[str, Any] = {"FIELDS": {"ID": str(entity_id)}} if entity_id is not None else \
        {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "ru"}
    return form_encode({"event": event, "event_handler_id": "201", "data": data,
                        "ts": str(ts), "auth": auth})


def robot_body(code: str, deal_id: int, properties: dict[str, str], *, event_token: str,
               application_token: str, domain: str = "acme.bitrix24.ru",
               member_id: str = "fake-member") -> bytes:
    """A robot handler call (bizproc restactivity: workflow_id, code, document_id, ...)."""
    return form_encode({
        "workflow_id": "664fa13bbbb410.99176768", "code": code,
        "document_id": ["crm", "CCrmDocumentDeal", f"DEAL_{deal_id}"],
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"], "event_token": event_token,
        "properties": properties, "use_subscription": "Y", "timeout_duration": "660",
        "ts": "1716494651",
        "auth": {"domain": domain, "member_id": member_id, "application_token": application_token,
                 "client_endpoint": f"https://{domain}/rest/", "status": "L", "user_id": "1"}})
