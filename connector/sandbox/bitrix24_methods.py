"""REST methods of the fake portal: system, deals, contacts, user fields (app-context ones are
in bitrix24_automation). Each handler takes (ctx, params) and returns the `result` value (or a
ListPage for list methods), or raises RestError with the documented code.

Legacy CRM methods report most errors as HTTP 400 with an empty `error` code
(api-reference/crm/deals/crm-deal-get.md: `{"error": "", "error_description": "Not found"}`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connector.sandbox.bitrix24_crm import userfield_name
from connector.sandbox.bitrix24_php import ci_get, seq

if TYPE_CHECKING:
    from connector.sandbox.bitrix24 import FakeBitrix24Portal

PAGE_SIZE = 50  # crm-deal-list.md: "The page size for results is always static — 50 records"
USER_TYPES = {"string", "integer", "double", "boolean", "datetime", "date", "money", "url",
              "address", "enumeration", "file", "employee", "crm_status", "iblock_section",
              "iblock_element", "crm"}


class RestError(Exception):
    def __init__(self, status: int, error: str, description: str, **extra: Any) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.extra = extra

    def body(self) -> dict[str, Any]:
        # error-codes.md: {"error": ..., "error_description": ...}; no `time` key on errors.
        return {"error": self.error, "error_description": self.description, **self.extra}


@dataclass
class Context:
    portal: FakeBitrix24Portal
    auth: str  # "webhook" | "oauth"
    user_id: int
    access_token: str | None = None
    batch: str | None = None


@dataclass
class ListPage:
    items: list[Any]
    total: int
    next: int | None


Handler = Callable[[Context, dict[str, Any]], Any]
METHODS: dict[str, Handler] = {}


def method(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            METHODS[name] = handler
        return handler
    return register


def crm_error(description: str, status: int = 400) -> RestError:
    return RestError(status, "", description)


def require_app(ctx: Context, description: str = "Access denied! Application context required",
                status: int = 400) -> None:
    """App-only methods refuse an inbound webhook (e.g. app-info.md, bizproc-robot-add.md,
    crm-automation-trigger-add.md: ACCESS_DENIED, HTTP 400)."""
    if ctx.auth != "oauth":
        raise RestError(status, "ACCESS_DENIED", description)


def positive_id(params: Mapping[str, Any], name: str = "id",
                message: str = "ID is not defined or invalid.") -> int:
    try:
        value = int(str(ci_get(params, name, "")).strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise crm_error(message)
    return value


def as_map(value: Any, name: str) -> dict[str, Any]:
    """A PHP array parameter: a JSON [] is an empty array; a string is refused as the legacy
    methods do ("Parameter 'filter' must be array.", crm-deal-list.md)."""
    if value is None or value == [] or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    raise crm_error(f"Parameter '{name}' must be array.")


# -- system -----------------------------------------------------------------------------------
@method("server.time")
def server_time(ctx: Context, params: dict[str, Any]) -> str:
    return ctx.portal.now().isoformat()  # server-time.md: YYYY-MM-DDThh:mm:ss±hh:mm


@method("app.info")
def app_info(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    require_app(ctx)  # app-info.md
    portal = ctx.portal
    return {"ID": 5, "CODE": portal.client_id, "VERSION": 1, "STATUS": portal.app_status,
            "INSTALLED": True, "PAYMENT_EXPIRED": "N", "DAYS": None, "LANGUAGE_ID": "ru",
            "LICENSE": f"ru_{portal.license}", "LICENSE_TYPE": portal.license,
            "LICENSE_FAMILY": re.sub(r"\d+$", "", portal.license)}


# -- deals and contacts -----------------------------------------------------------------------
def _list(ctx: Context, params: dict[str, Any], entities: Mapping[int, dict[str, Any]],
          owner: str) -> ListPage:
    store = ctx.portal.store
    order = as_map(ci_get(params, "order"), "order")
    filters = as_map(ci_get(params, "filter"), "filter")
    select = [str(s) for s in seq(ci_get(params, "select"))]
    try:  # PHP intval: garbage is 0
        start = int(str(ci_get(params, "start", 0) or 0).strip())
    except ValueError:
        start = 0
    for key, wanted in filters.items():
        if str(key).startswith((">", "<")) and isinstance(wanted, Mapping | list):
            # What the portal makes of an array compared with > or < is not documented; a
            # batch reference past the last row substitutes one (see _resolve), and the
            # fake refuses it so that a client reading such a command would notice.
            raise crm_error(f"Filter value of '{key}' must be a number or a string.")
    items = store.sort([e for e in entities.values() if store.matches(e, filters)], order)
    if start < 0:
        # settings/performance/huge-data.md: start=-1 returns up to 50 rows without counting
        # them; the documented answer carries "total": 0 and no "next".
        return ListPage([store.show(e, owner, select) for e in items[:PAGE_SIZE]], 0, None)
    # CORE navigation turns start into a page number (start // 50 + 1) and next into
    # page * 50, so an offset that is not a multiple of 50 snaps back to its page.
    offset = start // PAGE_SIZE * PAGE_SIZE
    page = items[offset:offset + PAGE_SIZE]
    following = offset + PAGE_SIZE
    return ListPage([store.show(e, owner, select) for e in page], len(items),
                    following if following < len(items) else None)


@method("crm.deal.get")
def deal_get(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    deal_id = positive_id(params)
    deal = ctx.portal.store.deals.get(deal_id)
    if deal is None:
        raise crm_error("Not found")
    return ctx.portal.store.show(deal, "CRM_DEAL")


@method("crm.deal.list")
def deal_list(ctx: Context, params: dict[str, Any]) -> ListPage:
    return _list(ctx, params, ctx.portal.store.deals, "CRM_DEAL")


@method("crm.deal.contact.items.get")
def deal_contacts(ctx: Context, params: dict[str, Any]) -> list[dict[str, Any]]:
    # crm-deal-contact-items-get.md: integers here, unlike the rest of the legacy API
    deal_id = positive_id(params, message="The parameter ownerEntityID is invalid or not "
                                          "defined.")
    if deal_id not in ctx.portal.store.deals:
        raise crm_error("Not found.")
    return [{"CONTACT_ID": contact_id, "SORT": (index + 1) * 100, "ROLE_ID": 0,
             "IS_PRIMARY": "Y" if index == 0 else "N"}
            for index, contact_id in enumerate(ctx.portal.store.deal_contacts[deal_id])]


@method("crm.contact.get")
def contact_get(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    contact_id = positive_id(params)
    contact = ctx.portal.store.contacts.get(contact_id)
    if contact is None:
        raise crm_error("Not found")
    return ctx.portal.store.show(contact, "CRM_CONTACT")


@method("crm.contact.list")
def contact_list(ctx: Context, params: dict[str, Any]) -> ListPage:
    return _list(ctx, params, ctx.portal.store.contacts, "CRM_CONTACT")


@method("crm.duplicate.findbycomm")
def duplicate_findbycomm(ctx: Context, params: dict[str, Any]) -> Any:
    """crm-duplicate-find-by-comm.md: contacts (leads and companies are not kept here) with
    a phone or e-mail among `values` (at most 20), phones compared by their digits, e-mails
    in any case. The result maps the entity type to ids; nothing found is PHP's empty []."""
    kind = str(ci_get(params, "type") or "").upper()
    if not kind:
        raise RestError(400, "Communication type is not defined",
                        "Parameter 'type' is required.")
    if kind not in ("PHONE", "EMAIL"):
        raise RestError(400, f"Communication type '{kind}' is not supported in current "
                             "context", "")
    values = [str(value) for value in seq(ci_get(params, "values") or [])]
    if not values:
        raise RestError(400, "Communication values is not defined",
                        "Parameter 'values' is required.")

    def norm(text: str) -> str:
        return re.sub(r"\D", "", text) if kind == "PHONE" else text.strip().lower()

    wanted = {norm(value) for value in values[:20]}
    entity = str(ci_get(params, "entity_type") or "CONTACT").upper()
    if entity != "CONTACT":
        return []
    ids = [contact_id for contact_id, contact in sorted(ctx.portal.store.contacts.items())
           if any(norm(str(item.get("VALUE", ""))) in wanted for item in contact.get(kind) or [])]
    return {"CONTACT": ids} if ids else []


