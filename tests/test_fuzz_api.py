"""Hostile input to the admin API /api/v1: bodies that are not JSON objects, amounts of every
wrong shape, injection strings, odd headers, paths and queries.

A refusal is a JSON 4xx whose detail starts with the part at fault, and nothing is written;
text that is merely unusual is stored and read back exactly as sent.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from decimal import ROUND_DOWN, Decimal
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from connector.ledger.views import AccountRef
from tests.conftest import BACKENDS
from tests.test_fuzz import (
    ADMIN_TOKEN,
    BEARER,
    INJECTION,
    JSON,
    Edge,
    assert_nothing_stored,
    assert_refused,
    shared_edge,
)

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANNA = {"crm": "bitrix24", "portal": "acme.bitrix24.ru", "contact_id": "101"}
# A body each operation accepts, so that a test can spoil exactly one part of it.
VALID: dict[str, dict[str, Any]] = {
    "preview": {"amount": "100"},
    "accrue": {**ANNA, "amount": "100"},
    "redeem": {**ANNA, "points": "1", "partial": True},
    "adjust": {**ANNA, "points": "-1", "reason": "fuzz"},
    "bonus": {**ANNA, "name": "review"},
    "reverse": {**ANNA, "source": "fuzz-order"},
}
CHANGES = [op for op in VALID if op != "preview"]
_keys = itertools.count()


@pytest.fixture(scope="module", params=BACKENDS)
def edge(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    for opened in shared_edge(request, tmp_path_factory):
        # Points to redeem and adjust, and a purchase to reverse.
        response = call(opened, "accrue", {**ANNA, "amount": "1000000", "source": "fuzz-order"})
        assert response.status_code == 201, response.json
        yield opened


def key() -> str:
    return f"fuzz-{next(_keys)}"


def call(edge: Edge, op: str, body: dict[str, Any] | None = None, *, with_key: bool = True,
         headers: dict[str, str] | None = None) -> TestResponse:
    data = dict(VALID[op] if body is None else body)
    if with_key and op != "preview":
        data.setdefault("key", key())
    return edge.client.post(f"/api/v1/{op}", json=data, headers={**BEARER, **(headers or {})})


def call_raw(edge: Edge, op: str, data: str | bytes, content_type: str | None = JSON,
             headers: dict[str, str] | None = None) -> TestResponse:
    return edge.client.post(f"/api/v1/{op}", data=data, content_type=content_type,
                            headers={**BEARER, **(headers or {})})


def raw_body(op: str, field: str, token: str) -> str:
    """The operation's valid body with `field` set to a raw JSON token, as sent on the wire."""
    body = {**VALID[op], field: "__TOKEN__"}
    if op != "preview" and field != "key":
        body["key"] = key()
    return json.dumps(body).replace('"__TOKEN__"', token)


def refused(edge: Edge, before: dict[str, int], response: TestResponse, *,
            status: int = 400, field: str | None = None) -> dict[str, Any]:
    answer = assert_refused(response, {status})
    if field is not None:
        assert answer["detail"].startswith(f"{field}:"), answer
    assert_nothing_stored(edge, before)
    return answer


# -- not JSON objects ---------------------------------------------------------------------
@pytest.mark.parametrize("op", list(VALID))
@pytest.mark.parametrize("content_type", [
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/jsonx", "json", ";;;=",
], ids=["none", "text", "form", "multipart", "xml", "suffix", "bare-word", "garbage"])
def test_other_content_types_are_415(edge: Edge, op: str, content_type: str | None) -> None:
    before = edge.rows()
    refused(edge, before, call_raw(edge, op, json.dumps({**VALID[op], "key": key()}),
                                   content_type), status=415)


