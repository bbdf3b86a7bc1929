"""Users and widget placements of the fake portal: profile, user.current, user.admin,
placement.bind / placement.get / placement.unbind.

Registered into bitrix24_methods.METHODS on import (bitrix24_server imports this module).
Doc paths are in bitrix24/b24restdocs: api-reference/common/users/profile.md,
api-reference/user/user-current.md, api-reference/common/users/user-admin.md,
api-reference/widgets/placement-{bind,get,unbind}.md, api-reference/widgets/crm/detail-tab.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from connector.sandbox.bitrix24_methods import Context, RestError, method
from connector.sandbox.bitrix24_php import ci_get

# detail-tab.md: the CRM card tabs; CRM_DYNAMIC_<type id>_DETAIL_TAB for custom types.
DETAIL_TABS = {"CRM_LEAD_DETAIL_TAB", "CRM_DEAL_DETAIL_TAB", "CRM_CONTACT_DETAIL_TAB",
               "CRM_COMPANY_DETAIL_TAB", "CRM_QUOTE_DETAIL_TAB", "CRM_SMART_INVOICE_DETAIL_TAB",
               "CRM_ORDER_DETAIL_TAB"}
DYNAMIC_TAB = re.compile(r"^CRM_DYNAMIC_\d+_DETAIL_TAB$")
# Placements registered once per app, and the only one taking USER_ID (placement-bind.md).
SINGLE = {"PAGE_BACKGROUND_WORKER", "REST_APP_URI"}
OTHER_PLACEMENTS = SINGLE | {"CRM_CONTACT_LIST_MENU", "CRM_DEAL_LIST_MENU",
                             "CRM_CONTACT_DETAIL_TOOLBAR", "CRM_DEAL_DETAIL_TOOLBAR",
                             "CRM_ANALYTICS_MENU", "LEFT_MENU", "USER_PROFILE_MENU"}
# placement-bind.md / placement-unbind.md: the method outside an application, 403.
WRONG_AUTH = ("WRONG_AUTH_TYPE", "Current authorization type is denied for this method "
                                 "Application context required")


def user_of(ctx: Context) -> dict[str, Any]:
    user = ctx.portal.users.get(ctx.user_id)
    if user is None:  # a token of a user since removed
        raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
    return user


# -- users ------------------------------------------------------------------------------------
@method("profile")
def profile(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    # profile.md: basic scope; ADMIN is a boolean, ID a string
    user = user_of(ctx)
    return {"ID": str(ctx.user_id), "ADMIN": bool(user["ADMIN"]), "NAME": user["NAME"],
            "LAST_NAME": user["LAST_NAME"], "PERSONAL_GENDER": "", "TIME_ZONE": ""}


@method("user.current")
def user_current(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    # user-current.md (the fields of the user_brief scope); no ADMIN key here
    user = user_of(ctx)
    return {"ID": str(ctx.user_id), "XML_ID": "", "ACTIVE": True, "NAME": user["NAME"],
            "LAST_NAME": user["LAST_NAME"], "SECOND_NAME": "", "EMAIL": user["EMAIL"],
            "LAST_LOGIN": "", "DATE_REGISTER": "", "IS_ONLINE": "Y", "TIME_ZONE_OFFSET": "0",
            "TIMESTAMP_X": "", "LAST_ACTIVITY_DATE": None, "PERSONAL_GENDER": "",
            "PERSONAL_BIRTHDAY": "", "WORK_POSITION": user["WORK_POSITION"],
            "UF_EMPLOYMENT_DATE": "", "UF_DEPARTMENT": [1]}


@method("user.admin")
def user_admin(ctx: Context, params: dict[str, Any]) -> bool:
    return bool(user_of(ctx)["ADMIN"])  # user-admin.md: {"result": true}


# -- placements -------------------------------------------------------------------------------
def _app_admin(ctx: Context) -> None:
    if ctx.auth != "oauth":
        raise RestError(403, *WRONG_AUTH)
    if not user_of(ctx)["ADMIN"]:  # placement-unbind.md: "User is not an administrator"
        raise RestError(403, "ACCESS_DENIED", "Access denied!")


def _argument(params: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = ci_get(params, name)
    if isinstance(value, Mapping | list):
        raise RestError(400, "ERROR_ARGUMENT",
                        f"The value of an argument '{name}' must be of type string",
                        argument=name)
    text = "" if value is None else str(value)
    if required and not text:
        # placement-bind.md's example body; its table says status 200 for this code, the
        # unbind page 400, as the portal's other argument errors: 400 here.
        raise RestError(400, "ERROR_ARGUMENT", f"Argument '{name}' is null or empty",
                        argument=name)
    return text


def known_placement(code: str) -> bool:
    return code in DETAIL_TABS or code in OTHER_PLACEMENTS or bool(DYNAMIC_TAB.fullmatch(code))


@method("placement.bind")
def placement_bind(ctx: Context, params: dict[str, Any]) -> bool:
    _app_admin(ctx)
    placement = _argument(params, "PLACEMENT").upper()
    handler = _argument(params, "HANDLER")
    if not known_placement(placement):
        # widgets/index.md: an unknown code, or one whose tool scope the app lacks
        raise RestError(400, "ERROR_PLACEMENT_NOT_FOUND", "Placement not found")
    user_id = int(str(ci_get(params, "USER_ID") or 0) or 0)
    if user_id and placement != "PAGE_BACKGROUND_WORKER":
        raise RestError(400, "ERROR_PLACEMENT_USER_MODE", "User mode is not available")
    bound = ctx.portal.records.placements
    if placement in SINGLE and any(p["placement"] == placement for p in bound):
        raise RestError(400, "ERROR_PLACEMENT_MAX_COUNT", "Placement max count reached")
    if any(p["placement"] == placement and p["handler"] == handler for p in bound):
        # Not on placement-bind.md: the placement table refuses a second registration of
        # one handler so (userfieldtype-add.md quotes the message).
        raise RestError(400, "ERROR_CORE",
                        "Unable to set placement handler: Handler already binded")
    title = _argument(params, "TITLE", required=False)
    description = _argument(params, "DESCRIPTION", required=False)
    lang_all = ci_get(params, "LANG_ALL")
    langs = {str(lang): {"TITLE": str(ci_get(values, "TITLE") or title),
                         "DESCRIPTION": str(ci_get(values, "DESCRIPTION") or ""),
                         "GROUP_NAME": str(ci_get(values, "GROUP_NAME") or "")}
             for lang, values in (lang_all.items() if isinstance(lang_all, Mapping) else [])
             if isinstance(values, Mapping)}
    options = ci_get(params, "OPTIONS")
    # detail-tab.md: a detail tab keeps no OPTIONS, placement.get shows []
    kept = dict(options) if isinstance(options, Mapping) and placement not in DETAIL_TABS \
        and not DYNAMIC_TAB.fullmatch(placement) else []
    bound.append({"placement": placement, "userId": user_id, "handler": handler,
                  "options": kept, "title": title, "description": description,
                  "langAll": langs})
    return True


@method("placement.get")
def placement_get(ctx: Context, params: dict[str, Any]) -> list[dict[str, Any]]:
    if ctx.auth != "oauth":  # placement-get.md
        raise RestError(403, *WRONG_AUTH)
    return [dict(p) for p in ctx.portal.records.placements]


@method("placement.unbind")
def placement_unbind(ctx: Context, params: dict[str, Any]) -> dict[str, int]:
    _app_admin(ctx)
    placement = _argument(params, "PLACEMENT").upper()
    handler = _argument(params, "HANDLER", required=False)
    user_id = ci_get(params, "USER_ID")
    bound = ctx.portal.records.placements

    def chosen(p: dict[str, Any]) -> bool:
        return (p["placement"] == placement and (not handler or p["handler"] == handler)
                and (user_id in (None, "") or str(p["userId"]) == str(user_id)))

    kept = [p for p in bound if not chosen(p)]
    removed = len(bound) - len(kept)
    bound[:] = kept
    # placement-unbind.md: count goes up by 1 for each record found and 1 per removal
    return {"count": removed * 2}
