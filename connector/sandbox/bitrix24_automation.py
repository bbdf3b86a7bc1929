"""App-context methods of the fake portal: event handlers, robots (automation rules),
bizproc.event.send, automation triggers, and timeline comments.

Registered into bitrix24_methods.METHODS on import (bitrix24_server imports this module).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from connector.sandbox.bitrix24_methods import (
    Context,
    RestError,
    crm_error,
    method,
    positive_id,
    require_app,
)
from connector.sandbox.bitrix24_php import ci_get

KNOWN_EVENTS = {
    "ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALDELETE", "ONCRMDEALMOVETOCATEGORY",
    "ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE", "ONCRMLEADADD",
    "ONCRMLEADUPDATE", "ONCRMLEADDELETE", "ONCRMCOMPANYADD", "ONCRMCOMPANYUPDATE",
    "ONCRMCOMPANYDELETE", "ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPUPDATE", "ONOFFLINEEVENT",
}
ROBOT_CODE = re.compile(r"^[a-zA-Z0-9._-]+$")  # bizproc-robot-add.md
TRIGGER_CODE = re.compile(r"^[a-z0-9.\-_]+$")  # crm-automation-trigger-add.md
# crm.enum.ownertype: lead 1, deal 2, quote 7, smart invoice 31, SPAs from 128. "Triggers exist
# in leads, deals, estimates, invoices, and SPAs" (crm-automation-trigger-execute.md).
TRIGGER_OWNER_TYPES = {1, 2, 7, 31}


# -- events -----------------------------------------------------------------------------------
@method("event.bind")
def event_bind(ctx: Context, params: dict[str, Any]) -> bool:
    # api-reference/events/event-bind.md; "works only within the context of application
    # authorization" (the error for a webhook is not documented; app methods use this one)
    require_app(ctx)
    event = str(ci_get(params, "event", "")).upper()
    handler = str(ci_get(params, "handler", "") or "")
    offline = str(ci_get(params, "event_type", "online")).lower() == "offline"
    auth_type = str(ci_get(params, "auth_type", "0") or "0")
    if event not in KNOWN_EVENTS:
        raise RestError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
    if not handler and not offline:
        raise RestError(400, "ERROR_ARGUMENT", "Argument 'handler' is null or empty",
                        argument="handler")
    bound = ctx.portal.records.bound_events
    if any(b["event"] == event and b["handler"] == handler and b["auth_type"] == auth_type
           for b in bound):
        raise RestError(400, "ERROR_HANDLER_ALREADY_EXIST", "Handler already exists!")
    bound.append({"id": ctx.portal.next_handler_id(), "event": event, "handler": handler,
                  "auth_type": auth_type, "offline": 1 if offline else 0,
                  "auth_connector": ci_get(params, "auth_connector")})
    return True


@method("event.get")
def event_get(ctx: Context, params: dict[str, Any]) -> list[dict[str, Any]]:
    require_app(ctx)  # event-get.md
    return [{"event": b["event"], "handler": b["handler"], "auth_type": b["auth_type"],
             "offline": b["offline"]} for b in ctx.portal.records.bound_events]


@method("event.unbind")
def event_unbind(ctx: Context, params: dict[str, Any]) -> dict[str, int]:
    require_app(ctx)  # event-unbind.md: {"count": n}
    event = str(ci_get(params, "event", "") or "").upper()
    handler = str(ci_get(params, "handler", "") or "")
    auth_type = ci_get(params, "auth_type")
    bound = ctx.portal.records.bound_events

    # No auth_type: every handler; an empty one or 0: only those bound without auth_type.
    wanted_auth = None if auth_type is None else str(auth_type or "0")

    def chosen(b: dict[str, Any]) -> bool:
        return ((not event or b["event"] == event) and (not handler or b["handler"] == handler)
                and (wanted_auth is None or b["auth_type"] == wanted_auth))

    kept = [b for b in bound if not chosen(b)]
    count = len(bound) - len(kept)
    bound[:] = kept
    return {"count": count}


# -- robots -----------------------------------------------------------------------------------
ROBOT_CONTEXT = "Application context required"  # bizproc-robot-add.md / -list.md / -delete.md


def _validation(description: str) -> RestError:
    return RestError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", description)


@method("bizproc.robot.add")
def robot_add(ctx: Context, params: dict[str, Any]) -> bool:
    require_app(ctx, ROBOT_CONTEXT)
    data = {str(k).upper(): v for k, v in params.items()}
    code = str(data.get("CODE") or "")
    if not code:
        raise _validation("Empty activity code!")
    if not ROBOT_CODE.fullmatch(code):
        raise _validation("Wrong activity code!")
    handler = str(data.get("HANDLER") or "")
    if not handler:
        raise RestError(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    if not handler.startswith(("http://", "https://")):
        raise RestError(400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol")
    if not data.get("NAME"):
        raise _validation("Empty activity NAME!")
    if code in ctx.portal.records.robots:
        raise RestError(400, "ERROR_ACTIVITY_ALREADY_INSTALLED",
                        "Activity or Automation rule already installed!")
    ctx.portal.records.robots[code] = data
    return True


@method("bizproc.robot.update")
def robot_update(ctx: Context, params: dict[str, Any]) -> bool:
    require_app(ctx, ROBOT_CONTEXT)  # bizproc-robot-update.md: CODE + FIELDS
    code = str(ci_get(params, "code", "") or "")
    if code not in ctx.portal.records.robots:
        raise RestError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
    fields = ci_get(params, "fields")
    if not isinstance(fields, Mapping) or not fields:
        raise _validation("Empty data!")
    ctx.portal.records.robots[code].update({str(k).upper(): v for k, v in fields.items()})
    return True


@method("bizproc.robot.list")
def robot_list(ctx: Context, params: dict[str, Any]) -> list[str]:
    require_app(ctx, ROBOT_CONTEXT)
    return list(ctx.portal.records.robots)


@method("bizproc.robot.delete")
def robot_delete(ctx: Context, params: dict[str, Any]) -> bool:
    require_app(ctx, ROBOT_CONTEXT)
    code = str(ci_get(params, "code", "") or "")
    if not code:
        raise _validation("Empty activity code!")
    if ctx.portal.records.robots.pop(code, None) is None:
        raise RestError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
    return True


@method("bizproc.event.send")
def event_send(ctx: Context, params: dict[str, Any]) -> bool:
    # bizproc-event-send.md: an unknown or already used EVENT_TOKEN is 403 ACCESS_DENIED.
    token = str(ci_get(params, "event_token", "") or "")
    issued = ctx.portal.event_tokens.get(token)
    if issued is None or issued.get("used"):
        raise RestError(403, "ACCESS_DENIED", "Access denied!")
    issued["used"] = True
    values = ci_get(params, "return_values") or {}
    ctx.portal.records.bizproc_events.append({
        "event_token": token, "return_values": dict(values) if isinstance(values, Mapping)
        else values, "log_message": ci_get(params, "log_message"), "code": issued.get("code"),
        "document_id": issued.get("document_id")})
    return True


# -- triggers ---------------------------------------------------------------------------------
def _trigger_code(params: Mapping[str, Any]) -> str:
    code = str(ci_get(params, "code", "") or "")
    if not code:
        raise crm_error("Empty trigger code!")
    if not TRIGGER_CODE.fullmatch(code):
        raise crm_error("Wrong trigger code!")
    return code


@method("crm.automation.trigger.add")
def trigger_add(ctx: Context, params: dict[str, Any]) -> bool:
    require_app(ctx)  # crm-automation-trigger-add.md: an existing CODE gets its NAME updated
    code = _trigger_code(params)
    name = str(ci_get(params, "name", "") or "")
    if not name:
        raise crm_error("Empty trigger name!")
    ctx.portal.records.triggers[code] = {"NAME": name, "CODE": code}
    return True


@method("crm.automation.trigger.list")
def trigger_list(ctx: Context, params: dict[str, Any]) -> list[dict[str, str]]:
    require_app(ctx)
    return [dict(t) for t in ctx.portal.records.triggers.values()]


@method("crm.automation.trigger.delete")
def trigger_delete(ctx: Context, params: dict[str, Any]) -> bool:
    require_app(ctx)
    if ctx.portal.records.triggers.pop(_trigger_code(params), None) is None:
        raise crm_error("Trigger not found")
    return True


@method("crm.automation.trigger.execute")
def trigger_execute(ctx: Context, params: dict[str, Any]) -> bool:
    require_app(ctx)  # crm-automation-trigger-execute.md
    code = _trigger_code(params)
    if code not in ctx.portal.records.triggers:
        raise crm_error(f"Trigger with code {code} is not registered.")
    try:
        owner_type = int(str(ci_get(params, "owner_type_id", "")))
    except ValueError:
        owner_type = 0
    if owner_type not in TRIGGER_OWNER_TYPES and owner_type < 128:
        raise crm_error("Incorrect parameter OWNER_TYPE_ID.")
    owner_id = positive_id(params, "owner_id", "Incorrect parameter OWNER_ID.")
    ctx.portal.records.fired_triggers.append({
        "code": code, "owner_type_id": owner_type, "owner_id": owner_id,
        "at": ctx.portal.clock.time()})
    return True


# crm-automation-trigger.md: TYPENAME_ID targets; "Target is not found." for another TYPENAME
TARGET = re.compile(r"^([A-Z]+(?:_[A-Z]+)*?)_([0-9]+)$")
TARGET_TYPES = {"LEAD", "DEAL", "CONTACT", "COMPANY", "QUOTE", "SMART_INVOICE"}


@method("crm.automation.trigger")
def trigger_webhook(ctx: Context, params: dict[str, Any]) -> bool:
    """Fire an admin's "Track incoming webhook" trigger (crm-automation-trigger.md): any
    authorization may call it, webhook or app. Its errors carry an empty code, except the
    permission check (ACCESS_DENIED); a deal that does not exist fails that check.
    The fake moves the deal to the trigger's stage, as the portal's automation does. The
    answer when no trigger matched is not documented: `false` here ("Result of trigger
    activation")."""
    target = str(ci_get(params, "target", "") or "")
    if not target:
        raise crm_error("Target is not set.")
    match = TARGET.fullmatch(target)
    if match is None:
        raise crm_error("Incorrect target format.")
    kind, owner_id = match.group(1), int(match.group(2))
    if kind not in TARGET_TYPES:
        raise crm_error("Target is not found.")
    deal = ctx.portal.store.deals.get(owner_id) if kind == "DEAL" else None
    if deal is None:
        raise RestError(400, "ACCESS_DENIED",
                        "Access denied! There are no permissions to update the entity.")
    code = ci_get(params, "code")
    # Without a code the first trigger of the funnel runs (the docs' note on old triggers).
    candidates = [t for t in ctx.portal.records.webhook_triggers.values()
                  if t["category_id"] == deal["CATEGORY_ID"] and (not code or t["code"] == code)]
    if not candidates:
        return False
    trigger = candidates[0]
    ctx.portal.records.fired_webhook_triggers.append({
        "code": trigger["code"], "target": target, "owner_id": owner_id,
        "auth": ctx.auth, "at": ctx.portal.clock.time()})
    if trigger["stage_id"] and deal["STAGE_ID"] != trigger["stage_id"]:
        ctx.portal.update_deal(owner_id, STAGE_ID=trigger["stage_id"])
    return True


# -- timeline ---------------------------------------------------------------------------------
@method("crm.timeline.comment.add")
def timeline_comment_add(ctx: Context, params: dict[str, Any]) -> int:
    # crm-timeline-comment-add.md: since crm 23.100.0 only the lowercase key `fields` works
    fields = params.get("fields")
    if not isinstance(fields, Mapping):
        raise RestError(400, "100", "Required fields are not provided")
    fields = {str(k).upper(): v for k, v in fields.items()}
    entity_type = str(fields.get("ENTITY_TYPE") or "").lower()
    try:
        entity_id = int(str(fields.get("ENTITY_ID") or 0))
    except ValueError:
        entity_id = 0
    if not entity_type or entity_id <= 0:
        raise RestError(400, "100", "Required fields are not provided")
    if not str(fields.get("COMMENT") or "").strip():
        raise RestError(400, "INVALID_ARG_VALUE", "Empty comment")
    store = ctx.portal.store
    owners = {"deal": store.deals, "contact": store.contacts}
    if entity_type in owners and entity_id not in owners[entity_type]:
        raise RestError(400, "OWNER_NOT_FOUND", "Owner of the item not found")
    comments = ctx.portal.records.timeline_comments
    comment_id = 999 + len(comments)
    comments.append({"id": comment_id, "entity_type": entity_type, "entity_id": entity_id,
                     "comment": str(fields["COMMENT"]), "at": ctx.portal.clock.time()})
    return comment_id