NOT_OBJECTS: list[tuple[str, str | bytes, str]] = [
    ("empty", "", "invalid_json"),
    ("whitespace", " \n\t ", "invalid_json"),
    ("null", "null", "invalid_request"),
    ("array", "[]", "invalid_request"),
    ("string", '"{}"', "invalid_request"),
    ("number", "1e400", "invalid_request"),
    ("truncated", '{"amount": "1', "invalid_json"),
    ("trailing-garbage", '{"amount": "1"} x', "invalid_json"),
    ("single-quotes", "{'amount': '1'}", "invalid_json"),
    ("raw-control-char", '{"amount": "1", "comment": "a\x01b"}', "invalid_json"),
    ("invalid-utf8", b'{"amount": "\xff\xfe"}', "invalid_json"),
    ("overlong-utf8", b'{"amount": "\xc0\xaf"}', "invalid_json"),
    ("raw-surrogate", b'{"amount": "\xed\xa0\x80"}', "invalid_json"),
    ("utf8-bom", '\ufeff{"amount": "1"}'.encode(), "invalid_json"),
    ("utf16", '{"amount": "1"}'.encode("utf-16"), "invalid_json"),
    ("utf32", '{"amount": "1"}'.encode("utf-32"), "invalid_json"),
    ("nan", '{"amount": NaN}', "invalid_json"),
    ("infinity", '{"amount": Infinity}', "invalid_json"),
    ("minus-infinity", '{"amount": -Infinity}', "invalid_json"),
    ("huge-integer", '{"amount": ' + "9" * 5000 + "}", "invalid_json"),
    ("deep-arrays", "[" * 30_000 + "]" * 30_000, "invalid_json"),
    ("deep-objects", '{"a":' * 10_000 + "1" + "}" * 10_000, "invalid_json"),
    ("deep-value", '{"amount": "1", "comment": ' + "[" * 25_000 + "]" * 25_000 + "}",
     "invalid_json"),
]


@pytest.mark.parametrize("op", list(VALID))
@pytest.mark.parametrize(("data", "error"), [case[1:] for case in NOT_OBJECTS],
                         ids=[case[0] for case in NOT_OBJECTS])
def test_bodies_that_are_not_json_objects_are_400(edge: Edge, op: str, data: str | bytes,
                                                  error: str) -> None:
    before = edge.rows()
    answer = refused(edge, before, call_raw(edge, op, data), field="body")
    assert answer["error"] == error


# Every text field of every operation.
TEXT_FIELDS = [*[(op, field) for op in CHANGES for field in ("portal", "contact_id", "key")],
               ("accrue", "comment"), ("accrue", "source"), ("accrue", "category"),
               ("redeem", "comment"), ("redeem", "source"), ("adjust", "reason"),
               ("bonus", "comment"), ("reverse", "source"), ("reverse", "comment"),
               ("preview", "category"), ("preview", "portal")]


@pytest.mark.parametrize(("op", "field"), TEXT_FIELDS)
@pytest.mark.parametrize("text", ["nul\\u0000inside", "\\ud800", "lone \\udfff low",
                                  "\\udc80\\ud800"], ids=["nul", "high", "low", "reversed"])
def test_text_no_database_can_keep_is_400(edge: Edge, op: str, field: str, text: str) -> None:
    """NUL (PostgreSQL refuses it) and unpaired surrogates (no UTF-8 form) used to pass
    validation and fail at the insert: a 500, and on PostgreSQL for reads too."""
    body = raw_body(op, field, f'"{text}"')
    if op == "preview" and field == "portal":  # the account fields come all three or none
        body = body.replace('{"amount"', '{"crm": "bitrix24", "contact_id": "1", "amount"')
    before = edge.rows()
    refused(edge, before, call_raw(edge, op, body), field=field)


@pytest.mark.parametrize("path", [
    "/api/v1/accounts/bitrix24/acme%00/1", "/api/v1/accounts/bitrix24/acme/1%00",
    "/api/v1/accounts/bitrix24/acme/1%00/history", "/api/v1/cards/%00",
])
def test_reads_with_nul_in_the_path_are_400(edge: Edge, path: str) -> None:
    assert_refused(edge.client.get(path, headers=BEARER), {400})


# -- amounts ------------------------------------------------------------------------------
def _constant(name: str) -> Any:
    raise ValueError(name)


