"""Deals, contacts and user fields of the fake portal, as the legacy crm.deal.* / crm.contact.*
methods store and show them.

Values are kept typed (int, Decimal, datetime, date) so filters compare correctly, and are
rendered the legacy way on output: every scalar a string, `"OPPORTUNITY": "19999.99"`,
datetimes in portal time with offset (api-reference/crm/deals/crm-deal-get.md,
api-reference/crm/contacts/crm-contact-get.md, api-reference/data-types.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.sandbox.bitrix24_php import seq

INT_FIELDS = {"ID", "CATEGORY_ID", "CONTACT_ID", "COMPANY_ID", "LEAD_ID", "QUOTE_ID",
              "ASSIGNED_BY_ID", "CREATED_BY_ID", "MODIFY_BY_ID", "MOVED_BY_ID",
              "LAST_ACTIVITY_BY", "PROBABILITY"}
MONEY_FIELDS = {"OPPORTUNITY", "TAX_VALUE"}
DATETIME_FIELDS = {"DATE_CREATE", "DATE_MODIFY", "MOVED_TIME", "LAST_ACTIVITY_TIME"}
DATE_FIELDS = {"BEGINDATE", "CLOSEDATE", "BIRTHDATE"}
# crm_multifield (api-reference/crm/data-types.md): returned by *.list only when selected.
MULTIFIELDS = {"PHONE": "PHONE", "EMAIL": "EMAIL", "WEB": "WEB", "IM": "IM"}
READ_ONLY = {"ID", "DATE_CREATE", "DATE_MODIFY", "CREATED_BY_ID", "MODIFY_BY_ID",
             "HAS_PHONE", "HAS_EMAIL", "HAS_IMOL"}
CONTACT_WRITABLE = {"NAME", "SECOND_NAME", "LAST_NAME", "BIRTHDATE", "POST", "COMMENTS",
                    "TYPE_ID", "SOURCE_ID", "SOURCE_DESCRIPTION", "OPENED", "EXPORT",
                    "ASSIGNED_BY_ID", "COMPANY_ID", "HONORIFIC"}
# Filter prefixes of the legacy list methods (crm-deal-list.md), longest first.
FILTER_OPS = (">=", "<=", "!=", "!@", "=%", "%=", ">", "<", "@", "%", "=", "!")
UF_NAME = re.compile(r"^[A-Z0-9_]+$")


def parse_datetime(value: Any, tz: tzinfo) -> datetime | None:
    """ISO 8601 with or without offset, a bare date, or the portal's DD.MM.YYYY[ HH:MM:SS]
    (CORE reads incoming dates with strtotime); naive values are portal time."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime.combine(value, time(), tz)
    text = str(value).strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d{2})\.(\d{2})\.(\d{4})(?:\s+(\d{2}):(\d{2})(?::(\d{2}))?)?", text)
    if match:
        d, m, y, hh, mm, ss = match.groups()
        return datetime(int(y), int(m), int(d), int(hh or 0), int(mm or 0), int(ss or 0),
                        tzinfo=tz)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def stage_semantics(stage_id: str, overrides: Mapping[str, str]) -> str:
    """STAGE_SEMANTIC_ID: P in progress, S won, F lost (crm-deal-get.md); funnel N stages carry
    a `C{N}:` prefix (`C1:WON`)."""
    if stage_id in overrides:
        return overrides[stage_id]
    base = stage_id.split(":", 1)[-1]
    if base == "WON":
        return "S"
    if base in ("LOSE", "APOLOGY"):
        return "F"
    return "P"


