"""amoCRM payloads <-> the connector's domain, as pure functions (no I/O).

Account webhooks are form-encoded with API v2 keys (`leads[status][0][id]`,
`contacts[update][0][custom_fields][0][values][0][value]`, `account[subdomain]`), decoded by
`mappings.phpquery.decode` first. Leads are re-read through API v4, which is the truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from mappings.domain import (
    ProductRow,
    PurchaseState,
    crm_amount,
    crm_number,
    entity_id,
    loyalty_values,
    number_text,
)

WON = 142  # "Успешно реализовано": the same id in every pipeline
LEAD_ACTIONS = ("add", "update", "status", "restore", "responsible")
CONTACT_ACTIONS = ("add", "update", "restore", "responsible")


class PayloadError(ValueError):
    """Not an amoCRM webhook we can use; says which key is wrong."""


@dataclass(frozen=True)
class Webhook:
    subdomain: str | None
    leads_changed: list[str] = field(default_factory=list)
    leads_deleted: list[str] = field(default_factory=list)
    contacts_added: list[dict[str, Any]] = field(default_factory=list)
    contacts_updated: list[dict[str, Any]] = field(default_factory=list)
    contacts_deleted: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.leads_changed or self.leads_deleted or self.contacts_added
                    or self.contacts_updated or self.contacts_deleted)

    @property
    def contact_ids(self) -> set[str]:
        """Every contact the hook names: added, changed or deleted."""
        return {str(c["id"]) for c in [*self.contacts_added, *self.contacts_updated]} | set(
            self.contacts_deleted)


def _items(block: Any) -> list[Any]:
    if isinstance(block, list):
        return block
    if isinstance(block, Mapping):
        return list(block.values())
    return [block] if block not in (None, "") else []


def _id(item: Any) -> str | None:
    return entity_id(item.get("id") if isinstance(item, Mapping) else item)


def parse_webhook(form: Mapping[str, Any]) -> Webhook:
    if not isinstance(form, Mapping):  # bare numeric keys decode to a list
        raise PayloadError("expected leads[...] or contacts[...] form fields")
    leads = form.get("leads") or {}
    contacts = form.get("contacts") or {}
    if not isinstance(leads, Mapping) or not isinstance(contacts, Mapping):
        raise PayloadError("leads/contacts: expected leads[action][n][...] keys")
    changed = [lead_id for action in LEAD_ACTIONS for item in _items(leads.get(action))
               if (lead_id := _id(item))]
    deleted = [lead_id for item in _items(leads.get("delete")) if (lead_id := _id(item))]
    added, updated = [], []
    for action, target in (("add", added), ("update", updated), ("restore", updated),
                           ("responsible", updated)):
        for item in _items(contacts.get(action)):
            # Companies arrive under contacts[...] too, told apart by type.
            if isinstance(item, Mapping) and _id(item) and item.get("type", "contact") == \
                    "contact":
                target.append(dict(item))
    # A deletion is `contacts[delete][0][id]=…&contacts[delete][0][type]=contact`, or by the
    # format page just the id; a company's carries type=company.
    gone = [contact_id for item in _items(contacts.get("delete"))
            if (contact_id := _id(item)) and (not isinstance(item, Mapping)
                                              or item.get("type", "contact") == "contact")]
    account = form.get("account") if isinstance(form.get("account"), Mapping) else {}
    hook = Webhook(account.get("subdomain"), list(dict.fromkeys(changed)),
                   list(dict.fromkeys(deleted)), added, updated, list(dict.fromkeys(gone)))
    if hook.empty and not form.get("account"):
        raise PayloadError("no leads[...] or contacts[...] in the body")
    return hook


def lead_source(portal: str, lead_id: str | int) -> str:
    return f"amocrm:{portal}:lead:{lead_id}"


def main_contact(lead: Mapping[str, Any]) -> str | None:
    contacts = ((lead.get("_embedded") or {}).get("contacts")) or []
    chosen = next((c for c in contacts if c.get("is_main")), contacts[0] if contacts else None)
    return str(chosen["id"]) if chosen and chosen.get("id") else None


Elements = Mapping[tuple[str, str], Mapping[str, Any]]  # (catalog id, element id)


def linked_elements(lead: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """(catalog id, element id) of the lead's products (`with=catalog_elements`); None when
    the lead was read without them."""
    links = (lead.get("_embedded") or {}).get("catalog_elements")
    if not isinstance(links, list):
        return None
    out = []
    for link in links:
        if isinstance(link, Mapping):
            catalog = entity_id((link.get("metadata") or {}).get("catalog_id"))
            element = entity_id(link.get("id"))
            if catalog and element:
                out.append((catalog, element))
    return out


def lead_rows(lead: Mapping[str, Any], elements: Elements) -> tuple[ProductRow, ...] | None:
    """The lead's products as rows: each link's `metadata.quantity` of the element, at the
    element's price (the field `metadata.price_id` names, else the one coded PRICE). The
    section is the list (catalog) the element belongs to; properties are its fields, by code
    and by id. None when the lead was read without its products."""
    links = (lead.get("_embedded") or {}).get("catalog_elements")
    if not isinstance(links, list):
        return None
    rows = []
    for link in links:
        if not isinstance(link, Mapping):
            continue
        meta = link.get("metadata") or {}
        catalog, element_id = entity_id(meta.get("catalog_id")), entity_id(link.get("id"))
        if not catalog or not element_id:
            continue
        element = elements.get((catalog, element_id)) or {}
        price = element_price(element, meta.get("price_id"))
        quantity = crm_number(meta.get("quantity", 1))
        if price is None or price < 0 or quantity is None or quantity <= 0:
            continue
        name = element.get("name")
        rows.append(ProductRow(element_id, price, quantity, section=catalog,
                               properties=element_fields(element),
                               name=name if isinstance(name, str) else None))
    return tuple(rows)


def element_price(element: Mapping[str, Any], price_id: Any) -> Decimal | None:
    fields = element.get("custom_fields_values") or []
    chosen = next((f for f in fields if isinstance(f, Mapping) and price_id is not None
                   and str(f.get("field_id")) == str(price_id)), None) or \
        next((f for f in fields if isinstance(f, Mapping) and f.get("field_code") == "PRICE"),
             None)
    values = (chosen or {}).get("values") or []
    value = values[0].get("value") if values and isinstance(values[0], Mapping) else None
    return crm_amount(value) if value is not None else None


def element_fields(element: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for item in element.get("custom_fields_values") or []:
        if not isinstance(item, Mapping):
            continue
        values = tuple(str(v.get("value")) for v in item.get("values") or []
                       if isinstance(v, Mapping) and isinstance(v.get("value"), str | int | float))
        if not values:
            continue
        for key in (item.get("field_code"), item.get("field_id")):
            if key not in (None, ""):
                out[str(key)] = values
    return out


def in_pipelines(lead: Mapping[str, Any], pipelines: list[int]) -> bool:
    """The lead's pipeline is one amocrm.pipelines includes (all when it is empty)."""
    return not pipelines or int(lead.get("pipeline_id") or 0) in pipelines