def accepted_amount(token: str) -> Decimal | None:
    """What the API must read from this JSON token as a positive amount; None: refused.
    Written from the documented contract, not from the code under test."""
    try:
        value = json.loads(token, parse_float=Decimal, parse_constant=_constant)
    except ValueError:
        return None
    if isinstance(value, str):
        if re.fullmatch(r"-?[0-9]+(\.[0-9]{1,2})?", value) is None:
            return None
        value = Decimal(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    elif not isinstance(value, Decimal):
        return None
    if not value.is_finite() or not Decimal(0) < value <= Decimal(10) ** 12:
        return None
    if value != value.quantize(Decimal("0.01"), rounding=ROUND_DOWN):
        return None
    return value.quantize(Decimal("0.01"))


def faulty_part(token: str) -> str:
    """Where the refusal of a token points: the body when it is not JSON, else the amount."""
    try:
        json.loads(token, parse_constant=_constant)
    except ValueError:
        return "body"
    return "amount"


AMOUNTS = [
    "1", "100", '"100"', '"10.50"', "10.5", "10.50", "1.000", '"0.01"', "0.01", "1E+2",
    "1000000000000", '"1000000000000.00"', "1000000000000.01", '"1000000000001"',
    "0", "-0", '"-0"', "0.00", '"0.00"', "-1", '"-1"', "-0.01", "0.001", '"0.001"', "1e-400",
    "1e400", "-1e400", '"1e400"', '"1e2"', "NaN", "Infinity", "-Infinity", "sNaN",
    '"Infinity"', '"-Infinity"', '"NaN"', '"sNaN"',
    '" 5"', '"5 "', '"+5"', '"1_000"', '"\u0661\u0660\u0660"', '"0x10"', '"5."', '".5"',
    '"1,5"', '""', '"9' + "9" * 5000 + '"', "true", "false", "null", "[]", "[1]", "{}",
    '{"value": 1}',
]


@pytest.mark.parametrize("token", AMOUNTS)
def test_preview_reads_amounts_exactly_as_documented(edge: Edge, token: str) -> None:
    expected = accepted_amount(token)
    before = edge.rows()
    response = call_raw(edge, "preview", raw_body("preview", "amount", token))
    if expected is None:
        refused(edge, before, response, field=faulty_part(token))
    else:
        assert response.status_code == 200, response.json
        assert response.json["purchase_amount"] == str(expected)


AMOUNT_TOKENS = st.one_of(
    st.sampled_from(AMOUNTS),
    st.integers().map(str),
    st.integers(min_value=-(10**13), max_value=10**13).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(places=2, min_value=-(10**13), max_value=10**13).map(str),
    st.decimals(places=3, min_value=-(10**13), max_value=10**13).map(
        lambda value: json.dumps(str(value))),
    st.text(max_size=12).map(json.dumps),
)


@given(token=AMOUNT_TOKENS)
@FUZZ
def test_accrue_stores_an_amount_only_when_it_is_a_valid_one(edge: Edge, token: str) -> None:
    expected = accepted_amount(token)
    before = edge.rows()
    response = call_raw(edge, "accrue", raw_body("accrue", "amount", token))
    if expected is None:
        refused(edge, before, response, field=faulty_part(token))
        return
    assert response.status_code == 201, response.json
    [entry] = edge.services.ledger.history(AccountRef(**ANNA), limit=1)
    assert entry.id == response.json["entry_id"] and entry.purchase_amount == expected


@pytest.mark.parametrize(("op", "field"), [("redeem", "points"), ("redeem", "purchase_amount"),
                                           ("adjust", "points"), ("bonus", "points")])
@pytest.mark.parametrize("token", ["0", '"-0"', "-1e400", "1e400", '"NaN"', '"1e2"', "true",
                                   '"0.001"', '"9' + "9" * 40 + '"'])
def test_other_amount_fields_refuse_bad_amounts(edge: Edge, op: str, field: str,
                                                token: str) -> None:
    before = edge.rows()
    refused(edge, before, call_raw(edge, op, raw_body(op, field, token)), field=field)


# -- injection and unusual text -----------------------------------------------------------
@pytest.mark.parametrize("text", INJECTION, ids=range(len(INJECTION)))
def test_injection_strings_are_stored_and_read_back_verbatim(edge: Edge, text: str) -> None:
    ref = {**ANNA, "portal": text, "contact_id": text}
    body = {**ref, "amount": "100", "key": text, "comment": text, "source": text,
            "category": text}
    response = call(edge, "accrue", body)
    assert response.status_code in (200, 201), response.json
    assert response.mimetype == JSON
    [entry] = edge.services.ledger.history(AccountRef(**ref), limit=1)
    assert (entry.key, entry.comment, entry.source) == (f"api:{text}", text, text)
    # The same text through the URL finds the same account, when a URL can carry it.
    if "/" not in text:
        path = f"/api/v1/accounts/bitrix24/{quote(text, safe='')}/{quote(text, safe='')}"
        found = edge.client.get(path, headers=BEARER)
        assert found.status_code == 200, found.json
        assert found.json["ref"] == ref
    for op in ("bonus", "reverse", "adjust"):
        extra = {"bonus": {"name": "review", "comment": text},
                 "reverse": {"source": text, "comment": text},
                 "adjust": {"points": "1", "reason": text}}[op]
        response = call(edge, op, {**ref, **extra})
        assert response.status_code in (200, 201), (op, response.json)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | st.sampled_from(INJECTION),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6)


