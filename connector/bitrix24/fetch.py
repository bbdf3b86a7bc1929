"""Fetch many entities by id with one `batch` call per 50, telling "gone" from "failed"."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client

GET = {"deal": "crm.deal.get", "contact": "crm.contact.get"}


@dataclass
class Fetched:
    found: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    missing: set[tuple[str, str]] = field(default_factory=set)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)


def is_not_found(error: dict[str, str]) -> bool:
    # Legacy CRM methods answer "Not found" / "... is not found" with an empty error code.
    return "not found" in str(error.get("error_description", "")).lower()


def fetch(client: Bitrix24Client, wanted: Iterable[tuple[str, str]]) -> Fetched:
    """`wanted` holds (kind, id) pairs, kind "deal" or "contact"."""
    pairs = list(dict.fromkeys(wanted))
    out = Fetched()
    for start in range(0, len(pairs), BATCH_LIMIT):
        chunk = pairs[start:start + BATCH_LIMIT]
        commands = {f"{kind}_{entity_id}": (GET[kind], {"id": entity_id})
                    for kind, entity_id in chunk}
        result = client.batch(commands)
        for kind, entity_id in chunk:
            name = f"{kind}_{entity_id}"
            if isinstance(result.results.get(name), dict):
                out.found[(kind, entity_id)] = result.results[name]
            elif name in result.errors and is_not_found(result.errors[name]):
                out.missing.add((kind, entity_id))
            else:
                error = result.errors.get(name, {})
                out.failed[(kind, entity_id)] = (
                    f"{GET[kind]} {entity_id}: {error.get('error') or 'no result'} "
                    f"{error.get('error_description', '')}".strip())
    return out