@method("crm.contact.update")
def contact_update(ctx: Context, params: dict[str, Any]) -> bool:
    contact_id = positive_id(params)
    fields = ci_get(params, "fields")
    if not isinstance(fields, Mapping):
        raise crm_error("Parameter 'fields' must be array")
    portal = ctx.portal
    if contact_id not in portal.store.contacts:
        raise crm_error("Contact is not found")  # crm-contact-update.md
    portal.records.contact_updates.setdefault(contact_id, []).append(dict(fields))
    portal.store.update_contact(contact_id, fields, strict=True)
    # contacts/events/index.md: crm.contact.update raises ONCRMCONTACTUPDATE like a manual edit
    portal.emit("ONCRMCONTACTUPDATE", contact_id)
    return True


# -- user fields ------------------------------------------------------------------------------
def _userfield_add(ctx: Context, params: dict[str, Any], owner: str) -> int:
    # crm-contact-userfield-add.md (the deal variant is the same in these respects)
    fields = ci_get(params, "fields")
    if not isinstance(fields, Mapping):
        raise crm_error("Parameter 'fields' must be array.")
    fields = {str(k).upper(): v for k, v in fields.items()}
    user_type = str(fields.pop("USER_TYPE_ID", "") or "")
    raw_name = str(fields.pop("FIELD_NAME", "") or "")
    if not user_type:
        raise crm_error("The 'USER_TYPE_ID' field is not found.")
    if not raw_name:
        raise crm_error("The 'FIELD_NAME' field is not found.")
    if user_type not in USER_TYPES:
        raise crm_error("Incorrect custom type specified")
    name = userfield_name(raw_name)
    if len(name) > 50:
        raise RestError(400, "ERROR_CORE", "Field name is too long (more than 50 characters)")
    if not re.fullmatch(r"[A-Z0-9_]+", name):
        raise RestError(400, "ERROR_CORE", "Field name contains invalid characters. Allowed "
                                           "characters are: A-Z, 0-9 and _")
    if ctx.portal.store.userfield_named(name, owner):
        # Not in the docs: the core refuses a second field of the same name with ERROR_CORE.
        raise RestError(400, "ERROR_CORE", f"Field {name} already exists")
    return ctx.portal.store.add_userfield(owner, name, user_type, fields)