def purchase_state(lead: Mapping[str, Any], *, portal: str, pipelines: list[int],
                   rows: tuple[ProductRow, ...] | None = None) -> PurchaseState:
    """A lead in status 142 of an included pipeline is a purchase of its price by its main
    contact, earning by its product `rows` when they were read; anything else holds no
    purchase."""
    lead_id = str(lead.get("id", ""))
    source = lead_source(portal, lead_id)
    contact_id = main_contact(lead)
    pipeline = lead.get("pipeline_id")
    category = str(pipeline) if pipeline is not None else None
    closed = lead.get("closed_at") or lead.get("updated_at")
    occurred = datetime.fromtimestamp(int(closed), UTC) if closed else None
    raw = {key: lead.get(key) for key in ("id", "status_id", "pipeline_id", "price",
                                          "closed_at", "updated_at")}
    raw["contact_id"] = contact_id
    amount = crm_amount(lead.get("price") or 0) or Decimal(0)

    def nothing(reason: str) -> PurchaseState:
        return PurchaseState(source, contact_id, None, category, occurred, reason, raw, rows)

    if lead.get("is_deleted"):
        return nothing("lead is deleted")
    if int(lead.get("status_id") or 0) != WON:
        return nothing("lead is not won (status 142)")
    if not in_pipelines(lead, pipelines):
        return nothing(f"pipeline {pipeline} is not in amocrm.pipelines")
    if contact_id is None:
        return nothing("lead has no contact")
    if amount <= 0:
        return nothing("lead price is zero")
    return PurchaseState(source, contact_id, amount, category, occurred, None, raw, rows)


