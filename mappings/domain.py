"""Domain records the CRM mappings produce: plain frozen data, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# CRM entity ids are positive integers: ASCII digits (str.isdigit also takes "²" and other
# scripts' digits) that fit a 64-bit column.
_ENTITY_ID = re.compile(r"[1-9][0-9]{0,17}")


# Far above any real purchase, far below BIGINT overflow once scaled and summed; beyond it
# a CRM's amount, price or quantity is garbage, and Decimal's quantize (28 digits) would
# overflow on one like "1e30".
MAX_AMOUNT = Decimal("1000000000000")
CENT = Decimal("0.01")


def crm_number(raw: object) -> Decimal | None:
    """A CRM's number (a string, an int) as a finite Decimal within ±MAX_AMOUNT, else None."""
    try:
        value = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() and abs(value) <= MAX_AMOUNT else None


def crm_amount(raw: object) -> Decimal | None:
    """A CRM's money value to the cent, or None when it is not a usable number."""
    value = crm_number(raw)
    return value.quantize(CENT) if value is not None else None


def entity_id(value: object) -> str | None:
    """A CRM entity id as text, or None when `value` is not one (empty, 0, garbage)."""
    text = str(value if value is not None else "").strip()
    return text if _ENTITY_ID.fullmatch(text) else None


@dataclass(frozen=True)
class ProductRow:
    """One product line of a purchase: `price` is what one unit costs the customer, after
    its discount; `discount` is the discount on one unit (0: sold at full price)."""

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


@dataclass(frozen=True)
class PurchaseState:
    """What the ledger should hold for a deal: a purchase of `amount` by `contact_id`, or
    nothing (`amount` None) with the reason."""

    source: str
    contact_id: str | None
    amount: Decimal | None
    category: str | None = None
    occurred_at: datetime | None = None
    reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    rows: tuple[ProductRow, ...] | None = None  # None: not read (no product rules)


# Fields the connector reads and never writes: the code a newcomer came with is the CRM's
# (a manager, a web form or a robot sets it).
READ_ONLY_FIELDS = ("referred_by",)


def written_fields(fields: Mapping[str, str]) -> list[str]:
    """The CRM names of the fields write-back keeps current."""
    return [name for key, name in fields.items() if key not in READ_ONLY_FIELDS]


def number_text(value: Decimal) -> str:
    """A number as CRMs show it: no trailing zeros, never "-0"."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def loyalty_values(fields: Mapping[str, str], *, balance: Decimal, available: Decimal,
                   tier: str,
                   discount: Decimal, expiring_points: Decimal, expiring_date: str,
                   segment: str | None, card: str | None,
                   card_url: str | None = None,
                   referral_code: str | None = None, perks: str | None = None
                   ) -> dict[str, str]:
    """What a contact's loyalty fields show, keyed by the CRM's own field names;
    `expiring_date` comes already in the CRM's date format ("" when none); `card_url` is
    the customer's card page ("" while card pages are off); `perks` the tier's perks."""
    values = {"balance": number_text(balance), "available": number_text(available),
              "tier": tier, "discount": number_text(discount),
              "expiring_points": number_text(expiring_points), "expiring_date": expiring_date,
              "segment": segment or "", "card": card or "", "card_url": card_url or "",
              "referral_code": referral_code or "", "perks": perks or ""}
    return {fields[name]: value for name, value in values.items() if name in fields}

