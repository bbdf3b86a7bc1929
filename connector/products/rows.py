"""A purchase's rows as the rules see them: plain data, built from a CRM or an API request."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from decimal import Decimal

from mappings.domain import ProductRow

CENT = Decimal("0.01")


# The CRM mappings build rows too, and they import only the domain types.
Row = ProductRow


def canonical(row: Row) -> list[object]:
    return [row.product_id, str(row.amount), str(row.quantity.normalize()), row.section,
            str(row.discount.quantize(CENT)),
            sorted([key, sorted(values)] for key, values in row.properties.items())]


def rows_total(rows: Iterable[Row]) -> Decimal:
    return sum((row.amount for row in rows), Decimal("0.00"))


def as_json(row: Row) -> dict[str, str]:
    """A returned row as the request named it, kept beside the entry."""
    return {"product_id": row.product_id, "price": str(row.price),
            "quantity": str(row.quantity)}


def digest(rows: Iterable[Row]) -> str:
    """Names a row list by what the rules read of it, in any order: a purchase whose digest
    changed is settled again, like one whose amount changed."""
    lines = sorted(json.dumps(canonical(row), separators=(",", ":")) for row in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]
