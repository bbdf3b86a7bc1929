"""Hostile input to the CRM receivers: /bitrix24/events, /bitrix24/robots,
/amocrm/webhooks/<secret>, /amocrm/actions/<secret>/..., /amocrm/oauth/callback.

A refused request is a JSON 4xx with a reason and leaves every table as it was; an accepted
one is exactly one inbox row holding exactly the bytes that were sent.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from connector.inbox import InboxItem
from tests.conftest import BACKENDS, fresh_services, make_settings
from tests.test_fuzz import (
    AMO_BASE,
    AMO_SECRET,
    B24_MEMBER,
    B24_TOKEN,
    FORM,
    INJECTION,
    MAX_BODY,
    Edge,
    amo_webhook,
    assert_nothing_stored,
    assert_refused,
    b24_event,
    b24_robot,
    shared_edge,
)
from webhooks import create_app

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B24_PATHS = ["/bitrix24/events", "/bitrix24/robots"]
WEBHOOK = f"/amocrm/webhooks/{AMO_SECRET}"
# What the action route promises to take; anything else is a 404 and stores nothing.
ACTIONS = re.compile(r"bonus/[A-Za-z0-9_-]{1,51}|redeem/(max|[0-9]{1,9}(\.[0-9]{1,2})?)")


@pytest.fixture(scope="module", params=BACKENDS)
def edge(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    yield from shared_edge(request, tmp_path_factory)


def post(edge: Edge, path: str, data: str | bytes, *, content_type: str | None = FORM,
         headers: dict[str, str] | None = None) -> TestResponse:
    return edge.client.post(path, data=data, content_type=content_type, headers=headers)


def newest(edge: Edge) -> InboxItem:
    return edge.services.inbox.list(limit=1)[0]


def check_outcome(edge: Edge, before: dict[str, int], response: TestResponse,
                  body: str | bytes) -> bool:
    """Either refused with nothing stored, or accepted as one inbox row of exactly `body`.
    Never a 5xx. Returns whether it was accepted."""
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    if response.status_code != 200:
        assert_refused(response)
        assert_nothing_stored(edge, before)
        return False
    after = edge.rows()
    assert after["inbox_events"] - before["inbox_events"] <= 1
    assert {k: v for k, v in after.items() if k != "inbox_events"} == \
        {k: v for k, v in before.items() if k != "inbox_events"}
    if response.json.get("duplicate"):
        assert after == before
    else:
        stored = newest(edge)
        assert stored.id == response.json["id"]
        assert stored.body == (body.encode() if isinstance(body, str) else body)
        assert len(stored.kind) <= 64 and len(stored.portal or "") <= 255
    return True


# -- Bitrix24 ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", B24_PATHS)
@pytest.mark.parametrize("content_type", [
    None, "application/json", "text/plain", "multipart/form-data; boundary=x",
    "application/xml", "application/x-www-form-urlencodedx", ";;;=", "form",
], ids=["none", "json", "text", "multipart", "xml", "suffix", "garbage", "bare-word"])
def test_bitrix24_refuses_other_content_types(edge: Edge, path: str,
                                              content_type: str | None) -> None:
    body = b24_event() if path.endswith("events") else b24_robot()
    before = edge.rows()
    assert_refused(post(edge, path, body, content_type=content_type), {415})
    assert_nothing_stored(edge, before)


DEEP = "a" + "[b]" * 5000 + "=1"
BAD_EVENTS: list[tuple[str, str | bytes, int, str]] = [
    ("deep-keys", b24_event() + "&" + DEEP, 400, "malformed_body"),
    ("deep-auth", "auth" + "[x]" * 3000 + "=1&" + b24_event(), 400, "malformed_body"),
    ("deep-empty-brackets", b24_event() + "&a" + "[]" * 2000 + "=1", 400, "malformed_body"),
    ("too-many-fields", b24_event() + "".join(f"&f{n}=1" for n in range(1001)), 400,
     "malformed_body"),
    ("unclosed-bracket", b24_event() + "&data[FIELDS[ID]=1", 400, "malformed_body"),
    ("list-and-map", b24_event() + "&auth[]=x", 400, "malformed_body"),
    ("raw-invalid-utf8", b24_event().encode() + b"&x=\xff\xfe", 400, "malformed_body"),
    ("escaped-invalid-utf8", b24_event() + "&x=%ff%fe", 400, "malformed_body"),
    ("overlong-utf8", b24_event() + "&x=%c0%af", 400, "malformed_body"),
    ("encoded-surrogate", b24_event() + "&x=%ed%a0%80", 400, "malformed_body"),
    ("utf16", b24_event().encode("utf-16"), 400, "malformed_body"),
    ("id-is-a-list", b24_event() + "&data[FIELDS][ID][]=1", 400, "invalid_event"),
    ("id-percent-garbage", b24_event(entity="%zz"), 400, "invalid_event"),
    ("id-negative", b24_event(entity="-1"), 400, "invalid_event"),
    ("id-exponent", b24_event(entity="1e5"), 400, "invalid_event"),
    ("id-empty", b24_event(entity=""), 400, "invalid_event"),
    ("auth-is-text", b24_event().replace("auth[domain]", "x") + "&auth=token", 400,
     "invalid_event"),
    ("no-domain", b24_event(domain=""), 400, "invalid_event"),
    ("long-domain", b24_event(domain="d" * 256), 400, "invalid_event"),
    ("nul-domain", b24_event(domain="acme\x00.bitrix24.ru"), 400, "invalid_event"),
    ("unknown-event", b24_event(event="ONCRMLEADADD"), 400, "invalid_event"),
    ("empty-body", "", 400, "invalid_event"),
    ("only-garbage", "%%%%&&&===;;;", 400, "invalid_event"),
    ("nul-token", b24_event(token=B24_TOKEN + "\x00"), 401, "unauthorized"),
    ("token-case", b24_event(token=B24_TOKEN.upper()), 401, "unauthorized"),
    ("token-prefix", b24_event(token=B24_TOKEN[:-1]), 401, "unauthorized"),
    ("no-member", b24_event(member=""), 401, "unauthorized"),
    *[(f"event-injection-{n}", b24_event(event=text), 400, "invalid_event")
      for n, text in enumerate(INJECTION)],
    *[(f"id-injection-{n}", b24_event(entity=text), 400, "invalid_event")
      for n, text in enumerate(INJECTION)],
    *[(f"token-injection-{n}", b24_event(token=text), 401, "unauthorized")
      for n, text in enumerate(INJECTION)],
]


@pytest.mark.parametrize(("body", "status", "error"), [case[1:] for case in BAD_EVENTS],
                         ids=[case[0] for case in BAD_EVENTS])
def test_bitrix24_event_refusals(edge: Edge, body: str | bytes, status: int,
                                 error: str) -> None:
    assert len(body) <= MAX_BODY  # refused for what it says, not for its size
    before = edge.rows()
    answer = assert_refused(post(edge, "/bitrix24/events", body), {status})
    assert answer["error"] == error
    assert B24_TOKEN not in answer["detail"]
    assert_nothing_stored(edge, before)


BAD_ROBOTS: list[tuple[str, str, str]] = [
    ("long-code", b24_robot(code="c" * 59), "invalid_robot_call"),
    ("nul-code", b24_robot(code="loyalty\x00redeem"), "invalid_robot_call"),
    ("no-code", b24_robot(code=""), "invalid_robot_call"),
    ("no-event-token", b24_robot(event_token=""), "invalid_robot_call"),
    ("document-not-a-list", b24_robot().replace("document_id[2]", "document_id[x]"),
     "invalid_robot_call"),
    ("properties-text", b24_robot().replace("properties[amount]", "properties"),
     "invalid_robot_call"),
    ("long-domain", b24_robot(domain="d" * 300), "invalid_robot_call"),
    ("deep-properties", b24_robot() + "&properties" + "[p]" * 4000 + "=1", "malformed_body"),
]


@pytest.mark.parametrize(("body", "error"), [case[1:] for case in BAD_ROBOTS],
                         ids=[case[0] for case in BAD_ROBOTS])
def test_bitrix24_robot_refusals(edge: Edge, body: str, error: str) -> None:
    before = edge.rows()
    assert assert_refused(post(edge, "/bitrix24/robots", body), {400})["error"] == error
    assert_nothing_stored(edge, before)


@pytest.mark.parametrize("text", INJECTION, ids=range(len(INJECTION)))
def test_bitrix24_keeps_hostile_text_outside_the_checked_keys_byte_for_byte(
        edge: Edge, text: str) -> None:
    """A genuine event may carry anything in keys nobody interprets at the edge: it is kept
    exactly as sent, for the worker to judge."""
    body = b24_event() + "&" + "&".join(f"{quote(key)}={quote(text)}" for key in (
        "ts", "event_handler_id", f"data[FIELDS][{text}]", f"extra[{text}]"))
    # The run's token is hostile too, and new: other tests may have sent the bare text.
    robot = b24_robot(code=f"loyalty_{len(text)}", event_token=f"{text} {uuid.uuid4().hex}",
                      properties={"comment": text, text: "1"})
    for path, sent in (("/bitrix24/events", body), ("/bitrix24/robots", robot)):
        before = edge.rows()
        response = post(edge, path, sent)
        assert response.status_code == 200 and not response.json.get("duplicate"), \
            response.json
        assert edge.rows()["inbox_events"] == before["inbox_events"] + 1
        assert newest(edge).body == sent.encode()
    before = edge.rows()
    again = post(edge, "/bitrix24/robots", robot)  # the same robot run: stored once
    assert again.json["duplicate"] is True and edge.rows() == before


@given(body=st.binary(max_size=600))
@FUZZ
def test_bitrix24_arbitrary_bytes_are_refused(edge: Edge, body: bytes) -> None:
    for path in B24_PATHS:
        before = edge.rows()
        assert not check_outcome(edge, before, post(edge, path, body), body)


# PHP-style soup: brackets, separators, escapes, NULs and non-ASCII around a genuine event.
SOUP = st.text(alphabet="[]=&;%+ ab0ID\x00é\u0416\ud7ff", max_size=80)


@given(prefix=SOUP, suffix=SOUP)
@FUZZ
def test_bitrix24_genuine_events_in_php_soup(edge: Edge, prefix: str, suffix: str) -> None:
    body = f"{prefix}&{b24_event()}&{suffix}"
    check_outcome(edge, edge.rows(), post(edge, "/bitrix24/events", body), body)


TEXT = st.one_of(st.sampled_from(INJECTION), st.text(max_size=300))


@given(field=st.sampled_from(["event", "entity", "domain", "token", "member"]), value=TEXT)
@FUZZ
def test_bitrix24_hostile_values_in_checked_keys(edge: Edge, field: str, value: str) -> None:
    body = b24_event(**{field: value})
    accepted = check_outcome(edge, edge.rows(), post(edge, "/bitrix24/events", body), body)
    if accepted:  # then the forged value was not a forgery at all
        assert field not in ("token", "member") or value.strip() in (B24_TOKEN, B24_MEMBER)


@given(field=st.sampled_from(["code", "event_token", "domain", "token"]), value=TEXT)
@FUZZ
def test_bitrix24_robot_calls_with_hostile_values(edge: Edge, field: str, value: str) -> None:
    body = b24_robot(**{field: value})
    check_outcome(edge, edge.rows(), post(edge, "/bitrix24/robots", body), body)


# -- amoCRM webhooks and actions ----------------------------------------------------------
@pytest.mark.parametrize("path", [WEBHOOK, f"/amocrm/actions/{AMO_SECRET}/bonus/review"])
@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain",
                                          "multipart/form-data; boundary=x"])
def test_amocrm_refuses_other_content_types(edge: Edge, path: str,
                                            content_type: str | None) -> None:
    before = edge.rows()
    assert_refused(post(edge, path, amo_webhook(), content_type=content_type), {415})
    assert_nothing_stored(edge, before)


BAD_WEBHOOKS: list[tuple[str, str | bytes]] = [
    ("empty", ""),
    ("no-entities", "hello=world"),
    ("leads-is-text", "leads=1"),
    ("leads-is-a-list", "leads[]=1"),
    ("ids-not-numbers", "leads[status][0][id]=abc&leads[add][0][id]=-1"),
    ("other-account", amo_webhook(subdomain="someone-else")),
    ("account-is-a-list", amo_webhook().replace("account[subdomain]", "account[subdomain][]")),
    ("deep-keys", amo_webhook() + "&leads" + "[x]" * 5000 + "=1"),
    ("raw-invalid-utf8", amo_webhook().encode() + b"&x=\xc3\x28"),
    ("escaped-invalid-utf8", amo_webhook() + "&x=%c3%28"),
    ("too-many-fields", amo_webhook() + "".join(f"&f{n}=1" for n in range(1001))),
    ("mixed-list-and-map", amo_webhook() + "&leads[status][]=1"),
    *[(f"subdomain-injection-{n}", amo_webhook(subdomain=text))
      for n, text in enumerate(INJECTION)],
]


@pytest.mark.parametrize("body", [case[1] for case in BAD_WEBHOOKS],
                         ids=[case[0] for case in BAD_WEBHOOKS])
def test_amocrm_webhook_refusals(edge: Edge, body: str | bytes) -> None:
    assert len(body) <= MAX_BODY
    before = edge.rows()
    assert_refused(post(edge, WEBHOOK, body), {400})
    assert_nothing_stored(edge, before)


# Header values arrive as latin-1 text without line breaks; the rest cannot be sent.
HEADER_INJECTION = [text for text in INJECTION
                    if "\n" not in text and text.encode("latin-1", "ignore").decode("latin-1")
                    == text]


@pytest.mark.parametrize("request_id", [
    "423651ce-905d-4833-9db0-a21f44575517", "a\x00b", "x" * 500, *HEADER_INJECTION,
], ids=["uuid", "nul", "long", *[f"injection-{n}" for n in range(len(HEADER_INJECTION))]])
def test_amocrm_request_ids_of_any_shape_store_the_hook_once(edge: Edge,
                                                            request_id: str) -> None:
    headers = {"X-Amocrm-Requestid": request_id}
    first = post(edge, WEBHOOK, amo_webhook(), headers=headers)
    assert first.status_code == 200, first.json
    before = edge.rows()
    again = post(edge, WEBHOOK, amo_webhook(), headers=headers)
    assert again.status_code == 200
    if request_id.isprintable():  # a usable id: the re-send is recognised
        assert again.json["duplicate"] is True and edge.rows() == before


@given(secret=st.one_of(st.text(min_size=1, max_size=60), st.sampled_from(INJECTION),
                        st.just(AMO_SECRET.lower()), st.just(AMO_SECRET + "x"),
                        st.just(AMO_SECRET[:-1])))
@FUZZ
def test_amocrm_wrong_secrets_are_404_and_store_nothing(edge: Edge, secret: str) -> None:
    if secret == AMO_SECRET:
        return
    before = edge.rows()
    for path in (f"/amocrm/webhooks/{quote(secret, safe='')}",
                 f"/amocrm/actions/{quote(secret, safe='')}/bonus/review"):
        response = post(edge, path, amo_webhook())
        if "/" in secret and 300 <= response.status_code < 400:
            continue  # an empty path segment: routing redirects to the merged URL
        assert AMO_SECRET not in assert_refused(response, {404})["detail"]
    assert_nothing_stored(edge, before)


@given(action=st.one_of(
    st.from_regex(ACTIONS, fullmatch=True),
    st.builds("{}/{}".format, st.sampled_from(["bonus", "redeem", "Bonus", "", "x"]),
              st.text(max_size=70)),
    st.sampled_from(["bonus/" + "b" * 52, "redeem/-1", "redeem/1e5", "redeem/0.001",
                     "redeem/١٢٣", "bonus/review\n", "redeem/max/", "bonus/../redeem/max",
                     "redeem/" + "9" * 10, *[f"bonus/{text}" for text in INJECTION]])))
@FUZZ
def test_amocrm_actions_store_only_what_the_grammar_allows(edge: Edge, action: str) -> None:
    before = edge.rows()
    body = amo_webhook()
    url = f"/amocrm/actions/{AMO_SECRET}/{quote(action, safe='/')}"
    response = post(edge, url, body)
    if 300 <= response.status_code < 400:
        # Routing sends a URL with "//" to its canonical form; nothing was read or stored.
        assert "//" in url.removeprefix("/"), (url, response.status_code)
        assert_nothing_stored(edge, before)
        return
    accepted = check_outcome(edge, before, response, body)
    assert accepted == bool(ACTIONS.fullmatch(action)), (action, response.json)
    if accepted:
        verb, _, argument = action.partition("/")
        assert newest(edge).kind == f"action:{verb}:{argument}"


@given(lead=TEXT, action=st.sampled_from(["add", "update", "status", "delete", "x"]),
       extra=SOUP)
@FUZZ
def test_amocrm_webhooks_with_hostile_values(edge: Edge, lead: str, action: str,
                                             extra: str) -> None:
    body = amo_webhook(lead, action=action) + "&" + extra
    check_outcome(edge, edge.rows(), post(edge, WEBHOOK, body), body)


def test_amocrm_receivers_are_absent_while_amocrm_is_disabled(tmp_path: Path,
                                                             database_url: str) -> None:
    """A webhook_secret left in the config of a disabled amoCRM must not fill the inbox with
    hooks no worker will ever process."""
    services = fresh_services(make_settings(tmp_path, database_url,
                                            amocrm={"webhook_secret": AMO_SECRET}))
    client = create_app(services=services).test_client()
    try:
        for path in (WEBHOOK, f"/amocrm/actions/{AMO_SECRET}/bonus/review"):
            response = client.post(path, data=amo_webhook(), content_type=FORM)
            assert_refused(response, {404})
        assert services.inbox.list() == []
    finally:
        services.close()


# -- amoCRM OAuth callback ----------------------------------------------------------------
TOKEN_URL = f"{AMO_BASE}/oauth2/access_token"
ACCOUNT = "example.amocrm.ru"


@pytest.fixture
def amocrm_oauth() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def started(edge: Edge) -> str:
    """The query parameters of an authorization the connector started, besides the code."""
    state = edge.services.oauth_states.issue("amocrm", ACCOUNT)
    return f"&state={state}&referer={ACCOUNT}"


def assert_state_spent(edge: Edge, before: dict[str, int]) -> None:
    """The state went with the callback that carried it; nothing else changed (no tokens)."""
    assert edge.rows() == {**before, "oauth_states": before["oauth_states"] - 1}


@pytest.mark.parametrize("query", ["", "?code=", "?state=x", "?code=abc", "?code=abc&state=",
                                   "?code=abc&state=forged&referer=" + ACCOUNT],
                         ids=["no-code", "empty-code", "no-code-with-state", "no-state",
                              "empty-state", "forged-state"])
def test_amocrm_oauth_callback_without_our_state_is_refused(
        edge: Edge, amocrm_oauth: responses.RequestsMock, query: str) -> None:
    before = edge.rows()
    assert_refused(edge.client.get(f"/amocrm/oauth/callback{query}"), {400, 403})
    assert_nothing_stored(edge, before)
    assert len(amocrm_oauth.calls) == 0


@pytest.mark.parametrize(("query", "answer"), [
    ("?code=used-code", (400, {"hint": "Authorization code has been revoked"})),
    ("?code=" + quote("' OR 1=1 --"), (400, {"hint": "Authorization code is malformed"})),
    ("?code=%00%ff%fe", (400, {"hint": "Authorization code is malformed"})),
    ("?code=" + "c" * 4000, (400, {"hint": "Authorization code is malformed"})),
    ("?code=abc", (500, {"detail": "busy"})),
    ("?code=abc", (200, "<html>nginx</html>")),
    ("?code=abc", (200, {"access_token": "a" * 40})),
    ("?code=abc", (200, ["access_token"])),
    ("?code=abc", (200, {"access_token": "a" * 40, "refresh_token": "r" * 40,
                         "expires_in": "soon"})),
    ("?code=abc", (200, {"access_token": "a" * 40, "refresh_token": "r" * 40,
                         "expires_in": 10 ** 30})),
], ids=["revoked", "injection", "bad-bytes", "long", "amocrm-down", "html-answer",
        "no-refresh-token", "a-list", "word-lifetime", "huge-lifetime"])
def test_amocrm_oauth_callback_refusals_store_no_tokens(
        edge: Edge, amocrm_oauth: responses.RequestsMock, query: str,
        answer: tuple[int, Any]) -> None:
    status, body = answer
    if isinstance(body, str):
        amocrm_oauth.add(responses.POST, TOKEN_URL, body=body, status=status)
    else:
        amocrm_oauth.add(responses.POST, TOKEN_URL, json=body, status=status)
    query += started(edge)
    before = edge.rows()
    assert_refused(edge.client.get(f"/amocrm/oauth/callback{query}"), {400})
    assert_state_spent(edge, before)
    assert len(amocrm_oauth.calls) == 1


def test_amocrm_oauth_callback_keeps_the_tokens_of_a_good_code(
        edge: Edge, amocrm_oauth: responses.RequestsMock) -> None:
    amocrm_oauth.add(responses.POST, TOKEN_URL, json={
        "token_type": "Bearer", "expires_in": 86400, "access_token": "a" * 40,
        "refresh_token": "r" * 40})
    response = edge.client.get(f"/amocrm/oauth/callback?code=good-code{started(edge)}")
    assert response.status_code == 200 and response.json["status"] == "authorized"
    stored = edge.services.amocrm_credentials.load()
    assert stored is not None and stored.access_token == "a" * 40


@given(code=TEXT)
@FUZZ
def test_amocrm_oauth_callback_with_refused_codes(edge: Edge, code: str) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, TOKEN_URL, json={"hint": "bad code"}, status=400)
        query = f"?code={quote(code, safe='')}{started(edge)}"
        before = edge.rows()
        response = edge.client.get(f"/amocrm/oauth/callback{query}")
        assert_refused(response, {400})
        if code:
            assert_state_spent(edge, before)
        else:
            assert_nothing_stored(edge, before)


@given(state=TEXT, referer=st.sampled_from([ACCOUNT, "another.amocrm.ru", ""]))
@FUZZ
def test_amocrm_oauth_callback_with_forged_states(edge: Edge, state: str,
                                                  referer: str) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        before = edge.rows()
        response = edge.client.get(f"/amocrm/oauth/callback?code=abc&referer={referer}"
                                   f"&state={quote(state, safe='')}")
        assert_refused(response, {403})
        assert_nothing_stored(edge, before)
        assert len(mock.calls) == 0
