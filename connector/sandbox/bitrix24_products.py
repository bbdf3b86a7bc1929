"""Products of the fake portal: the catalog (crm.product.add / crm.product.get) and a deal's
product rows (crm.deal.productrows.set / .get), in the documented formats
(api-reference/crm/deals/crm-deal-productrows-get.md, crm-deal-productrows-set.md,
api-reference/crm/outdated/products/crm-product-get.md).

Rows come back with numbers as JSON numbers (`"PRICE": 899.1`, `"QUANTITY": 1`), the row's
own ID and OWNER_ID as strings and PRODUCT_ID as an integer, as in the documented answer.
PRICE is the final price of one unit (after its discount, with tax); DISCOUNT_SUM the discount
on one unit. While the deal's sum is not set by hand (IS_MANUAL_OPPORTUNITY "N"), saving its
rows makes OPPORTUNITY their total. The fake then treats the save as a change of the deal
(DATE_MODIFY, ONCRMDEALUPDATE); the documentation does not say whether a portal does so for
rows whose total is unchanged, which is why the connector also settles on reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.sandbox.bitrix24_methods import Context, crm_error, method, positive_id
from connector.sandbox.bitrix24_php import ci_get, seq

CENT = Decimal("0.01")


def _number(value: Any, default: str = "0") -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else default))
    except InvalidOperation:
        raise crm_error(f"Invalid number {value!r}") from None


def _json_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


class ProductStore:
    def __init__(self) -> None:
        self.products: dict[int, dict[str, Any]] = {}
        self.rows: dict[int, list[dict[str, Any]]] = {}
        self._next_product = 440
        self._next_row = 1

    def add_product(self, fields: Mapping[str, Any]) -> int:
        product_id = self._next_product
        self._next_product += 1
        product: dict[str, Any] = {
            "ID": product_id, "CATALOG_ID": 24, "PRICE": _number(fields.get("PRICE")),
            "CURRENCY_ID": fields.get("CURRENCY_ID") or "RUB",
            "NAME": fields.get("NAME") or f"Product #{product_id}", "CODE": None,
            "DESCRIPTION": None, "DESCRIPTION_TYPE": "text", "ACTIVE": "Y",
            "SECTION_ID": int(fields["SECTION_ID"]) if fields.get("SECTION_ID") else None,
            "SORT": 500, "VAT_ID": None, "VAT_INCLUDED": "Y", "MEASURE": 9, "XML_ID": None,
        }
        for key, value in fields.items():
            if str(key).upper().startswith("PROPERTY_"):
                product[str(key).upper()] = value
        self.products[product_id] = product
        return product_id

    def show_product(self, product: Mapping[str, Any]) -> dict[str, Any]:
        """Scalars as strings (the legacy CRM way); a property as {valueId, value}, a
        multiple one as a list of them."""
        out: dict[str, Any] = {}
        for key, value in product.items():
            if key.startswith("PROPERTY_"):
                values = value if isinstance(value, list) else [value]
                shown = [{"valueId": str(1000 + n), "value": str(v)}
                         for n, v in enumerate(values) if v is not None]
                out[key] = shown if isinstance(value, list) else (shown[0] if shown else None)
            elif value is None or isinstance(value, str):
                out[key] = value
            elif isinstance(value, Decimal):
                out[key] = f"{value:.2f}"
            else:
                out[key] = str(value)
        return out

    def set_rows(self, deal_id: int, rows: list[Any]) -> Decimal:
        """Replace the deal's rows; returns their total."""
        stored = []
        for sort, raw in enumerate(rows, start=1):
            if not isinstance(raw, Mapping):
                raise crm_error("Invalid product row")
            row = {str(k).upper(): v for k, v in raw.items()}
            product_id = int(row.get("PRODUCT_ID") or 0)
            product = self.products.get(product_id)
            price = _number(row.get("PRICE"))
            discount_type = int(row.get("DISCOUNT_TYPE_ID") or 2)
            if discount_type == 1 and row.get("DISCOUNT_SUM") in (None, ""):
                raise crm_error("Discount Sum (DISCOUNT_SUM) is required if Monetary Discount "
                                "Type (DISCOUNT_TYPE_ID) is defined.")
            discount_sum = _number(row.get("DISCOUNT_SUM"))
            discount_rate = _number(row.get("DISCOUNT_RATE"))
            netto = price + discount_sum
            if discount_type == 2 and discount_rate and not discount_sum:
                # A percentage off the full price: PRICE is what remains of it.
                netto = (price * 100 / (100 - discount_rate)).quantize(CENT)
                discount_sum = netto - price
            name = (product or {}).get("NAME") or row.get("PRODUCT_NAME") or f"[{self._next_row}]"
            stored.append({
                "ID": str(self._next_row), "OWNER_ID": str(deal_id), "OWNER_TYPE": "D",
                "PRODUCT_ID": product_id, "PRODUCT_NAME": name, "ORIGINAL_PRODUCT_NAME": name,
                "PRODUCT_DESCRIPTION": None, "PRICE": price, "PRICE_EXCLUSIVE": price,
                "PRICE_NETTO": netto, "PRICE_BRUTTO": netto, "PRICE_ACCOUNT": f"{price:.2f}",
                "QUANTITY": _number(row.get("QUANTITY"), "1"), "DISCOUNT_TYPE_ID": discount_type,
                "DISCOUNT_RATE": discount_rate, "DISCOUNT_SUM": discount_sum, "TAX_RATE": None,
                "TAX_INCLUDED": row.get("TAX_INCLUDED") or "N", "CUSTOMIZED": "Y",
                "MEASURE_CODE": int(row.get("MEASURE_CODE") or 796),
                "MEASURE_NAME": row.get("MEASURE_NAME") or "шт",
                "SORT": int(row.get("SORT") or sort * 10), "XML_ID": None, "TYPE": 1,
                "STORE_ID": 0, "RESERVE_ID": None, "DATE_RESERVE_END": None,
                "RESERVE_QUANTITY": 0,
            })
            self._next_row += 1
        self.rows[deal_id] = stored
        return sum((r["PRICE"] * r["QUANTITY"] for r in stored), Decimal(0)).quantize(CENT)

    def show_rows(self, deal_id: int) -> list[dict[str, Any]]:
        return [{key: _json_number(value) if isinstance(value, Decimal) else value
                 for key, value in row.items()} for row in self.rows.get(deal_id, [])]