def _userfield_list(ctx: Context, params: dict[str, Any], owner: str) -> ListPage:
    filters = {str(k).upper(): v for k, v in as_map(ci_get(params, "filter"), "filter").items()}
    order = as_map(ci_get(params, "order"), "order") or {"SORT": "ASC", "ID": "ASC"}
    lang = filters.pop("LANG", None)
    rows = [f for f in ctx.portal.store.userfields.values() if f["ENTITY_ID"] == owner
            and all(str(f.get(k)) == str(v) for k, v in filters.items())]
    for field, direction in reversed(list(order.items())):
        key = str(field).upper()
        rows.sort(key=lambda f, k=key: int(f[k]) if k in ("ID", "SORT") else str(f.get(k)),
                  reverse=str(direction).upper() == "DESC")
    labels = ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE",
              "HELP_MESSAGE")
    out = []
    for row in rows:
        # crm-contact-userfield-list.md: labels come as strings with filter.LANG, else not at all
        shown = {k: v for k, v in row.items() if k not in labels}
        if lang:
            for key in labels:
                value = row.get(key)
                shown[key] = value.get(lang) if isinstance(value, Mapping) else value
        out.append(shown)
    # Paged like every list method (START, 50 a page; crm-contact-userfield-list.md).
    try:
        start = max(int(str(ci_get(params, "start", 0) or 0).strip()), 0)
    except ValueError:
        start = 0
    offset = start // PAGE_SIZE * PAGE_SIZE
    following = offset + PAGE_SIZE
    return ListPage(out[offset:following], len(out),
                    following if following < len(out) else None)


def _userfield_delete(ctx: Context, params: dict[str, Any], owner: str) -> bool:
    field_id = positive_id(params)
    field = ctx.portal.store.userfields.get(field_id)
    if field is None:
        raise RestError(400, "ERROR_NOT_FOUND", f"The entity with ID '{field_id}' is not found")
    if field["ENTITY_ID"] != owner:
        raise crm_error("Access denied.")
    del ctx.portal.store.userfields[field_id]
    return True


for _entity, _owner in (("contact", "CRM_CONTACT"), ("deal", "CRM_DEAL")):
    METHODS[f"crm.{_entity}.userfield.add"] = (
        lambda ctx, params, owner=_owner: _userfield_add(ctx, params, owner))
    METHODS[f"crm.{_entity}.userfield.list"] = (
        lambda ctx, params, owner=_owner: _userfield_list(ctx, params, owner))
    METHODS[f"crm.{_entity}.userfield.delete"] = (
        lambda ctx, params, owner=_owner: _userfield_delete(ctx, params, owner))
