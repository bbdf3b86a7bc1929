"""Bitrix24 payloads <-> the connector's domain, as pure functions (no I/O).

Bitrix24 sends form-encoded bodies with PHP-style keys (`data[FIELDS][ID]`,
`auth[application_token]`); `mappings.phpquery.decode` turns them into nested dicts first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from mappings.domain import (
    ProductRow,
    PurchaseState,
    crm_amount,
    crm_number,
    entity_id,
    loyalty_values,
    number_text,
)

DEAL_EVENTS = ("ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALDELETE")
CONTACT_EVENTS = ("ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE")
APP_EVENTS = ("ONAPPINSTALL", "ONAPPUNINSTALL")
EVENTS = DEAL_EVENTS + CONTACT_EVENTS + APP_EVENTS
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T|$)")
WON = "S"  # STAGE_SEMANTIC_ID of a successful deal, in every funnel
DEAL_SELECT = ["ID", "CONTACT_ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "CATEGORY_ID",
               "OPPORTUNITY", "CURRENCY_ID", "CLOSEDATE", "DATE_MODIFY"]


class PayloadError(ValueError):
    """The body is not a Bitrix24 event or robot call we can use; says which key is wrong."""


@dataclass(frozen=True)
class Auth:
    domain: str
    member_id: str
    application_token: str
    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: str | None = None
    client_endpoint: str | None = None

    def __repr__(self) -> str:
        return f"Auth(domain={self.domain!r}, member_id={self.member_id!r})"


@dataclass(frozen=True)
class Event:
    name: str
    entity_id: str | None
    ts: str | None
    auth: Auth


@dataclass(frozen=True)
class RobotCall:
    code: str
    workflow_id: str
    event_token: str
    document: str  # e.g. "DEAL_123"
    properties: dict[str, str]
    auth: Auth

    @property
    def deal_id(self) -> str | None:
        kind, _, number = self.document.partition("_")
        return entity_id(number) if kind == "DEAL" else None


def _text(data: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if required:
        raise PayloadError(f"{key}: missing or empty")
    return None


def parse_auth(form: Mapping[str, Any]) -> Auth:
    auth = form.get("auth")
    if not isinstance(auth, Mapping):
        raise PayloadError("auth: missing")
    return Auth(
        domain=_text(auth, "domain") or "",
        # Missing credentials are for authentication to refuse (401), not a malformed body.
        member_id=_text(auth, "member_id", required=False) or "",
        application_token=_text(auth, "application_token", required=False) or "",
        access_token=_text(auth, "access_token", required=False),
        refresh_token=_text(auth, "refresh_token", required=False),
        expires_in=_text(auth, "expires_in", required=False),
        client_endpoint=_text(auth, "client_endpoint", required=False),
    )


def _fields(form: Any) -> Mapping[str, Any]:
    # A body of bare numeric keys ("0=…&1=…") decodes to a list, not to named fields.
    if not isinstance(form, Mapping):
        raise PayloadError("expected named form fields (event=…&data[…]=…&auth[…]=…)")
    return form


def parse_event(form: Mapping[str, Any]) -> Event:
    form = _fields(form)
    name = (_text(form, "event") or "").upper()
    if name not in EVENTS:
        raise PayloadError(f"event: {name[:64]!r} is not handled")
    event_entity = None
    if name not in APP_EVENTS:
        data = form.get("data")
        fields = data.get("FIELDS") if isinstance(data, Mapping) else None
        event_entity = entity_id(_text(fields, "ID") if isinstance(fields, Mapping) else None)
        if event_entity is None:
            raise PayloadError("data[FIELDS][ID]: missing or not an id")
    return Event(name, event_entity, _text(form, "ts", required=False), parse_auth(form))


def parse_robot(form: Mapping[str, Any]) -> RobotCall:
    form = _fields(form)
    document = form.get("document_id")
    if not isinstance(document, list) or len(document) != 3:
        raise PayloadError("document_id: expected [module, class, ID]")
    properties = form.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise PayloadError("properties: expected a map")
    return RobotCall(
        code=_text(form, "code") or "",
        workflow_id=_text(form, "workflow_id") or "",
        event_token=_text(form, "event_token") or "",
        document=str(document[2]),
        properties={str(k): v if isinstance(v, str) else "" for k, v in properties.items()},
        auth=parse_auth(form),
    )


def robot_key(portal: str, event_token: str) -> str:
    """One robot run has one event token: the idempotency key of what it does."""
    return f"bitrix24:{portal}:robot:{hashlib.sha256(event_token.encode()).hexdigest()[:40]}"


def deal_source(portal: str, deal_id: str) -> str:
    return f"bitrix24:{portal}:deal:{deal_id}"


def parse_amount(raw: Any) -> Decimal | None:
    return crm_amount(raw)


def parse_datetime(raw: Any) -> datetime | None:
    """Portal datetimes carry their offset: "2026-11-23T10:00:00+03:00"."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def product_rows(rows: Any,
                 products: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[ProductRow, ...]:
    """crm.deal.productrows.get's rows (PRICE: one unit's final price; DISCOUNT_SUM: the
    discount on one unit), with each catalog product's SECTION_ID and PROPERTY_* values
    from crm.product.get when `products` has it. Rows without a usable price or quantity
    are left out: they earn nothing either way."""
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, Mapping):
            continue
        price = parse_amount(row.get("PRICE"))
        quantity = crm_number(row.get("QUANTITY"))
        if price is None or price < 0 or quantity is None or quantity <= 0:
            continue
        product_id = str(row.get("PRODUCT_ID") or "0").strip()
        product = (products or {}).get(product_id) or {}
        discount = parse_amount(row.get("DISCOUNT_SUM"))
        name = row.get("PRODUCT_NAME")
        out.append(ProductRow(
            product_id=product_id, price=price, quantity=quantity,
            section=entity_id(product.get("SECTION_ID")),
            discount=discount if discount is not None and discount > 0 else Decimal(0),
            properties=product_properties(product),
            name=name if isinstance(name, str) else None))
    return tuple(out)


