"""Fetch many entities by id with one `batch` call per 50 commands, telling "gone" from
"failed". With product rules, a deal's product rows (crm.deal.productrows.get) come in the
same batch as the deal, and the catalog products they name (crm.product.get: section and
properties) in one more batch per 50 when a rule needs them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connector.crm.bitrix24 import BATCH_LIMIT, Bitrix24Client
from mappings import bitrix24 as b24
from mappings.domain import ProductRow

GET = {"deal": "crm.deal.get", "contact": "crm.contact.get"}
ROWS = "crm.deal.productrows.get"
PRODUCT = "crm.product.get"


@dataclass
class Fetched:
    found: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    missing: set[tuple[str, str]] = field(default_factory=set)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    rows: dict[str, list[Any]] = field(default_factory=dict)  # by deal id, when read
    products: dict[str, dict[str, Any]] = field(default_factory=dict)

    def product_rows(self, deal_id: str) -> tuple[ProductRow, ...] | None:
        """The deal's rows as the rules read them; None when they were not read."""
        if deal_id not in self.rows:
            return None
        return b24.product_rows(self.rows[deal_id], self.products)


def is_not_found(error: dict[str, str]) -> bool:
    # Legacy CRM methods answer "Not found" / "... is not found" with an empty error code.
    return "not found" in str(error.get("error_description", "")).lower()


def _failure(method: str, entity_id: str, error: dict[str, str]) -> str:
    return (f"{method} {entity_id}: {error.get('error') or 'no result'} "
            f"{error.get('error_description', '')}".strip())


def fetch(client: Bitrix24Client, wanted: Iterable[tuple[str, str]], *, rows: bool = False,
          catalog: bool = False) -> Fetched:
    """`wanted` holds (kind, id) pairs, kind "deal" or "contact". `rows`: read each deal's
    product rows with it; `catalog`: and the products those rows name."""
    pairs = list(dict.fromkeys(wanted))
    out = Fetched()
    per_pair = {pair: 2 if rows and pair[0] == "deal" else 1 for pair in pairs}
    chunk: list[tuple[str, str]] = []
    for pair in pairs:
        if sum(per_pair[p] for p in chunk) + per_pair[pair] > BATCH_LIMIT:
            _fetch_chunk(client, chunk, rows, out)
            chunk = []
        chunk.append(pair)
    if chunk:
        _fetch_chunk(client, chunk, rows, out)
    if catalog:
        fetch_products(client, out)
    return out


def _fetch_chunk(client: Bitrix24Client, chunk: list[tuple[str, str]], rows: bool,
                 out: Fetched) -> None:
    commands = {f"{kind}_{entity_id}": (GET[kind], {"id": entity_id})
                for kind, entity_id in chunk}
    if rows:
        commands.update({f"rows_{entity_id}": (ROWS, {"id": entity_id})
                         for kind, entity_id in chunk if kind == "deal"})
    result = client.batch(commands)
    for kind, entity_id in chunk:
        name = f"{kind}_{entity_id}"
        if isinstance(result.results.get(name), dict):
            out.found[(kind, entity_id)] = result.results[name]
        elif name in result.errors and is_not_found(result.errors[name]):
            out.missing.add((kind, entity_id))
            continue
        else:
            out.failed[(kind, entity_id)] = _failure(GET[kind], entity_id,
                                                     result.errors.get(name, {}))
            continue
        if rows and kind == "deal":
            got = result.results.get(f"rows_{entity_id}")
            if isinstance(got, list | dict):
                # PHP's json_encode writes an empty array as [] and a list as a list.
                out.rows[entity_id] = list(got.values()) if isinstance(got, dict) else got
            else:
                # Settling without its rows would earn on the amount, then re-price later.
                del out.found[(kind, entity_id)]
                out.failed[(kind, entity_id)] = _failure(
                    ROWS, entity_id, result.errors.get(f"rows_{entity_id}", {}))


def fetch_rows(client: Bitrix24Client, deal_ids: Iterable[str], *,
               catalog: bool = False) -> Fetched:
    """Only the product rows of deals already read (a list page), 50 deals a batch."""
    ids = list(dict.fromkeys(deal_ids))
    out = Fetched()
    for start in range(0, len(ids), BATCH_LIMIT):
        chunk = ids[start:start + BATCH_LIMIT]
        result = client.batch({f"rows_{deal_id}": (ROWS, {"id": deal_id}) for deal_id in chunk})
        for deal_id in chunk:
            got = result.results.get(f"rows_{deal_id}")
            if isinstance(got, list | dict):
                out.rows[deal_id] = list(got.values()) if isinstance(got, dict) else got
            elif is_not_found(result.errors.get(f"rows_{deal_id}", {})):
                out.missing.add(("deal", deal_id))  # deleted since the list was read
            else:
                out.failed[("deal", deal_id)] = _failure(
                    ROWS, deal_id, result.errors.get(f"rows_{deal_id}", {}))
    if catalog:
        fetch_products(client, out)
    return out


def fetch_products(client: Bitrix24Client, out: Fetched) -> None:
    """The catalog products the fetched rows name (section, properties). A product gone
    from the catalog is read as one without section or properties; a failed read fails
    the deals whose rows name it."""
    wanted = list(dict.fromkeys(
        str(row.get("PRODUCT_ID")) for deal_rows in out.rows.values() for row in deal_rows
        if isinstance(row, dict) and str(row.get("PRODUCT_ID") or "0") not in ("0", "")
        and str(row.get("PRODUCT_ID")) not in out.products))
    failed: dict[str, str] = {}
    for start in range(0, len(wanted), BATCH_LIMIT):
        chunk = wanted[start:start + BATCH_LIMIT]
        result = client.batch({f"product_{pid}": (PRODUCT, {"id": pid}) for pid in chunk})
        for pid in chunk:
            name = f"product_{pid}"
            if isinstance(result.results.get(name), dict):
                out.products[pid] = result.results[name]
            elif name in result.errors and is_not_found(result.errors[name]):
                out.products[pid] = {}
            else:
                failed[pid] = _failure(PRODUCT, pid, result.errors.get(name, {}))
    for deal_id, deal_rows in list(out.rows.items()):
        problems = [failed[str(row.get("PRODUCT_ID"))] for row in deal_rows
                    if isinstance(row, dict) and str(row.get("PRODUCT_ID")) in failed]
        if problems:
            out.found.pop(("deal", deal_id), None)
            del out.rows[deal_id]
            out.failed[("deal", deal_id)] = problems[0]
