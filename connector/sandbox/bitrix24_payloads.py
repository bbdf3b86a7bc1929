"""What Bitrix24 POSTs to the connector: event and robot (automation rule) handler bodies.

Both go out form-encoded: "Bitrix24 sends a request with content-type
application/x-www-form-urlencoded. In the examples below, the structure is shown in JSON
format" (api-reference/events/index.md). So `{"data": {"FIELDS": {"ID": "759"}}}` travels as
`data[FIELDS][ID]=759`, written here by the same rules as PHP's http_build_query.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from connector.sandbox.bitrix24_php import build_query

FORM = "application/x-www-form-urlencoded"
OAUTH_SERVER_ENDPOINT = "https://oauth.bitrix.info/rest/"
CRM_EVENTS = {"ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALDELETE", "ONCRMDEALMOVETOCATEGORY",
              "ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE"}
# bizproc document classes by entity prefix (bizproc-robot-add.md DOCUMENT_TYPE,
# tutorials/bizproc/activity.md: "for a deal, DEAL_123").
DOCUMENT_CLASSES = {"DEAL": "CCrmDocumentDeal", "CONTACT": "CCrmDocumentContact",
                    "LEAD": "CCrmDocumentLead", "COMPANY": "CCrmDocumentCompany"}


def event_body(event: str, entity_id: int | str | None = None, *, application_token: str,
               domain: str, member_id: str, ts: int | None = None,
               event_handler_id: int | str | None = None, access_token: str | None = None,
               refresh_token: str | None = None, expires_in: int = 3600, scope: str = "crm",
               status: str = "L", client_endpoint: str | None = None,
               server_endpoint: str = OAUTH_SERVER_ENDPOINT,
               data: Mapping[str, Any] | None = None,
               language: str = "ru") -> tuple[bytes, str]:
    """An event handler call. CRM events carry only `data[FIELDS][ID]`. `auth` holds OAuth
    tokens only when an access_token is given: a change made by automation or sent to an
    outgoing webhook carries just domain, client_endpoint, server_endpoint, member_id and
    application_token (api-reference/events/index.md "Parameter auth"); refresh_token comes
    only with events that need long-term access, such as ONAPPINSTALL.

    Shapes: api-reference/crm/deals/events/on-crm-deal-{add,update,delete}.md,
    api-reference/crm/contacts/events/on-crm-contact-{add,update,delete}.md,
    api-reference/common/events/on-app-install.md, on-app-uninstall.md."""
    event = event.upper()
    client_endpoint = client_endpoint or f"https://{domain}/rest/"
    stamp = str(int(ts if ts is not None else time.time()))
    body: dict[str, Any] = {"event": event}
    if event == "ONAPPINSTALL":
        body["data"] = dict(data or {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y",
                                     "LANGUAGE_ID": language})
        body["ts"] = stamp
        # on-app-install.md lists the auth keys in this order, tokens always present.
        body["auth"] = {"domain": domain, "scope": scope,
                        "access_token": access_token or secrets.token_hex(16),
                        "refresh_token": refresh_token or secrets.token_hex(16),
                        "expires_in": expires_in, "server_endpoint": server_endpoint,
                        "status": status, "client_endpoint": client_endpoint,
                        "member_id": member_id, "application_token": application_token}
        return build_query(body).encode(), FORM
    if event == "ONAPPUNINSTALL":  # the app is gone: no tokens (on-app-uninstall.md)
        body["data"] = dict(data or {"LANGUAGE_ID": language, "CLEAN": 0})
        body["ts"] = stamp
        body["auth"] = {"domain": domain, "server_endpoint": server_endpoint,
                        "client_endpoint": client_endpoint, "member_id": member_id,
                        "application_token": application_token}
        return build_query(body).encode(), FORM
    if event in CRM_EVENTS or event_handler_id is not None:
        body["event_handler_id"] = str(event_handler_id if event_handler_id is not None else 1)
    body["data"] = dict(data) if data is not None else {"FIELDS": {"ID": str(entity_id)}}
    body["ts"] = stamp
    if access_token:
        auth: dict[str, Any] = {"access_token": access_token, "expires_in": str(expires_in),
                                "scope": scope, "domain": domain,
                                "server_endpoint": server_endpoint, "status": status,
                                "client_endpoint": client_endpoint, "member_id": member_id}
        if refresh_token:
            auth["refresh_token"] = refresh_token
        auth["application_token"] = application_token
    else:
        auth = {"domain": domain, "client_endpoint": client_endpoint,
                "server_endpoint": server_endpoint, "member_id": member_id,
                "application_token": application_token}
    body["auth"] = auth
    return build_query(body).encode(), FORM


def document_id(value: str | Sequence[str]) -> list[str]:
    """`DEAL_123` -> ['crm', 'CCrmDocumentDeal', 'DEAL_123']; a full triple is kept."""
    if isinstance(value, str):
        prefix = value.split("_", 1)[0].upper()
        return ["crm", DOCUMENT_CLASSES.get(prefix, "CCrmDocumentDeal"), value]
    return [str(part) for part in value]


def new_event_token(workflow_id: str) -> str:
    """Shaped like the documented token: `<workflow>|<activity>|<secret>.<signature>`
    (bizproc-event-send.md example)."""
    activity = "A" + "_".join(str(secrets.randbelow(90000) + 10000) for _ in range(4))
    return f"{workflow_id}|{activity}|{secrets.token_urlsafe(24)}.{secrets.token_hex(32)}"


def new_workflow_id() -> str:
    """Like `664fa13bbbb410.99176768` (PHP uniqid('', true))."""
    return f"{secrets.token_hex(7)}.{secrets.randbelow(10 ** 8):08d}"


def robot_body(code: str, document: str | Sequence[str], properties: Mapping[str, Any],
               *, event_token: str, workflow_id: str, application_token: str, domain: str,
               member_id: str, access_token: str | None = None,
               refresh_token: str | None = None, client_endpoint: str | None = None,
               server_endpoint: str = OAUTH_SERVER_ENDPOINT,
               document_type: Sequence[str] | None = None, use_subscription: str = "Y",
               timeout_duration: int = 0, ts: int | None = None, user_id: int = 1,
               scope: str = "crm,bizproc", status: str = "L",
               expires_in: int = 3600) -> tuple[bytes, str]:
    """A robot handler call. Keys as the bizproc REST activity sends them (workflow_id, code,
    document_id, document_type, event_token, properties, use_subscription, timeout_duration,
    ts, auth[...]): the docs give no full example (bizproc-robot-add.md,
    tutorials/bizproc/activity.md name document_id, properties, auth[domain],
    auth[access_token]); the key set follows the Bitrix core's restactivity.php and a captured
    request in the bitrix24-php-sdk examples. Property nulls are sent as '' (the core
    externalizes values before sending)."""
    doc = document_id(document)
    now = int(ts if ts is not None else time.time())
    body: dict[str, Any] = {
        "workflow_id": workflow_id,
        "code": code,
        "document_id": doc,
        "document_type": list(document_type) if document_type else [
            doc[0], doc[1], doc[2].rsplit("_", 1)[0]],
        "event_token": event_token,
        "properties": {k: "" if v is None else v for k, v in properties.items()},
        "use_subscription": use_subscription,
        "timeout_duration": str(timeout_duration),
        "ts": str(now),
    }
    auth: dict[str, Any] = {}
    if access_token:
        auth.update(access_token=access_token, expires=str(now + expires_in),
                    expires_in=str(expires_in), scope=scope)
        if refresh_token:
            auth["refresh_token"] = refresh_token
    auth.update(server_endpoint=server_endpoint,
                client_endpoint=client_endpoint or f"https://{domain}/rest/", status=status,
                application_token=application_token, domain=domain, member_id=member_id,
                user_id=str(user_id))
    body["auth"] = auth
    return build_query(body).encode(), FORM


def placement_call(placement: str, entity_id: int | str, *, domain: str, member_id: str,
                   application_token: str, access_token: str, refresh_token: str,
                   protocol: int = 1, lang: str = "ru", expires_in: int = 3600,
                   scope: str = "crm,placement", status: str = "L",
                   server_endpoint: str = OAUTH_SERVER_ENDPOINT,
                   options: Mapping[str, Any] | None = None) -> tuple[str, bytes, str]:
    """What a widget handler receives when a user opens it (api-reference/widgets/crm/
    detail-tab.md, widgets/_includes/widget_data.md): DOMAIN, PROTOCOL, LANG and APP_SID in
    the handler URL's query string, the rest form-encoded in the POST body, PLACEMENT_OPTIONS
    a JSON string with the entity's ID. Returns (query string, body, content type)."""
    query = build_query({"DOMAIN": domain, "PROTOCOL": str(protocol), "LANG": lang,
                         "APP_SID": secrets.token_hex(16)})
    uri = f"/crm/{placement.split('_')[1].lower()}/details/{entity_id}/?IFRAME=Y"
    context = dict(options or {"ID": str(entity_id), "URI": uri})
    body = build_query({
        "AUTH_ID": access_token, "AUTH_EXPIRES": str(expires_in), "REFRESH_ID": refresh_token,
        "SERVER_ENDPOINT": server_endpoint, "APPLICATION_TOKEN": application_token,
        "APPLICATION_SCOPE": scope, "member_id": member_id, "status": status,
        "PLACEMENT": placement,
        # PHP's json_encode escapes slashes, as the docs' example shows
        "PLACEMENT_OPTIONS": json.dumps(context).replace("/", "\\/")})
    return query, body.encode(), FORM
