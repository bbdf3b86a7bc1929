"""PHP wire formats the fake portal speaks: parse_str, http_build_query and json_encode quirks.

Bitrix24 is PHP: form bodies, query strings and batch commands are read with `parse_str`
(`filter[>ID]=5`, `select[]=ID`), and answers are written with `json_encode`, which turns an
empty array into `[]` and a 0..n-keyed array into a list
(settings/how-to-call-rest-api/batch.md shows `"result_error": []`).
Written independently of `mappings.phpquery` so the fake stays an oracle for that code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus, urlencode


def parse_query(text: str) -> dict[str, Any]:
    """PHP `parse_str`: nested maps with string keys; `a[]` appends with the next integer key."""
    pairs = []
    for pair in text.split("&"):
        if pair:
            raw_key, _, raw_value = pair.partition("=")
            pairs.append((unquote_plus(raw_key), unquote_plus(raw_value)))
    return from_pairs(pairs)


def from_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest already-decoded `(key, value)` fields (e.g. multipart form fields) like parse_str."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        _assign(result, _segments(key), value)
    return result


def _segments(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    segments = [head]
    rest = "[" + rest
    while rest.startswith("["):
        end = rest.find("]")
        if end < 0:  # PHP keeps an unclosed bracket as part of the name
            segments[-1] += rest
            break
        segments.append(rest[1:end])
        rest = rest[end + 1:]
    return segments


def _assign(node: dict[str, Any], path: list[str], value: str) -> None:
    for position, segment in enumerate(path):
        if segment == "" and position > 0:
            numeric = [int(k) for k in node if k.lstrip("-").isdigit()]
            segment = str(max(numeric) + 1 if numeric else 0)
        if position == len(path) - 1:
            node[segment] = value
            return
        child = node.get(segment)
        if not isinstance(child, dict):  # PHP replaces a scalar by the array being built
            child = node[segment] = {}
        node = child


def build_query(data: Mapping[str, Any]) -> str:
    """PHP `http_build_query`: `a[b][0]=v`; True/False as 1/0; None is left out as PHP does."""
    return urlencode(list(_flatten(data, "")))


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        if value is None:
            return
        yield prefix, scalar(value)
        return
    for key, item in items:
        yield from _flatten(item, f"{prefix}[{key}]" if prefix else str(key))


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"  # http_build_query writes booleans as integers
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def php_json(value: Any) -> Any:
    """Shape a value as PHP's json_encode would: [] for an empty map, lists for 0..n keys."""
    if isinstance(value, Mapping):
        if not value:
            return []
        keys = list(value)
        if keys == [str(i) for i in range(len(keys))] or keys == list(range(len(keys))):
            return [php_json(v) for v in value.values()]
        return {str(k): php_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [php_json(v) for v in value]
    return value


def seq(value: Any) -> list[Any]:
    """A PHP array given as a list (JSON), a map (form `a[0]=..`) or a lone scalar, as a list."""
    if value is None or value == "":
        return []
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def ci_get(params: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """Legacy CRM and bizproc methods upper-case their parameter keys (CRest passes `ID` or
    `id`, `EVENT` or `event`), so look names up case-insensitively."""
    if name in params:
        return params[name]
    lowered = name.lower()
    for key, value in params.items():
        if str(key).lower() == lowered:
            return value
    return default
