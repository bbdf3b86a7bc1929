"""mappings.phpquery.decode was rewritten for speed (it runs on every webhook received): its
own '&' split, a bounded cache of decoded keys, values unquoted only when needed. These
tests hold it to the straightforward parse_qsl-based implementation it replaced, kept
below as `_reference_decode`: the same result (order of keys included) or QueryError for
both, on real Bitrix24/amoCRM bodies, on edge cases, and on random input.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.sandbox.amocrm import webhook_body
from connector.sandbox.bitrix24_payloads import (
    event_body,
    new_event_token,
    new_workflow_id,
    robot_body,
)
from mappings import phpquery
from mappings.phpquery import MAX_DEPTH, QueryError, decode

# --- the implementation decode replaced, verbatim but for names ---------------------------

_REF_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def _reference_split(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    segments = _REF_SEGMENT.findall("[" + rest)
    if "".join(f"[{s}]" for s in segments) != "[" + rest:
        raise QueryError(f"malformed key {key!r}")
    if len(segments) > MAX_DEPTH:
        raise QueryError(f"key {key[:60]!r} is nested deeper than {MAX_DEPTH}")
    return [head, *segments]


def _reference_decode(body: str | bytes, *, max_fields: int = 1000) -> dict[str, Any]:
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                          max_num_fields=max_fields, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError(str(exc)) from exc
    result: dict[str, Any] = {}
    for key, value in pairs:
        path = _reference_split(key)
        node: Any = result
        for position, segment in enumerate(path):
            last = position == len(path) - 1
            if isinstance(node, list):
                if segment != "":
                    raise QueryError(f"key {key!r} mixes a list and a map")
                if last:
                    node.append(value)
                    break
                node.append({})
                node = node[-1]
                continue
            if last:
                node[segment] = value
                break
            child_is_list = path[position + 1] == ""
            existing = node.get(segment)
            if existing is None or isinstance(existing, str):
                existing = [] if child_is_list else {}
                node[segment] = existing
            elif isinstance(existing, list) != child_is_list:
                raise QueryError(f"key {key!r} mixes a list and a map")
            node = existing
    return _reference_listify(result)


def _reference_listify(node: Any) -> Any:
    if isinstance(node, list):
        return [_reference_listify(item) for item in node]
    if isinstance(node, dict):
        converted = {key: _reference_listify(value) for key, value in node.items()}
        if converted and list(converted) == [str(i) for i in range(len(converted))]:
            return list(converted.values())
        return converted
    return node


# --- comparing the two ----------------------------------------------------------------------

def _shape(node: Any) -> Any:
    """`node` with types and key order made visible: `{"a": "1"} == {"a": "1"}` whatever the
    order, and a str subclass equals a str."""
    if isinstance(node, dict):
        return ("dict", [(type(key), key, _shape(value)) for key, value in node.items()])
    if isinstance(node, list):
        return ("list", [_shape(item) for item in node])
    return (type(node), node)


def _outcome(function: Any, body: Any, **kwargs: Any) -> Any:
    try:
        return ("ok", _shape(function(body, **kwargs)))
    except QueryError:
        return ("QueryError",)
    except Exception as exc:  # anything else must at least be the same kind of failure
        return ("raised", type(exc))


def assert_same(body: Any, **kwargs: Any) -> Any:
    expected = _outcome(_reference_decode, body, **kwargs)
    assert _outcome(decode, body, **kwargs) == expected, body
    # Twice: the second decode takes its keys from the cache.
    assert _outcome(decode, body, **kwargs) == expected, body
    return expected


# --- real bodies ----------------------------------------------------------------------------

B24 = {"application_token": "51856fefc120afa4b628cc82d3935cce", "domain": "portal.bitrix24.ru",
       "member_id": "a223c6b3710f85df22e9377d6c4f7553", "ts": 1736405807}


def _bitrix24_bodies() -> list[bytes]:
    bodies = [
        event_body("ONCRMDEALUPDATE", 759, **B24)[0],
        event_body("ONCRMDEALADD", "12", **B24, access_token="s6p6eclrvim6da22ft9ch94ekreb52lv",
                   refresh_token="4s386p3q0tr8dy89xvmt96234v3dljg3")[0],
        event_body("ONCRMCONTACTDELETE", 5, **B24, event_handler_id=77)[0],
        event_body("ONAPPINSTALL", **B24, language="ru")[0],
        event_body("ONAPPUNINSTALL", **B24)[0],
        event_body("ONCRMDEALUPDATE", **B24, data={"FIELDS": {"ID": "1", "TITLE": "Сделка №1 & co",
                                                              "TAGS": ["a", "b+c", "d e"]}})[0],
    ]
    workflow = new_workflow_id()
    bodies.append(robot_body("loyalty_redeem", "DEAL_123", {"amount": "150.50", "note": "",
                                                            "list": ["x", "y"]},
                             event_token=new_event_token(workflow), workflow_id=workflow,
                             application_token=B24["application_token"], domain=B24["domain"],
                             member_id=B24["member_id"], access_token="tok")[0])
    return bodies


def _amocrm_bodies() -> list[bytes]:
    lead = {"id": "10754147", "status_id": "142", "pipeline_id": "7", "old_status_id": "141",
            "price": "1500", "name": "Заказ #5 / 50% off",
            "custom_fields": [{"id": "1", "name": "Card", "values": [{"value": "4000 1234"}]}]}
    return [
        webhook_body("leads", "status", [lead]),
        webhook_body("leads", "add", [lead, {**lead, "id": "10754148"}]),
        webhook_body("leads", "delete", [{"id": "5", "status_id": "143", "pipeline_id": "7"}]),
        webhook_body("contacts", "update", [{"id": "3", "name": "Иван Петров",
                                             "custom_fields": [{"id": "9", "code": "PHONE",
                                                                "values": [{"value": "+7 900",
                                                                            "enum": "1"}]}]}],
                     subdomain="shop"),
    ]


@pytest.mark.parametrize("body", _bitrix24_bodies() + _amocrm_bodies())
def test_real_bodies_decode_as_before(body: bytes) -> None:
    assert assert_same(body)[0] == "ok"
    assert assert_same(body.decode())[0] == "ok"


def test_real_bodies_do_not_share_state_between_calls() -> None:
    body = _amocrm_bodies()[0]
    first = decode(body)
    first["leads"]["status"][0]["id"] = "changed"
    first["account"].clear()
    assert decode(body) == _reference_decode(body)


# --- edge cases -----------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "", "&", "&&&", "=", "==", "a", "a=", "=1", "a==b", "a=1&a=2", "a=1&&b=2&",
    "a+b=c+d", "a%20b=c%2Bd", "a=%", "a=%z", "a=%zz", "a=%ff", "a=%C3%A9", "a=%C3", "é=%C3%A9é",
    "%C3=1", "%ff=1", "a%5Bb%5D=1", "a%5bb%5d=1", "a;b=1;c=2", "a=1;b=2",
    "[a]=1", "[]=1", "a[=1", "a]=1", "a[b=1", "a[b]]=1", "a[b][=1", "a[[b]]=1", "a[b]c=1",
    "a[]=1&a[]=2", "a[]=1&a[x]=2", "a[x]=1&a[]=2", "a[0]=1&a[]=2", "a[]=1&a[0]=2",
    "a[][]=1&a[][]=2", "a[][x]=1&a[][y]=2", "a[][]=1&a[][x]=2", "a[x][]=1&a[x][y]=2",
    "a=1&a[b]=2", "a[b]=2&a=1", "a[b]=1&a[b][c]=2", "a[b][c]=2&a[b]=1", "a=1&a[]=2",
    "a[0]=x&a[1]=y", "a[1]=x&a[0]=y", "a[0]=x&a[2]=y", "a[00]=x", "a[-0]=x", "0=a&1=b",
    "1=a&0=b", "a[0][0]=x&a[0][1]=y&a[1]=z", "a[][0]=x&a[][0]=y", "a[0]=x&a[x]=y",
])
def test_edge_cases_decode_as_before(body: str) -> None:
    assert_same(body)
    assert_same(body.encode())


def test_nesting_up_to_max_depth_and_one_deeper() -> None:
    at_limit = "a" + "[x]" * MAX_DEPTH + "=1"
    assert assert_same(at_limit)[0] == "ok"
    assert assert_same("a" + "[]" * MAX_DEPTH + "=1")[0] == "ok"
    assert assert_same("a" + "[x]" * (MAX_DEPTH + 1) + "=1") == ("QueryError",)
    assert assert_same("a" + "%5B%5D" * (MAX_DEPTH + 1) + "=1") == ("QueryError",)
    assert assert_same("a" + "[x]" * 5000 + "=1") == ("QueryError",)


def test_keys_too_long_to_cache_decode_as_before() -> None:
    long_name = "k" * 1000
    before = phpquery._cached_path.cache_info().currsize
    assert assert_same(f"{long_name}[a]=1&{long_name}[b]=2&x=%41")[0] == "ok"
    assert assert_same(f"{long_name}[a]=1&{long_name}[]=2") == ("QueryError",)
    assert phpquery._cached_path.cache_info().currsize <= before + 1  # only `x`


def test_key_cache_is_bounded() -> None:
    maxsize = phpquery._cached_path.cache_info().maxsize
    assert maxsize is not None
    for batch in range(0, maxsize + 500, 250):
        decode("&".join(f"key{n}[v]={n}" for n in range(batch, batch + 250)))
    assert phpquery._cached_path.cache_info().currsize == maxsize


@pytest.mark.parametrize("max_fields", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("body", ["", "a=1", "a=1&b=2", "a=1&b=2&c=3", "a=1&&", "&&&", "&",
                                  "a[]=1&a[]=2&a[]=3"])
def test_max_fields_as_before(body: str, max_fields: int) -> None:
    assert_same(body, max_fields=max_fields)


@pytest.mark.parametrize("fields", [1, 10, 1000])
def test_max_fields_exactly_at_and_one_above_the_limit(fields: int) -> None:
    at_limit = "&".join(f"f{n}=v" for n in range(fields))
    assert assert_same(at_limit, max_fields=fields)[0] == "ok"
    assert assert_same(at_limit + "&", max_fields=fields) == ("QueryError",)  # empty counts
    assert assert_same(at_limit + "&x=1", max_fields=fields) == ("QueryError",)
    assert assert_same(at_limit + "&x=1", max_fields=fields + 1)[0] == "ok"
    default = "&".join(f"f{n}=v" for n in range(1000))
    assert assert_same(default)[0] == "ok"
    assert assert_same(default + "&x=1") == ("QueryError",)


# --- random input ---------------------------------------------------------------------------

# Heavy in what the parser treats specially, plus hex digits, letters, non-ASCII.
ALPHABET = "&&&===[[[]]]%%%+;" + "0123456789abcdefABCDEF" + "xyz _-." + "éЖ€😀\x00"
PIECES = ["%5B", "%5D", "%5b", "%5d", "%26", "%3D", "%ff", "%C3%A9", "%C3", "%", "%zz", "%2",
          "[]", "[0]", "[1]", "[x]", "[", "]", "&", "=", "+"]
random_text = st.lists(st.one_of(st.text(ALPHABET, max_size=6), st.sampled_from(PIECES)),
                       max_size=30).map("".join)

SEGMENTS = ["", "", "0", "1", "2", "x", "y", "00"]
segment = st.sampled_from(SEGMENTS)
bracket = st.sampled_from([("[", "]"), ("%5B", "%5D"), ("[", "%5D")])
value = st.one_of(st.sampled_from(["", "1", "a+b", "%41", "%ff", "é", "%"]),
                  st.text(ALPHABET.replace("&", ""), max_size=4))


@st.composite
def php_key(draw: st.DrawFn) -> str:
    """Keys that mostly parse, so lists, maps and overwrites meet each other."""
    head = draw(st.sampled_from(["a", "b", "0", "1", ""]))
    depth = draw(st.integers(0, MAX_DEPTH + 1))
    opening, closing = draw(bracket)
    return head + "".join(f"{opening}{draw(segment)}{closing}" for _ in range(depth))


php_body = st.lists(st.tuples(php_key(), st.booleans(), value), max_size=12).map(
    lambda pairs: "&".join(key + ("=" + val if has_value else "") for key, has_value, val in pairs))

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(random_text, st.one_of(st.none(), st.integers(0, 40)))
def test_random_text_decodes_as_before(body: str, max_fields: int | None) -> None:
    kwargs = {} if max_fields is None else {"max_fields": max_fields}
    assert_same(body, **kwargs)
    assert_same(body.encode(), **kwargs)


@FUZZ
@given(st.binary(max_size=80))
def test_random_bytes_decode_as_before(body: bytes) -> None:
    assert_same(body)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=4), st.sampled_from(
    [b"&", b"=", b"[", b"]", b"%5B", b"%ff", b"\xff", b"\xc3", b"\xc3\xa9", b"+"])),
    max_size=25).map(b"".join))
def test_random_bytes_with_structure_decode_as_before(body: bytes) -> None:
    assert_same(body)


@FUZZ
@given(php_body)
def test_random_php_keys_decode_as_before(body: str) -> None:
    assert_same(body)