@method("crm.product.add")
def product_add(ctx: Context, params: dict[str, Any]) -> int:
    fields = ci_get(params, "fields")
    if not isinstance(fields, Mapping):
        raise crm_error("Parameter 'fields' must be array")
    with ctx.portal.lock:
        return ctx.portal.products.add_product({str(k).upper(): v for k, v in fields.items()})


@method("crm.product.get")
def product_get(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    product = ctx.portal.products.products.get(positive_id(params))
    if product is None:
        raise crm_error("Not found")
    return ctx.portal.products.show_product(product)


@method("crm.deal.productrows.get")
def productrows_get(ctx: Context, params: dict[str, Any]) -> list[dict[str, Any]]:
    deal_id = positive_id(params, message="The parameter id is invalid or not defined.")
    if deal_id not in ctx.portal.store.deals:
        raise crm_error("Not found")
    return ctx.portal.products.show_rows(deal_id)


@method("crm.deal.productrows.set")
def productrows_set(ctx: Context, params: dict[str, Any]) -> bool:
    deal_id = positive_id(params, message="The parameter id is invalid or not defined.")
    if deal_id not in ctx.portal.store.deals:
        raise crm_error("Not found")
    ctx.portal.set_deal_rows(deal_id, seq(ci_get(params, "rows")))
    return True
