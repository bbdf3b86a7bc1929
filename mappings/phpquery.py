"""PHP-style query strings, the wire format of Bitrix24 and amoCRM form bodies.

`data[FIELDS][ID]=7&select[]=ID` <-> {"data": {"FIELDS": {"ID": "7"}}, "select": ["ID"]}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 8  # deeper nesting is refused rather than built (hostile bodies)
# Webhook bodies repeat the same few dozen keys on every request, so a key is decoded to its
# path once. Both bounds keep a hostile sender (a new long key per request) from growing
# memory: at most _KEY_CACHE_SIZE entries, none for keys longer than _CACHED_KEY_LENGTH.
_KEY_CACHE_SIZE = 4096
_CACHED_KEY_LENGTH = 256


class QueryError(ValueError):
    """The body is not a well-formed PHP-style query string."""


def _split(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    segments = _SEGMENT.findall("[" + rest)
    if "".join(f"[{s}]" for s in segments) != "[" + rest:
        raise QueryError(f"malformed key {key!r}")
    if len(segments) > MAX_DEPTH:
        raise QueryError(f"key {key[:60]!r} is nested deeper than {MAX_DEPTH}")
    return [head, *segments]


def _unquote(text: str) -> str:
    """One form-encoded name or value as parse_qsl decodes it: '+' is a space, %XX is UTF-8
    and must be valid (QueryError otherwise)."""
    try:
        return unquote(text.replace("+", " "), errors="strict")
    except UnicodeDecodeError as exc:
        raise QueryError(str(exc)) from exc


def _decode_path(raw_key: str) -> tuple[str, ...]:
    """The still percent-encoded key of a pair as its path: `data%5BFIELDS%5D%5BID%5D` ->
    ('data', 'FIELDS', 'ID'). QueryError if it is malformed or nested too deep."""
    return tuple(_split(_unquote(raw_key)))


# Failures are not cached (lru_cache never caches a raise): a body stops at its first bad
# key, so caching them would save at most one split per refused request.
_cached_path = functools.lru_cache(maxsize=_KEY_CACHE_SIZE)(_decode_path)


def _text(body: str | bytes) -> str:
    """The body as text; bytes must be UTF-8."""
    try:
        return body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise QueryError(str(exc)) from exc


def decode(body: str | bytes, *, max_fields: int = 1000) -> dict[str, Any]:
    """Parse a form/query body into nested dicts; `a[]=` appends to a list.

    Splits the pairs as parse_qsl(keep_blank_values=True, strict_parsing=False,
    max_num_fields=max_fields, errors="strict") does, but runs on every webhook received, so
    keys (the same few dozen on every request) are decoded through a cache, and values are
    unquoted only when they hold something to unquote."""
    text = _text(body)
    # Counted as parse_qsl counts: separators + 1, and an empty body has no fields.
    if max_fields is not None and max_fields < (1 + text.count("&") if text else 0):
        raise QueryError("Max number of fields exceeded")
    result: dict[str, Any] = {}
    for component in text.split("&") if text else ():
        if not component:  # `a=1&&b=2`: parse_qsl skips empty components
            continue
        # `name` without '=' is (name, ''), as parse_qsl has it with keep_blank_values
        raw_key, _, value = component.partition("=")
        path = (_cached_path(raw_key) if len(raw_key) <= _CACHED_KEY_LENGTH
                else _decode_path(raw_key))
        if "%" in value or "+" in value:
            value = _unquote(value)
        if len(path) == 1:  # most keys are flat: `event`, `ts`
            result[path[0]] = value
        elif "" in path:  # `a[]`: lists are the rare, slow case
            _insert(result, path, value)
        else:
            _insert_into_maps(result, path, value)
    return _listify(result)


def _insert_into_maps(result: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    """_insert for a path without `[]`, where every node on the way is a map: the common
    case `auth[domain]`, with the same outcome."""
    node = result
    for segment in path[:-1]:
        child = node.get(segment)
        if child is None or isinstance(child, str):
            child = node[segment] = {}
        elif isinstance(child, list):
            raise QueryError(f"key {_key(path)!r} mixes a list and a map")
        node = child
    node[path[-1]] = value


def _insert(result: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    """Store one pair: a later `a[b]` replaces an earlier scalar `a`, and a later scalar
    replaces whatever was there; `[]` appends to a list."""
    node: Any = result
    last = len(path) - 1
    for position, segment in enumerate(path):
        if isinstance(node, list):
            if segment != "":
                raise QueryError(f"key {_key(path)!r} mixes a list and a map")
            if position == last:
                node.append(value)
                return
            node.append({})
            node = node[-1]
            continue
        if position == last:
            node[segment] = value
            return
        child_is_list = path[position + 1] == ""
        existing = node.get(segment)
        if existing is None or isinstance(existing, str):
            existing = [] if child_is_list else {}
            node[segment] = existing
        elif isinstance(existing, list) != child_is_list:
            raise QueryError(f"key {_key(path)!r} mixes a list and a map")
        node = existing


def _key(path: tuple[str, ...]) -> str:
    """The decoded key again, for error messages."""
    return path[0] + "".join(f"[{segment}]" for segment in path[1:])


def _listify(node: Any) -> Any:
    """PHP arrays are maps; a map keyed exactly 0..n-1 reads back as a list.

    Converts in place: every container here was built by this decode call."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            if not isinstance(item, str):
                node[index] = _listify(item)
        return node
    for key, item in node.items():
        if not isinstance(item, str):
            node[key] = _listify(item)  # replacing a value keeps the dict's size and order
    # Most maps are not lists and fail at the first key, without building "0".."n-1".
    if node and next(iter(node)) == "0" and all(
            key == str(index) for index, key in enumerate(node)):
        return list(node.values())
    return node


def encode(params: Mapping[str, Any]) -> str:
    """The inverse: nested dicts/lists to `a[b][]=c` pairs, like PHP's http_build_query."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        elif value is None:
            pairs.append((prefix, ""))
        elif isinstance(value, bool):
            pairs.append((prefix, "Y" if value else "N"))
        else:
            pairs.append((prefix, str(value)))

    walk("", params)
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)