@given(op=st.sampled_from(list(VALID)), field=st.sampled_from(
    ["crm", "portal", "contact_id", "amount", "points", "purchase_amount", "partial", "name",
     "reason", "source", "category", "comment", "key"]), value=JSON_VALUES)
@FUZZ
def test_any_json_value_in_any_field(edge: Edge, op: str, field: str, value: Any) -> None:
    before = edge.rows()
    response = call(edge, op, {**VALID[op], field: value})
    assert response.status_code < 500, response.json
    if response.status_code >= 400:
        assert_refused(response)
        assert_nothing_stored(edge, before)
    else:
        assert response.status_code in (200, 201)
        assert response.mimetype == JSON


@given(op=st.sampled_from(list(VALID)),
       name=st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(INJECTION),
                      st.just("k" * 10_000)))
@FUZZ
def test_unknown_fields_are_refused(edge: Edge, op: str, name: str) -> None:
    if name in VALID[op] or name in ("key", "crm", "portal", "contact_id", "category",
                                      "comment", "source", "purchase_amount", "partial",
                                      "points"):
        return
    before = edge.rows()
    refused(edge, before, call(edge, op, {**VALID[op], name: "1"}), field=name)


# -- headers, paths, queries --------------------------------------------------------------
LATIN1 = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=300)


@given(value=LATIN1)
@FUZZ
def test_idempotency_key_headers_of_any_shape(edge: Edge, value: str) -> None:
    before = edge.rows()
    response = call(edge, "adjust", with_key=False, headers={"Idempotency-Key": value})
    assert response.status_code in (200, 201, 400), response.json
    if response.status_code == 400:
        refused(edge, before, response, field="Idempotency-Key")


@given(value=st.one_of(LATIN1, LATIN1.map("Bearer {}".format),
                       st.sampled_from([f"Bearer {ADMIN_TOKEN} ", f"bearer {ADMIN_TOKEN}",
                                        f"Bearer {ADMIN_TOKEN}\x00", f"Bearer{ADMIN_TOKEN}",
                                        f"Bearer {ADMIN_TOKEN[:-1]}", ADMIN_TOKEN])))
@FUZZ
def test_authorization_headers_of_any_shape(edge: Edge, value: str) -> None:
    before = edge.rows()
    response = edge.client.post("/api/v1/adjust", json={**VALID["adjust"], "key": key()},
                                headers={"Authorization": value})
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip() == ADMIN_TOKEN:
        assert response.status_code == 201
    else:
        answer = refused(edge, before, response, status=401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert ADMIN_TOKEN not in answer["detail"]


SEGMENT = st.one_of(st.text(min_size=1, max_size=80), st.sampled_from(INJECTION),
                    st.just("x" * 300), st.just("%"), st.just("%zz"), st.just(".."))


@given(crm=SEGMENT, portal=SEGMENT, contact=SEGMENT,
       query=st.text(st.characters(max_codepoint=0x2FF), max_size=40))
@FUZZ
def test_reads_with_hostile_paths_and_queries(edge: Edge, crm: str, portal: str, contact: str,
                                              query: str) -> None:
    base = "/api/v1/accounts/" + "/".join(quote(part, safe="") for part in
                                          (crm, portal, contact))
    for url in (base, f"{base}/history?limit={quote(query)}&before={quote(query)}",
                f"{base}?history={quote(query)}", f"/api/v1/cards/{quote(portal, safe='')}"):
        response = edge.client.get(url, headers=BEARER)
        if 300 <= response.status_code < 400:
            # A "/" in a part made an empty segment: routing redirects to the merged URL.
            assert "/" in crm + portal + contact, url
            continue
        assert response.status_code in (200, 400, 404), (url, response.status_code)
        if response.status_code != 200:
            assert_refused(response)


@pytest.mark.parametrize(("query", "status"), [
    ("limit=1", 200), ("limit=200", 200), ("limit=201", 400), ("limit=0", 400),
    ("limit=-1", 400), ("limit=1.5", 400), ("limit=%EF%BC%91", 400), ("limit=", 400),
    ("before=999999999999999999", 200), ("before=9999999999999999999", 400),
    ("before=" + "9" * 5000, 400), ("before=0x10", 400), ("before=%00", 400),
])
def test_history_paging_parameters(edge: Edge, query: str, status: int) -> None:
    response = edge.client.get(f"/api/v1/accounts/bitrix24/acme.bitrix24.ru/101/history?{query}",
                               headers=BEARER)
    assert response.status_code == status, response.json
    if status == 400:
        assert_refused(response)
