"""Reading a purchase's rows from an /api/v1 request: `rows: [{product_id, price, quantity,
section?, discount?, properties?}]`, the shape a shop's checkout sends to apply the product
rules. Every refusal names the row and the field at fault."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.products.rows import Row
from webhooks.validation import check_amount, check_text, invalid

MAX_ROWS = 500
ID_MAX = 64
QUANTITY_TEXT = re.compile(r"^[0-9]+(\.[0-9]{1,4})?$")
MAX_QUANTITY = Decimal("1000000")
ZERO_TEXT = re.compile(r"^0+(\.0{1,2})?$")
ROW_FIELDS = {"product_id", "price", "quantity", "section", "discount", "properties", "name"}


def parse_rows(value: object) -> list[Row]:
    if not isinstance(value, list):
        raise invalid("rows", "must be a list of {product_id, price, quantity}")
    if not value:
        raise invalid("rows", "must not be empty; leave it out to preview by the amount")
    if len(value) > MAX_ROWS:
        raise invalid("rows", f"at most {MAX_ROWS} rows")
    return [parse_row(f"rows[{n}]", item) for n, item in enumerate(value)]


def parse_row(at: str, item: object) -> Row:
    if not isinstance(item, Mapping):
        raise invalid(at, "must be an object {product_id, price, quantity}")
    unknown = sorted(set(item) - ROW_FIELDS)
    if unknown:
        raise invalid(f"{at}.{unknown[0]}", "unknown field")
    for name in ("product_id", "price", "quantity"):
        if item.get(name) is None:
            raise invalid(f"{at}.{name}", "required")
    product = item["product_id"]
    if isinstance(product, int) and not isinstance(product, bool):
        product = str(product)
    section = item.get("section")
    if isinstance(section, int) and not isinstance(section, bool):
        section = str(section)
    return Row(
        product_id=check_text(f"{at}.product_id", product, max_length=ID_MAX),
        price=_money(f"{at}.price", item["price"]),
        quantity=_quantity(f"{at}.quantity", item["quantity"]),
        section=None if section is None else check_text(f"{at}.section", section,
                                                        max_length=ID_MAX),
        discount=Decimal(0) if item.get("discount") is None
        else _money(f"{at}.discount", item["discount"]),
        properties=_properties(f"{at}.properties", item.get("properties")),
        name=None if item.get("name") is None else check_text(f"{at}.name", item["name"]),
    )


def _money(field: str, value: object) -> Decimal:
    """Zero is a price too (a gift in the basket); otherwise an amount as everywhere."""
    if isinstance(value, str | int | Decimal) and not isinstance(value, bool) \
            and ZERO_TEXT.fullmatch(str(value)):
        return Decimal("0.00")
    return check_amount(field, value)


def _quantity(field: str, value: object) -> Decimal:
    # Goods sold by weight or length come in fractions (1.25 kg).
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise invalid(field, "must be a number, e.g. 2 or 1.25")
    if isinstance(value, str) and not QUANTITY_TEXT.fullmatch(value):
        raise invalid(field, "must be digits with at most 4 decimal places, e.g. \"1.25\"")
    try:
        quantity = Decimal(str(value))
    except InvalidOperation:
        raise invalid(field, "must be a number, e.g. 2 or 1.25") from None
    if not quantity.is_finite() or not QUANTITY_TEXT.fullmatch(format(quantity, "f")):
        raise invalid(field, "must be a number with at most 4 decimal places")
    if not 0 < quantity <= MAX_QUANTITY:
        raise invalid(field, f"must be positive and at most {MAX_QUANTITY}")
    return quantity


def _properties(field: str, value: object) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(field, "must be an object of property: value or [values]")
    out: dict[str, tuple[str, ...]] = {}
    for name, raw in value.items():
        check_text(f"{field}.{name}", name, max_length=ID_MAX)
        values: Any = raw if isinstance(raw, list) else [raw]
        out[name] = tuple(check_text(f"{field}.{name}", str(v) if isinstance(v, int) else v)
                          for v in values)
    return out
