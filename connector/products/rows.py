"""A purchase's rows as the rules see them: plain data, built from a CRM or an API request."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Row:
    """One product line: `price` is what one unit costs the customer, after its discount;
    `discount` is the discount on one unit (0: sold at full price)."""

    product_id: str
    price: Decimal
    quantity: Decimal
    section: str | None = None
    discount: Decimal = Decimal(0)
    properties: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    name: str | None = None

    @property
    def amount(self) -> Decimal:
        return (self.price * self.quantity).quantize(CENT)

    def canonical(self) -> list[object]:
        return [self.product_id, str(self.amount), str(self.quantity.normalize()),
                self.section, str(self.discount.quantize(CENT)),
                sorted([key, sorted(values)] for key, values in self.properties.items())]


def rows_total(rows: Iterable[Row]) -> Decimal:
    return sum((row.amount for row in rows), Decimal("0.00"))


def digest(rows: Iterable[Row]) -> str:
    """Names a row list by what the rules read of it, in any order: a purchase whose digest
    changed is settled again, like one whose amount changed."""
    lines = sorted(json.dumps(row.canonical(), separators=(",", ":")) for row in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]