def product_properties(product: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """crm.product.get shows a property as {"valueId", "value"}, a multiple one as a list
    of them, an unset one as null."""
    out = {}
    for key, raw in product.items():
        if not key.startswith("PROPERTY_") or raw is None:
            continue
        items = raw if isinstance(raw, list) else [raw]
        values = tuple(str(item.get("value")) if isinstance(item, Mapping) else str(item)
                       for item in items
                       if item is not None and (not isinstance(item, Mapping)
                                                or item.get("value") is not None))
        if values:
            out[key] = values
    return out


def purchase_state(deal: Mapping[str, Any], *, portal: str, categories: list[str],
                   rows: tuple[ProductRow, ...] | None = None) -> PurchaseState:
    """A won deal (STAGE_SEMANTIC_ID "S") in an included funnel is a purchase of its
    OPPORTUNITY by its contact, earning by its product `rows` when they were read;
    anything else holds no purchase."""
    deal_id = str(deal.get("ID", ""))
    source = deal_source(portal, deal_id)
    contact_id = entity_id(deal.get("CONTACT_ID"))
    category = str(deal.get("CATEGORY_ID") or "0")
    amount = parse_amount(deal.get("OPPORTUNITY"))
    occurred = parse_datetime(deal.get("CLOSEDATE")) or parse_datetime(deal.get("DATE_MODIFY"))
    raw = {key: deal.get(key) for key in DEAL_SELECT if key in deal}

    def nothing(reason: str) -> PurchaseState:
        return PurchaseState(source, contact_id, None, category, occurred, reason, raw, rows)

    if deal.get("STAGE_SEMANTIC_ID") != WON:
        return nothing("deal is not won")
    if categories and category not in categories:
        return nothing(f"funnel {category} is not in bitrix24.deal_categories")
    if contact_id is None:
        return nothing("deal has no contact")
    if amount is None or amount <= 0:
        return nothing("deal amount is zero, missing or not a usable number")
    return PurchaseState(source, contact_id, amount, category, occurred, None, raw, rows)


def birthday(contact: Mapping[str, Any]) -> date | None:
    """BIRTHDATE comes as midnight in portal time; its date part is the birthday."""
    parsed = parse_datetime(contact.get("BIRTHDATE"))
    return parsed.date() if parsed else None


def contact_values(fields: Mapping[str, str], *, balance: Decimal, available: Decimal,
                   tier: str,
                   discount: Decimal, expiring_points: Decimal, expiring_date: date | None,
                   segment: str | None, card: str | None,
                   card_url: str | None = None,
                   referral_code: str | None = None, perks: str | None = None
                   ) -> dict[str, str]:
    """The contact user-field values, as the strings the portal stores and returns."""
    return loyalty_values(fields, balance=balance, available=available, tier=tier,
                          discount=discount,
                          expiring_points=expiring_points,
                          expiring_date=expiring_date.isoformat() if expiring_date else "",
                          segment=segment, card=card, card_url=card_url,
                          referral_code=referral_code, perks=perks)


def referred_by(contact: Mapping[str, Any], field: str | None) -> str | None:
    """The referral code in the contact's `referred_by` user field (crm.contact.get returns
    every UF_CRM_ field: a string, or a list for a multiple field)."""
    if not field:
        return None
    value = contact.get(field)
    if isinstance(value, list):
        value = next((item for item in value if item), None)
    text = str(value).strip() if isinstance(value, str | int) else ""
    return text or None


def changed_values(wanted: Mapping[str, str], known: Mapping[str, Any]) -> dict[str, str]:
    """The fields whose value in the CRM (or last written) differs from what it should be."""
    return {name: value for name, value in wanted.items()
            if _normal(known.get(name)) != _normal(value)}


def _normal(value: Any) -> str:
    """Compare as the portal shows values: "150" == "150.00", None == "", and a date field
    read back as "2026-12-01T00:00:00+03:00" equals "2026-12-01"."""
    if value is None or value is False:
        return ""
    if isinstance(value, list):
        value = value[0] if value else ""
    text = str(value).strip()
    if _DATE.match(text):
        return text[:10]
    amount = parse_amount(text) if text else None
    return number_text(amount) if amount is not None else text