def contact_values(fields: Mapping[str, str], *, balance: Decimal, available: Decimal,
                   tier: str,
                   discount: Decimal, expiring_points: Decimal, expiring_date: date | None,
                   segment: str | None, card: str | None, zone: ZoneInfo,
                   card_url: str | None = None,
                   referral_code: str | None = None, perks: str | None = None
                   ) -> dict[str, str]:
    """Field code -> the value as amoCRM shows it (dates: a Unix timestamp of local midnight)."""
    stamp = ""
    if expiring_date is not None:
        stamp = str(int(datetime.combine(expiring_date, time(), zone).timestamp()))
    return loyalty_values(fields, balance=balance, available=available, tier=tier,
                          discount=discount,
                          expiring_points=expiring_points, expiring_date=stamp,
                          segment=segment, card=card, card_url=card_url,
                          referral_code=referral_code, perks=perks)


def referred_by(contact: Mapping[str, Any], code: str | None) -> str | None:
    """The referral code in the contact's `referred_by` field (by its field code): from a v2
    webhook (`custom_fields[n][code]`, `values[0][value]`) or an API v4 contact
    (`custom_fields_values[n][field_code]`, `values[0][value]`)."""
    if not code:
        return None
    for item in [*_items(contact.get("custom_fields")),
                 *_items(contact.get("custom_fields_values"))]:
        if not isinstance(item, Mapping) or code not in (item.get("code"),
                                                         item.get("field_code")):
            continue
        values = _items(item.get("values"))
        first = values[0] if values else None
        value = first.get("value") if isinstance(first, Mapping) else first
        text = str(value).strip() if value is not None else ""
        return text or None
    return None


def custom_fields_values(values: Mapping[str, str]) -> list[dict[str, Any]]:
    """The PATCH form: an empty value clears the field (`values: null`)."""
    return [{"field_code": code, "values": [{"value": value}] if value != "" else None}
            for code, value in values.items()]


def webhook_field_values(contact: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, str]:
    """Our fields' values in a v2 contact webhook, by code; `ids` maps field id -> code."""
    found: dict[str, str] = {}
    for item in _items(contact.get("custom_fields")):
        if not isinstance(item, Mapping):
            continue
        code = item.get("code") or ids.get(str(item.get("id")))
        if not code:
            continue
        values = _items(item.get("values"))
        first = values[0] if values else ""
        found[str(code)] = str(first.get("value", "") if isinstance(first, Mapping) else first)
    return found


def changed_values(wanted: Mapping[str, str], known: Mapping[str, Any]) -> dict[str, str]:
    return {code: value for code, value in wanted.items()
            if _normal(known.get(code)) != _normal(value)}


def _normal(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    try:
        return number_text(Decimal(text)) if text else ""
    except InvalidOperation:
        return text


def birthday(contact: Mapping[str, Any], field_id: int | None, zone: ZoneInfo) -> date | None:
    """The contact's birthday from the configured field, in a v2 webhook (`custom_fields`,
    by `id`) or a v4 contact (`custom_fields_values`, by `field_id`). amoCRM keeps birthdays
    as a Unix timestamp of local midnight; a date string is taken as given. None when the field
    is not configured, empty or unreadable."""
    if field_id is None:
        return None
    for item in [*_items(contact.get("custom_fields")),
                 *_items(contact.get("custom_fields_values"))]:
        if not isinstance(item, Mapping) or str(item.get("id", item.get("field_id"))) != str(
                field_id):
            continue
        values = _items(item.get("values"))
        first = values[0] if values else None
        return _date(first.get("value") if isinstance(first, Mapping) else first, zone)
    return None


def _date(value: Any, zone: ZoneInfo) -> date | None:
    text = str(value if value is not None else "").strip()
    if text.lstrip("-").isdigit():
        try:
            return datetime.fromtimestamp(int(text), UTC).astimezone(zone).date()
        except (OverflowError, OSError, ValueError):
            return None
    for parse in (lambda t: datetime.fromisoformat(t).date(),
                  lambda t: datetime.strptime(t, "%d.%m.%Y").date()):
        try:
            return parse(text)
        except ValueError:
            continue
    return None


def nps_score(lead: Mapping[str, Any], code: str | None) -> str | None:
    """The text of the lead's NPS field (type numeric: API v4 gives `{"value": "9"}`, a
    string), as promo_code reads it; connector.nps parses it."""
    return referred_by(lead, code)


def promo_code(lead: Mapping[str, Any], code: str | None) -> str | None:
    """The promo code in the lead's field (by its field code), as a v4 lead or a v2
    webhook shows custom fields (the format referred_by reads)."""
    return referred_by(lead, code)