class CrmStore:
    def __init__(self, now: Callable[[], datetime], tz: tzinfo) -> None:
        self.now = now
        self.tz = tz
        self.deals: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.deal_contacts: dict[int, list[int]] = {}
        self.userfields: dict[int, dict[str, Any]] = {}
        self.stage_overrides: dict[str, str] = {}
        self._next = {"deal": 1, "contact": 1, "fm": 150, "uf": 400}

    def _id(self, kind: str) -> int:
        value = self._next[kind]
        self._next[kind] += 1
        return value

    # -- typing ----------------------------------------------------------------------------
    def coerce(self, key: str, value: Any) -> Any:
        if value is None or value == "":
            return None if key not in ("TITLE", "NAME", "LAST_NAME") else value
        if key in INT_FIELDS:
            return int(value)
        if key in MONEY_FIELDS:
            return Decimal(str(value)).quantize(Decimal("0.01"))
        if key in DATETIME_FIELDS:
            return parse_datetime(value, self.tz)
        if key in DATE_FIELDS:
            parsed = parse_datetime(value, self.tz)
            return parsed.date() if parsed else None
        return value

    def render(self, key: str, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "Y" if value else "N"
        if isinstance(value, Decimal):
            return f"{value:.2f}" if key in MONEY_FIELDS else format(value, "f")
        if isinstance(value, datetime):
            return value.astimezone(self.tz).replace(microsecond=0).isoformat()
        if isinstance(value, date):  # BIRTHDATE comes back as midnight in portal time
            return datetime.combine(value, time(), self.tz).isoformat()
        if isinstance(value, list):
            return [v if isinstance(v, dict) else self.render(key, v) for v in value]
        return str(value)

    # -- deals -----------------------------------------------------------------------------
    def add_deal(self, fields: Mapping[str, Any], contact_ids: Iterable[int] | None) -> int:
        deal_id = self._id("deal")
        now = self.now()
        category = int(fields.get("CATEGORY_ID") or 0)
        deal: dict[str, Any] = {
            "ID": deal_id, "TITLE": f"Deal #{deal_id}", "TYPE_ID": "SALE", "STAGE_ID": "NEW",
            "PROBABILITY": None, "CURRENCY_ID": "RUB", "OPPORTUNITY": Decimal("0.00"),
            "IS_MANUAL_OPPORTUNITY": "N", "TAX_VALUE": Decimal("0.00"), "LEAD_ID": None,
            "COMPANY_ID": 0, "CONTACT_ID": None, "QUOTE_ID": None, "BEGINDATE": now.date(),
            "CLOSEDATE": None, "ASSIGNED_BY_ID": 1, "CREATED_BY_ID": 1, "MODIFY_BY_ID": 1,
            "DATE_CREATE": now, "DATE_MODIFY": now, "OPENED": "Y", "CLOSED": "N",
            "COMMENTS": None, "ADDITIONAL_INFO": None, "LOCATION_ID": None,
            "CATEGORY_ID": category, "STAGE_SEMANTIC_ID": "P", "IS_NEW": "Y",
            "IS_RECURRING": "N", "IS_RETURN_CUSTOMER": "N", "IS_REPEATED_APPROACH": "N",
            "SOURCE_ID": None, "SOURCE_DESCRIPTION": None, "ORIGINATOR_ID": None,
            "ORIGIN_ID": None, "MOVED_BY_ID": 1, "MOVED_TIME": now, "LAST_ACTIVITY_TIME": now,
            "UTM_SOURCE": None, "UTM_MEDIUM": None, "UTM_CAMPAIGN": None, "UTM_CONTENT": None,
            "UTM_TERM": None, "LAST_ACTIVITY_BY": 1,
        }
        self.deals[deal_id] = deal
        self.deal_contacts[deal_id] = []
        self._apply_deal(deal, {k: v for k, v in fields.items() if k not in ("ID",)},
                         contact_ids, created=True)
        return deal_id

    def update_deal(self, deal_id: int, fields: Mapping[str, Any],
                    contact_ids: Iterable[int] | None = None) -> str:
        """Apply a change; return the event it raises (a funnel move is its own event,
        api-reference/crm/deals/events/index.md)."""
        deal = self.deals[deal_id]
        before = deal["CATEGORY_ID"]
        self._apply_deal(deal, fields, contact_ids, created=False)
        return "ONCRMDEALMOVETOCATEGORY" if deal["CATEGORY_ID"] != before else "ONCRMDEALUPDATE"

    def _apply_deal(self, deal: dict[str, Any], fields: Mapping[str, Any],
                    contact_ids: Iterable[int] | None, *, created: bool) -> None:
        now = self.now()
        old_stage = deal["STAGE_ID"]
        for key, value in fields.items():
            key = key.upper()
            # Seeding may back-date a new deal; afterwards the portal owns these fields.
            if key not in READ_ONLY or (created and key in ("DATE_CREATE", "DATE_MODIFY")):
                deal[key] = self.coerce(key, value)
        category = deal["CATEGORY_ID"] or 0
        if category and ":" not in deal["STAGE_ID"]:
            deal["STAGE_ID"] = f"C{category}:{deal['STAGE_ID']}"
        if "STAGE_SEMANTIC_ID" not in fields:
            deal["STAGE_SEMANTIC_ID"] = stage_semantics(deal["STAGE_ID"], self.stage_overrides)
        deal["CLOSED"] = "N" if deal["STAGE_SEMANTIC_ID"] == "P" else "Y"
        if deal["STAGE_ID"] != old_stage and not created:
            deal["MOVED_TIME"] = now
        if contact_ids is not None:
            self.deal_contacts[deal["ID"]] = [int(c) for c in contact_ids]
            deal["CONTACT_ID"] = self.deal_contacts[deal["ID"]][0] if contact_ids else None
        elif "CONTACT_ID" in fields:
            contact = deal["CONTACT_ID"]
            self.deal_contacts[deal["ID"]] = [contact] if contact else []
        if not created:
            deal["DATE_MODIFY"] = now

    # -- contacts --------------------------------------------------------------------------
    def add_contact(self, fields: Mapping[str, Any]) -> int:
        contact_id = self._id("contact")
        now = self.now()
        contact: dict[str, Any] = {
            "ID": contact_id, "POST": None, "COMMENTS": None, "HONORIFIC": None,
            "NAME": f"Contact {contact_id}", "SECOND_NAME": None, "LAST_NAME": "",
            "PHOTO": None, "LEAD_ID": None, "TYPE_ID": "CLIENT", "SOURCE_ID": None,
            "SOURCE_DESCRIPTION": None, "COMPANY_ID": None, "BIRTHDATE": None, "EXPORT": "Y",
            "HAS_PHONE": "N", "HAS_EMAIL": "N", "HAS_IMOL": "N", "DATE_CREATE": now,
            "DATE_MODIFY": now, "ASSIGNED_BY_ID": 1, "CREATED_BY_ID": 1, "MODIFY_BY_ID": 1,
            "OPENED": "Y", "ORIGINATOR_ID": None, "ORIGIN_ID": None, "ORIGIN_VERSION": None,
            "FACE_ID": None, "LAST_ACTIVITY_TIME": now, "UTM_SOURCE": None, "UTM_MEDIUM": None,
            "UTM_CAMPAIGN": None, "UTM_CONTENT": None, "UTM_TERM": None, "LAST_ACTIVITY_BY": 1,
        }
        self.contacts[contact_id] = contact
        for key, value in fields.items():
            key = key.upper()
            if key in MULTIFIELDS:
                self._set_multifield(contact, key, value)
            elif key != "ID":
                contact[key] = self.coerce(key, value)
        self._flags(contact)
        return contact_id

    def update_contact(self, contact_id: int, fields: Mapping[str, Any], *,
                       strict: bool) -> None:
        """`strict` (a REST call): unknown fields are ignored as crm.contact.update does
        ("An incorrect field in fields will be ignored"); a UF_ field counts as known when
        it is registered or already on the contact. Test helpers may set anything."""
        contact = self.contacts[contact_id]
        for key, value in fields.items():
            key = str(key).upper()
            if key in MULTIFIELDS:
                self._set_multifield(contact, key, value)
            elif key.startswith("UF_"):
                if not strict or key in contact or self.userfield_named(key, "CRM_CONTACT"):
                    contact[key] = value
            elif key in CONTACT_WRITABLE or (not strict and key not in READ_ONLY):
                contact[key] = self.coerce(key, value)
        self._flags(contact)
        contact["DATE_MODIFY"] = self.now()

    def _set_multifield(self, contact: dict[str, Any], key: str, value: Any) -> None:
        """crm-contact-update.md "Working with Multiple Fields": an item with ID changes that
        value (DELETE=Y or an empty VALUE removes it); an item without ID is added."""
        current: list[dict[str, str]] = contact.get(key) or []
        for item in seq(value):
            if not isinstance(item, Mapping):
                item = {"VALUE": item}
            item = {str(k).upper(): v for k, v in item.items()}
            value_type = str(item.get("VALUE_TYPE") or "WORK")
            if item.get("ID"):
                found = [c for c in current if c["ID"] == str(item["ID"])]
                if not found:
                    continue
                if item.get("DELETE") == "Y" or not item.get("VALUE"):
                    current = [c for c in current if c["ID"] != str(item["ID"])]
                else:
                    found[0].update(VALUE=str(item["VALUE"]),
                                    VALUE_TYPE=str(item.get("VALUE_TYPE")
                                                   or found[0]["VALUE_TYPE"]))
            elif item.get("VALUE"):
                current.append({"ID": str(self._id("fm")), "VALUE_TYPE": value_type,
                                "VALUE": str(item["VALUE"]), "TYPE_ID": MULTIFIELDS[key]})
        contact[key] = current

    @staticmethod
    def _flags(contact: dict[str, Any]) -> None:
        contact["HAS_PHONE"] = "Y" if contact.get("PHONE") else "N"
        contact["HAS_EMAIL"] = "Y" if contact.get("EMAIL") else "N"

    # -- output ----------------------------------------------------------------------------
    def show(self, entity: Mapping[str, Any], owner: str,
             select: list[str] | None = None) -> dict[str, Any]:
        """One entity as the legacy methods return it. `select` None is *.get: everything,
        multifields only when non-empty. A list follows *.list: default ['*', 'UF_*'];
        '*' excludes UF_ and multiple fields, which must be named (crm-contact-list.md)."""
        names = [str(s).upper() for s in select] if select is not None else None
        if names is not None and not names:
            names = ["*", "UF_*"]
        out: dict[str, Any] = {}
        for key, value in entity.items():
            if key in MULTIFIELDS:
                wanted = bool(value) if names is None else key in names
            elif key.startswith("UF_"):
                wanted = names is None or "UF_*" in names or key in names
            else:
                wanted = names is None or "*" in names or key in names or key == "ID"
            if wanted:
                out[key] = self.render(key, value)
        for field in self.userfields.values():  # registered but never set: null
            name = field["FIELD_NAME"]
            if field["ENTITY_ID"] == owner and name not in out and (
                    names is None or "UF_*" in names or name in names):
                out[name] = None
        return out

    # -- filtering and order ---------------------------------------------------------------
    def matches(self, entity: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
        for raw_key, wanted in filters.items():
            op, field = "=", str(raw_key)
            for candidate in FILTER_OPS:
                if field.startswith(candidate):
                    op, field = candidate, field[len(candidate):]
                    break
            field = field.upper()
            if field not in entity and not (field.startswith("UF_") and self.userfield_named(
                    field, "")):
                continue  # the legacy methods ignore a condition on an unknown field
            if not self._match(field, entity.get(field), op, wanted):
                return False
        return True

    def _match(self, field: str, stored: Any, op: str, wanted: Any) -> bool:
        if field in MULTIFIELDS:  # exact match on any value (crm-contact-list.md)
            values = {item["VALUE"] for item in stored or []}
            hit = bool(values & {str(w) for w in seq(wanted)})
            return not hit if op in ("!", "!=", "!@") else hit
        if isinstance(wanted, Mapping | list) or op in ("@", "!@"):
            options = [self._comparable(field, w, stored) for w in seq(wanted)]
            hit = stored in options
            return not hit if op in ("!@", "!", "!=") else hit
        value = self._comparable(field, wanted, stored)
        if op == "=":
            return stored == value
        if op in ("!", "!="):
            return stored != value
        if op in ("%", "=%", "%="):
            text = "" if stored is None else str(self.render(field, stored)).lower()
            pattern = str(wanted).lower()
            if op == "%":
                return pattern in text
            regex = ".*".join(re.escape(part) for part in pattern.split("%"))
            return re.fullmatch(regex, text) is not None
        if stored is None or value is None:
            return False
        try:
            return {">": stored > value, ">=": stored >= value,
                    "<": stored < value, "<=": stored <= value}[op]
        except TypeError:
            return False

    def _comparable(self, field: str, wanted: Any, stored: Any) -> Any:
        if wanted is None or wanted == "":
            return None
        try:
            if field in INT_FIELDS | MONEY_FIELDS | DATETIME_FIELDS | DATE_FIELDS:
                return self.coerce(field, wanted)
            if isinstance(stored, int | float | Decimal) and not isinstance(stored, bool):
                return type(stored)(str(wanted)) if not isinstance(stored, float) else float(
                    wanted)
        except (ValueError, InvalidOperation, TypeError):
            return object()  # never equal, never ordered
        return wanted if isinstance(stored, list) else str(wanted)

    def sort(self, items: list[dict[str, Any]], order: Mapping[str, Any]) -> list[dict[str, Any]]:
        result = sorted(items, key=lambda e: e["ID"])
        for field, direction in reversed(list(order.items())):
            key = str(field).upper()
            result.sort(key=lambda e, k=key: (e.get(k) is not None, _sortable(e.get(k))),
                        reverse=str(direction).upper() == "DESC")
        return result

    # -- user fields -----------------------------------------------------------------------
    def userfield_named(self, name: str, owner: str) -> dict[str, Any] | None:
        for field in self.userfields.values():
            if field["FIELD_NAME"] == name and (not owner or field["ENTITY_ID"] == owner):
                return field
        return None

    def add_userfield(self, owner: str, name: str, user_type: str,
                      extra: Mapping[str, Any] | None = None) -> int:
        field_id = self._id("uf")
        extra = dict(extra or {})
        label = extra.pop("LABEL", None)
        record: dict[str, Any] = {
            "ID": str(field_id), "ENTITY_ID": owner, "FIELD_NAME": name,
            "USER_TYPE_ID": user_type, "XML_ID": extra.pop("XML_ID", None),
            "SORT": str(extra.pop("SORT", 100)), "MULTIPLE": extra.pop("MULTIPLE", "N"),
            "MANDATORY": extra.pop("MANDATORY", "N"), "SHOW_FILTER": extra.pop(
                "SHOW_FILTER", "N"), "SHOW_IN_LIST": extra.pop("SHOW_IN_LIST", "N"),
            "EDIT_IN_LIST": extra.pop("EDIT_IN_LIST", "Y"), "IS_SEARCHABLE": extra.pop(
                "IS_SEARCHABLE", "N"), "SETTINGS": extra.pop("SETTINGS", {}),
        }
        for key in ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL",
                    "ERROR_MESSAGE", "HELP_MESSAGE"):
            record[key] = extra.pop(key, label)
        if user_type == "enumeration":
            record["LIST"] = extra.pop("LIST", [])
        self.userfields[field_id] = record
        return field_id


def userfield_name(raw: str) -> str:
    """crm-contact-userfield-add.md: the prefix UF_CRM_ is always added; UF_X -> UF_CRM_X;
    lowercase letters are upper-cased."""
    name = raw.strip().upper()
    if name.startswith("UF_CRM_"):
        return name
    if name.startswith("UF_"):
        return "UF_CRM_" + name[3:]
    return "UF_CRM_" + name


def _sortable(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date | int | Decimal):
        return value
    return str(value).lower()
