"""A fake amoCRM account: a real local HTTP server speaking API v4 as documented.

Lists are HAL (`application/hal+json`, `_embedded`, `_links.next`, at most 250), an empty
list or a missing entity is 204 with no body, errors are `application/problem+json`, and the
limits answer as the real gateway does: 429 and 403 with an nginx HTML page and no
Retry-After. OAuth refresh tokens are single-use; `consent` plays the administrator allowing
access on the authorization page (code, state, referer and platform back to the redirect
URI). Webhook bodies it sends are form-encoded with API v2 keys.

Faults: fail_next (an answer), reset_next (no answer), delay_next (a slow answer; the call
still runs), `latency` (every request held that long: a distant account), down()/up()
(connections refused), `chaos` (connector.sandbox.faults.Chaos, random faults from a seed)
and `gate` (hold requests at the door). `request_log` has the arrival time of every
request, for rate assertions.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from connector.sandbox.bitrix24_php import build_query, parse_query
from connector.sandbox.bitrix24_state import Clock, RealClock
from connector.sandbox.faults import Chaos, Gate, RequestLog, drop_connection

NUMBER = re.compile(r"/\d+")
# The custom field types of /api/v4/{entity}/custom_fields (custom-fields docs).
FIELD_TYPES = frozenset({
    "text", "numeric", "checkbox", "select", "multiselect", "date", "url", "textarea",
    "radiobutton", "streetaddress", "smart_address", "birthday", "legal_entity", "date_time",
    "price", "category", "items", "tracking_data", "linked_entity", "chained_list", "monetary",
    "file", "payer", "supplier"})
PRICE_FIELD_ID = 1285349  # the products catalog's PRICE field (type "price")
HTML_429 = "<html><head><title>429 Too Many Requests</title></head><body></body></html>"
HTML_403 = "<html><head><title>403 Forbidden</title></head><body><center>nginx</center>" \
           "</body></html>"


@dataclass
class Account:
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    # catalogs-api: elements of lists (the products catalog among them), by id
    elements: dict[int, dict[str, Any]] = field(default_factory=dict)
    custom_fields: list[dict[str, Any]] = field(default_factory=list)
    lead_fields: list[dict[str, Any]] = field(default_factory=list)  # /api/v4/leads/custom_fields
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    contact_patches: list[list[dict[str, Any]]] = field(default_factory=list)
    contact_patched_at: list[float] = field(default_factory=list)  # clock.time() of each above
    tags_added: list[tuple[str, int, str]] = field(default_factory=list)  # entity, id, tag
    salesbot_runs: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    http_requests: int = 0
    too_many: int = 0
    refreshes: int = 0


class FakeAmoCRM:
    def __init__(self, *, rate: float = 7.0, burst: int = 7,
                 clock: Clock | None = None, latency: float = 0.0) -> None:
        self.rate, self.burst = rate, burst
        # Seconds every request is held before it is answered, in real time: an account a
        # network round trip away (benchmarks/latency.py), spent before the request runs.
        self.latency = latency
        self.clock = clock or RealClock()
        self.state = Account()
        self.client_id, self.client_secret = "fake-integration-id", "fake-integration-secret"
        self.access: dict[str, bool] = {"long-lived-token": True}
        self.refresh_tokens: set[str] = set()
        self.codes: set[str] = set()
        self.blocked = False
        self.subdomain, self.account_id = "example", 28805383
        self._faults: list[tuple[int, str, str]] = []
        self._resets = 0
        self._delays: list[tuple[float, str | None]] = []  # seconds, only for this path
        self.chaos: Chaos | None = None
        self.request_log = RequestLog()
        self.gate = Gate()
        self.is_down = False
        self._level = 0.0
        self._at = self.clock.monotonic()
        self._lock = threading.RLock()
        self._clock_ts = 1_790_000_000
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.port = self._server.server_port
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeAmoCRM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.release()
        if not self.is_down:
            self._server.shutdown()
            self._server.server_close()

    # -- test controls ---------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 500) -> None:
        self._faults += [self._fault_answer(status)] * count

    @staticmethod
    def _fault_answer(status: int) -> tuple[int, str, str]:
        kind = "text/html" if status in (403, 429) else "application/problem+json"
        body = HTML_429 if status == 429 else HTML_403 if status == 403 else json.dumps(
            {"title": "Internal Server Error", "type": "https://httpstatus.es/500",
             "status": status, "detail": "Internal Server Error"})
        return status, kind, body

    def reset_next(self, count: int = 1) -> None:
        """Drop the next `count` connections without an answer (nothing runs)."""
        with self._lock:
            self._resets += count

    def delay_next(self, count: int, seconds: float, *, path: str | None = None) -> None:
        """Hold the next `count` answers (to `path`, when given) for `seconds` of real time,
        beyond the client's timeout; the call still runs afterwards, as a slow account's."""
        with self._lock:
            self._delays += [(seconds, path)] * count

    def down(self) -> None:
        """Stop listening: new connections are refused until up()."""
        with self._lock:
            self.is_down = True
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()

    def up(self) -> None:
        if not self.is_down:
            return
        self._server = make_server("127.0.0.1", self.port, self._wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        with self._lock:
            self.is_down = False
        self._thread.start()

    def tick(self) -> int:
        self._clock_ts += 60
        return self._clock_ts

    def put_contact(self, contact_id: int, **fields: Any) -> dict[str, Any]:
        self.state.contacts[contact_id] = {"id": contact_id, "name": f"Client {contact_id}",
                                           "updated_at": self.tick(),
                                           "custom_fields_values": None, **fields}
        return self.state.contacts[contact_id]

    def put_lead(self, lead_id: int, *, contact: int | None, price: int, status: int = 142,
                 pipeline: int = 3104455,
                 custom_fields_values: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        contacts = [{"id": contact, "is_main": True}] if contact else []
        now = self.tick()
        self.state.leads[lead_id] = {
            "id": lead_id, "name": f"Lead {lead_id}", "price": price, "status_id": status,
            "pipeline_id": pipeline, "created_at": now, "updated_at": now,
            "closed_at": now if status in (142, 143) else None, "is_deleted": False,
            "custom_fields_values": custom_fields_values, "account_id": 28805383,
            "_embedded": {"tags": [], "companies": [], "contacts": contacts}}
        return self.state.leads[lead_id]

    def put_element(self, element_id: int, *, catalog_id: int, name: str, price: str,
                    **fields: str | list[str]) -> dict[str, Any]:
        """A products-catalog element: its price in the PRICE field (type "price"), other
        fields by code (`BRAND="Acme"`), as catalogs-api shows custom_fields_values."""
        values = [{"field_id": PRICE_FIELD_ID, "field_name": "Цена", "field_code": "PRICE",
                   "field_type": "price", "values": [{"value": float(price)}]}]
        for n, (code, value) in enumerate(fields.items()):
            items = value if isinstance(value, list) else [value]
            values.append({"field_id": PRICE_FIELD_ID + 1 + n, "field_name": code.title(),
                           "field_code": code, "field_type": "text",
                           "values": [{"value": item} for item in items]})
        self.state.elements[element_id] = {
            "id": element_id, "name": name, "created_by": 0, "updated_by": 0,
            "created_at": self.tick(), "updated_at": self._clock_ts, "is_deleted": False,
            "custom_fields_values": values, "catalog_id": catalog_id,
            "account_id": 28805383, "_links": {"self": {"href": f"{self.base_url}/api/v4/"
                                                         f"catalogs/{catalog_id}/elements/"
                                                         f"{element_id}"}}}
        return self.state.elements[element_id]

    def link_elements(self, lead_id: int, items: list[tuple[int, float]]) -> None:
        """The lead's products (element id, quantity), as the card's "Products" tab saves
        them; the lead's updated_at moves."""
        lead = self.state.leads[lead_id]
        lead["_embedded"]["catalog_elements"] = [
            {"id": element_id, "metadata": {
                "quantity": quantity, "catalog_id": self.state.elements[element_id]["catalog_id"],
                "price_id": PRICE_FIELD_ID}} for element_id, quantity in items]
        lead["updated_at"] = self.tick()

    def issue_tokens(self) -> dict[str, Any]:
        self.state.refreshes += 1
        access = f"access-{self.state.refreshes}"
        refresh = f"refresh-{self.state.refreshes}"
        self.access[access] = True
        self.refresh_tokens.add(refresh)
        return {"token_type": "Bearer", "expires_in": 86400, "access_token": access,
                "refresh_token": refresh}

    def consent(self, url: str, *, referer: str | None = None) -> dict[str, str]:
        """An administrator opens the authorization link and allows access: the query amoCRM
        then sends to the redirect URI. `referer` is the account's host (default this one's)."""
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://www.amocrm.ru/oauth"
        query = parse_qs(parts.query)
        assert query["client_id"] == [self.client_id], "not this integration's link"
        assert query["mode"][0] in ("popup", "post_message")
        code = f"code-{secrets.token_hex(8)}"  # valid 20 minutes, once
        self.codes.add(code)
        return {"code": code, "state": query["state"][0], "platform": "1",
                "referer": referer or f"{self.subdomain}.amocrm.ru"}

    def expire_tokens(self) -> None:
        self.access = {token: token == "long-lived-token" for token in self.access}

    def field_value(self, contact_id: int, code: str) -> Any:
        for item in self.state.contacts[contact_id].get("custom_fields_values") or []:
            if item.get("field_code") == code:
                return item["values"][0]["value"] if item.get("values") else None
        return None

    # -- HTTP ------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        self.gate.enter()
        drop, delay, answer = self._misfortune(request.path)
        if drop:
            drop_connection(environ)
        delay += self.latency
        if delay:
            time.sleep(delay)  # real time: the point is the client's socket timeout
        if self.is_down:  # accepted just before the account went down
            drop_connection(environ)
        status, kind, body = answer or self._handle(request)
        response = Response(body, status=status, content_type=kind) if status != 204 \
            else Response(status=204)
        return response(environ, start_response)

    def _misfortune(self, path: str) -> tuple[bool, float, tuple[int, str, str] | None]:
        """What the fault knobs do to this request: (drop it, seconds to hold it, an answer
        instead of the API's). Queued faults come first; chaos draws only when none is."""
        with self._lock:
            self.request_log.add(self.clock.monotonic())
            delay = 0.0
            for n, (seconds, only) in enumerate(self._delays):
                if only is None or only == path:
                    delay = seconds
                    del self._delays[n]
                    break
            if self._resets:
                self._resets -= 1
                self.state.http_requests += 1
                return True, 0.0, None
            if delay or self._faults or self.chaos is None:
                return False, delay, None
            verdict, status = self.chaos.draw(self.clock.time())
            if verdict in ("down", "reset"):
                self.state.http_requests += 1
                return True, 0.0, None
            if verdict == "error":
                self.state.http_requests += 1
                return False, 0.0, self._fault_answer(status)
            return False, self.chaos.slow_seconds if verdict == "slow" else 0.0, None

    def _problem(self, status: int, title: str, detail: str) -> tuple[int, str, str]:
        return status, "application/problem+json", json.dumps(
            {"title": title, "type": f"https://httpstatus.es/{status}", "status": status,
             "detail": detail})

    def _handle(self, request: Request) -> tuple[int, str, str]:
        with self._lock:
            self.state.http_requests += 1
            fault = self._faults.pop(0) if self._faults else None
        if fault:
            return fault
        if request.path == "/oauth2/access_token":
            return self._oauth(json.loads(request.data or b"{}"))
        if self.blocked:
            return 403, "text/html", HTML_403
        if not self._admit():
            self.state.too_many += 1
            return 429, "text/html", HTML_429
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not self.access.get(token):
            return self._problem(401, "Unauthorized", "Неверный логин или пароль")
        body = json.loads(request.data) if request.data else None
        params = parse_query(request.query_string.decode())
        route = request.method + " " + NUMBER.sub("/{id}", request.path)
        self.state.calls[route] += 1
        handler = ROUTES.get(route)
        if handler is None:
            return self._problem(404, "Not Found", "Not found")
        with self._lock:
            status, result = handler(self, request.path, params, body)
        if status == 204:
            return 204, "", ""
        kind = "application/problem+json" if status >= 400 else "application/hal+json"
        return status, kind, json.dumps(result, ensure_ascii=False)

    def _admit(self) -> bool:
        with self._lock:
            now = self.clock.monotonic()
            self._level = max(0.0, self._level - (now - self._at) * self.rate)
            self._at = now
            if self._level + 1 > self.burst:
                return False
            self._level += 1
            return True

    def _oauth(self, body: dict[str, Any]) -> tuple[int, str, str]:
        if (body.get("client_id"), body.get("client_secret")) != (self.client_id,
                                                                  self.client_secret):
            return self._problem(400, "Некорректный запрос", "client is invalid")
        grant = body.get("grant_type")
        if grant == "refresh_token" and body.get("refresh_token") in self.refresh_tokens:
            self.refresh_tokens.discard(body["refresh_token"])  # single use
        elif grant == "authorization_code" and body.get("code") in self.codes:
            self.codes.discard(body["code"])
        else:
            status, kind, text = self._problem(401, "Некорректный запрос",
                                               "В запросе отсутствует ряд параметров")
            return status, kind, json.dumps({**json.loads(text),
                                             "hint": "Token has been revoked"})
        return 200, "application/json", json.dumps(self.issue_tokens())

    # -- routes ----------------------------------------------------------------------------
    def leads_list(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        leads = sorted(self.state.leads.values(), key=lambda lead: lead["id"])
        ids = (params.get("filter") or {}).get("id")
        if ids:
            wanted = {int(v) for v in (ids.values() if isinstance(ids, dict) else [ids])}
            leads = [lead for lead in leads if lead["id"] in wanted]
        order = params.get("order") or {}
        if "updated_at" in order:
            leads.sort(key=lambda lead: (lead["updated_at"], lead["id"]),
                       reverse=order["updated_at"] == "desc")
        wanted = str(params.get("with", "")).split(",")
        return self._page(path, params, "leads", [_with(lead, wanted) for lead in leads],
                          with_contacts="contacts" in wanted)

    def _page(self, path: str, params: dict[str, Any], key: str, rows: list[dict[str, Any]],
              *, with_contacts: bool = True) -> tuple[int, Any]:
        limit = min(int(params.get("limit", 50)), 250)
        page = max(int(params.get("page", 1)), 1)
        chunk = rows[(page - 1) * limit:page * limit]
        if not chunk:
            return 204, None
        if not with_contacts:
            chunk = [{**row, "_embedded": {k: v for k, v in row.get("_embedded", {}).items()
                                           if k != "contacts"}} for row in chunk]
        links = {"self": {"href": f"{self.base_url}{path}?page={page}&limit={limit}"}}
        if page * limit < len(rows):
            links["next"] = {"href": f"{self.base_url}{path}?page={page + 1}&limit={limit}"}
        return 200, {"_page": page, "_links": links, "_embedded": {key: chunk}}

    def contacts_list(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        # contacts-api: GET /api/v4/contacts, filter[id][] (filters-api), HAL, 204 when empty.
        contacts = sorted(self.state.contacts.values(), key=lambda contact: contact["id"])
        ids = (params.get("filter") or {}).get("id")
        if ids:
            wanted = {int(v) for v in (ids.values() if isinstance(ids, dict) else [ids])}
            contacts = [contact for contact in contacts if contact["id"] in wanted]
        query = str(params.get("query") or "").strip().lower()
        if query:
            # contacts-api: `query` searches the filled fields; a phone by its digits.
            contacts = [contact for contact in contacts if _found(contact, query)]
        return self._page(path, params, "contacts", contacts)

    def contact_get(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        contact = self.state.contacts.get(int(path.rsplit("/", 1)[1]))
        return (200, contact) if contact else (204, None)

    def lead_get(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        lead = self.state.leads.get(int(path.rsplit("/", 1)[1]))
        return (200, _with(lead, str(params.get("with", "")).split(","))) if lead \
            else (204, None)

    def elements_list(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        # catalogs-api: GET /api/v4/catalogs/{catalog_id}/elements, filter[id][], HAL
        # `_embedded.elements`, 204 when none match.
        catalog_id = int(path.split("/")[4])
        elements = [e for e in sorted(self.state.elements.values(), key=lambda e: e["id"])
                    if e["catalog_id"] == catalog_id]
        ids = (params.get("filter") or {}).get("id")
        if ids:
            wanted = {int(v) for v in (ids.values() if isinstance(ids, dict) else [ids])}
            elements = [e for e in elements if e["id"] in wanted]
        return self._page(path, params, "elements", elements)

    def contacts_patch(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        if not isinstance(body, list) or len(body) > 250:
            return 400, {"title": "Bad Request", "status": 400,
                         "detail": "Request validation failed"}
        known = {f["code"] for f in self.state.custom_fields}
        errors = [{"request_id": str(n), "errors": [{"code": "NotSupportedChoice",
                                                     "path": "id", "detail": "not found"}]}
                  for n, item in enumerate(body) if int(item["id"]) not in self.state.contacts]
        errors += [{"request_id": str(n), "errors": [{"code": "NotSupportedChoice",
                                                      "path": "custom_fields_values.0.field_code",
                                                      "detail": "The value you selected is not "
                                                                "a valid choice."}]}
                   for n, item in enumerate(body) for value in item.get("custom_fields_values", [])
                   if value["field_code"] not in known]
        if errors:
            return 400, {"validation-errors": errors, "title": "Bad Request",
                         "type": "https://httpstatus.es/400", "status": 400,
                         "detail": "Request validation failed"}
        fields = [item for item in body if "custom_fields_values" in item]
        if fields:
            self.state.contact_patches.append(fields)
            self.state.contact_patched_at.append(self.clock.time())
        for item in body:
            contact = self.state.contacts[int(item["id"])]
            self._tag(contact, "contacts", item)
            current = {v["field_code"]: v for v in contact.get("custom_fields_values") or []}
            for value in item.get("custom_fields_values", []):
                current[value["field_code"]] = value  # only passed fields change
            contact["custom_fields_values"] = list(current.values())
            contact["updated_at"] = self.tick()
        return 200, {"_embedded": {"contacts": [{"id": int(item["id"]),
                                                  "updated_at": self._clock_ts}
                                                 for item in body]}}

    def _tag(self, entity: dict[str, Any], kind: str, item: dict[str, Any]) -> None:
        tags = entity.setdefault("_embedded", {}).setdefault("tags", [])
        for tag in item.get("tags_to_add") or []:
            if tag["name"] not in {t["name"] for t in tags}:
                tags.append({"id": 100000 + len(self.state.tags_added), "name": tag["name"]})
            self.state.tags_added.append((kind, entity["id"], tag["name"]))

    def leads_patch(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        for item in body:
            lead = self.state.leads.get(int(item["id"]))
            if lead is None:
                return 400, {"title": "Bad Request", "status": 400, "detail": "lead not found"}
            self._tag(lead, "leads", item)
            lead["updated_at"] = self.tick()
        return 200, {"_embedded": {"leads": [{"id": int(i["id"])} for i in body]}}

    def salesbot_run(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        if not isinstance(body, list) or len(body) > 100:
            return 400, {"title": "Bad Request", "status": 400, "detail": "at most 100 tasks"}
        self.state.salesbot_runs += body
        return 202, {"_links": {"self": {"href": "/api/v2/salesbot/run", "method": "post"}},
                     "success": True}

    def _fields_of(self, path: str) -> list[dict[str, Any]]:
        """Each entity has its own fields: /api/v4/{contacts|leads}/custom_fields."""
        return self.state.lead_fields if path.startswith("/api/v4/leads/") \
            else self.state.custom_fields

    def fields_list(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        return self._page(path, {**params, "limit": 50}, "custom_fields",
                          self._fields_of(path))

    def fields_add(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        created = []
        fields = self._fields_of(path)
        entity = "leads" if fields is self.state.lead_fields else "contacts"
        # custom-fields docs: type* and name* in each; multitext is a contact's only.
        kinds = FIELD_TYPES | ({"multitext"} if entity == "contacts" else set())
        errors = [{"request_id": str(n), "errors": [{"code": "NotSupportedChoice",
                                                     "path": "type", "detail": "The value you "
                                                     "selected is not a valid choice."}]}
                  for n, item in enumerate(body) if item.get("type") not in kinds]
        errors += [{"request_id": str(n), "errors": [{"code": "NotBlank", "path": "name",
                                                      "detail": "This value should not be "
                                                                "blank."}]}
                   for n, item in enumerate(body) if not item.get("name")]
        if errors:
            return 400, {"validation-errors": errors, "title": "Bad Request",
                         "type": "https://httpstatus.es/400", "status": 400,
                         "detail": "Request validation failed"}
        for item in body:
            if any(f["code"] == item.get("code") for f in fields):
                return 400, {"title": "Bad Request", "status": 400, "detail": "code is taken"}
            row = {"id": (800000 if entity == "leads" else 700000) + len(fields),
                   "entity_type": entity, **item}
            fields.append(row)
            created.append(row)
        return 201, {"_total_items": len(created), "_embedded": {"custom_fields": created}}

    def field_delete(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        field_id = int(path.rsplit("/", 1)[1])
        fields = self._fields_of(path)
        fields[:] = [f for f in fields if f["id"] != field_id]
        return 204, None

    def webhooks_list(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        if not self.state.webhooks:
            return 204, None
        return 200, {"_total_items": len(self.state.webhooks),
                     "_embedded": {"webhooks": self.state.webhooks}}

    def webhooks_add(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        # "If the account already has a webhook with that address, it is updated."
        self.state.webhooks = [w for w in self.state.webhooks
                               if w["destination"] != body["destination"]]
        hook = {"id": 849193 + len(self.state.webhooks), "destination": body["destination"],
                "settings": body["settings"], "sort": body.get("sort", 10), "disabled": False}
        self.state.webhooks.append(hook)
        return 201, hook

    def webhooks_delete(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        before = len(self.state.webhooks)
        self.state.webhooks = [w for w in self.state.webhooks
                               if w["destination"] != body.get("destination")]
        return (204, None) if len(self.state.webhooks) < before else (
            404, {"title": "Not Found", "status": 404, "detail": "webhook not found"})

    def account_get(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        # crm/platform/account-info: the account model without any `with`
        return 200, {"id": self.account_id, "name": self.subdomain, "subdomain": self.subdomain,
                     "current_user_id": 581651, "country": "RU", "customers_mode": "disabled",
                     "is_unsorted_on": True, "is_loss_reason_enabled": True,
                     "is_helpbot_enabled": False, "is_technical_account": False,
                     "contact_name_display_order": 1,
                     "_links": {"self": {"href": f"{self.base_url}/api/v4/account"}}}

    def notes_add(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        self.state.notes += body
        return 200, {"_embedded": {"notes": [{"id": 76787983 + n, "request_id": str(n)}
                                             for n in range(len(body))]}}

    def tasks_add(self, path: str, params: dict[str, Any], body: Any) -> tuple[int, Any]:
        # crm/tasks: text and complete_till (Unix time) are required; entity_type one of
        # leads, contacts, companies, customers.
        for item in body:
            if not item.get("text") or not isinstance(item.get("complete_till"), int) or \
                    item.get("entity_type") not in ("leads", "contacts", "companies",
                                                    "customers"):
                return 400, {"title": "Bad Request", "status": 400,
                             "detail": "text, complete_till and entity_type are required"}
        self.state.tasks += body
        return 200, {"_embedded": {"tasks": [
            {"id": 4745251 + len(self.state.tasks) + n, "request_id": str(n)}
            for n in range(len(body))]}}


def _with(lead: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    """leads-api: `_embedded.catalog_elements` only with with=catalog_elements."""
    if "catalog_elements" in wanted:
        return {**lead, "_embedded": {"catalog_elements": [], **lead["_embedded"]}}
    return {**lead, "_embedded": {k: v for k, v in lead["_embedded"].items()
                                  if k != "catalog_elements"}}


ROUTES: dict[str, Callable[..., tuple[int, Any]]] = {
    "GET /api/v4/account": FakeAmoCRM.account_get,
    "GET /api/v4/leads": FakeAmoCRM.leads_list,
    "GET /api/v4/leads/{id}": FakeAmoCRM.lead_get,
    "GET /api/v4/catalogs/{id}/elements": FakeAmoCRM.elements_list,
    "GET /api/v4/contacts": FakeAmoCRM.contacts_list,
    "GET /api/v4/contacts/{id}": FakeAmoCRM.contact_get,
    "PATCH /api/v4/contacts": FakeAmoCRM.contacts_patch,
    "GET /api/v4/contacts/custom_fields": FakeAmoCRM.fields_list,
    "POST /api/v4/contacts/custom_fields": FakeAmoCRM.fields_add,
    "DELETE /api/v4/contacts/custom_fields/{id}": FakeAmoCRM.field_delete,
    "GET /api/v4/leads/custom_fields": FakeAmoCRM.fields_list,
    "POST /api/v4/leads/custom_fields": FakeAmoCRM.fields_add,
    "DELETE /api/v4/leads/custom_fields/{id}": FakeAmoCRM.field_delete,
    "GET /api/v4/webhooks": FakeAmoCRM.webhooks_list,
    "POST /api/v4/webhooks": FakeAmoCRM.webhooks_add,
    "DELETE /api/v4/webhooks": FakeAmoCRM.webhooks_delete,
    "POST /api/v4/leads/notes": FakeAmoCRM.notes_add,
    "POST /api/v4/contacts/notes": FakeAmoCRM.notes_add,
    "PATCH /api/v4/leads": FakeAmoCRM.leads_patch,
    "POST /api/v2/salesbot/run": FakeAmoCRM.salesbot_run,
    "POST /api/v4/tasks": FakeAmoCRM.tasks_add,
}


def _found(contact: dict[str, Any], query: str) -> bool:
    digits = re.sub(r"\D", "", query)
    texts = [str(contact.get("name") or "")]
    for item in contact.get("custom_fields_values") or []:
        for value in item.get("values") or []:
            text = str(value.get("value") or "")
            texts.append(text)
            if item.get("field_code") == "PHONE" and digits and digits in re.sub(
                    r"\D", "", text):
                return True
    return any(query in text.lower() for text in texts)


def webhook_body(entity: str, action: str, items: list[dict[str, Any]],
                 subdomain: str = "example") -> bytes:
    """An account webhook as amoCRM posts it: v2 keys, all values strings."""
    data: dict[str, Any] = {entity: {action: {str(n): item for n, item in enumerate(items)}},
                            "account": {"subdomain": subdomain, "id": "28805383",
                                        "_links": {"self": f"https://{subdomain}.amocrm.ru"}}}
    return build_query(data).encode()
