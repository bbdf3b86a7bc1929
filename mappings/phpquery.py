"""PHP-style query strings, the wire format of Bitrix24 and amoCRM form bodies.

`data[FIELDS][ID]=7&select[]=ID` <-> {"data": {"FIELDS": {"ID": "7"}}, "select": ["ID"]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 8  # deeper nesting is refused rather than built (hostile bodies)


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


def decode(body: str | bytes, *, max_fields: int = 1000) -> dict[str, Any]:
    """Parse a form/query body into nested dicts; `a[]=` appends to a list."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                          max_num_fields=max_fields, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError(str(exc)) from exc
    result: dict[str, Any] = {}
    for key, value in pairs:
        path = _split(key)
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
    return _listify(result)


def _listify(node: Any) -> Any:
    """PHP arrays are maps; a map keyed exactly 0..n-1 reads back as a list."""
    if isinstance(node, list):
        return [_listify(item) for item in node]
    if isinstance(node, dict):
        converted = {key: _listify(value) for key, value in node.items()}
        if converted and list(converted) == [str(i) for i in range(len(converted))]:
            return list(converted.values())
        return converted
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
