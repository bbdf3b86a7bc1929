"""Bitrix24 receivers: outgoing events and robot calls.

Each request is authenticated (auth[domain] must be the configured portal; then
auth[application_token], and auth[member_id] when known), stored in the inbox, and answered
at once: no CRM call happens here. Bitrix24 never re-sends an event, so the inbox write is
what makes "nothing lost" true.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from connector.bitrix24.portal import same_portal
from connector.config import Bitrix24Settings
from connector.crm.credentials import CredentialStore
from connector.errors import CRMAuthError
from connector.inbox import Stored
from connector.services import Services
from mappings import bitrix24 as b24
from mappings.phpquery import QueryError, decode
from webhooks.auth import same_secret
from webhooks.errors import ApiError
from webhooks.validation import request_body, storable

log = logging.getLogger(__name__)
bp = Blueprint("bitrix24", __name__, url_prefix="/bitrix24")
T = TypeVar("T", b24.Event, b24.RobotCall)
FORM = "application/x-www-form-urlencoded"
ROBOT_KIND = "robot:"
# The inbox columns these go to: inbox_events.portal is String(255), .kind String(64).
PORTAL_MAX = 255
ROBOT_CODE_MAX = 64 - len(ROBOT_KIND)


def _refused(status: int, code: str, detail: str) -> ApiError:
    # Logged and answered, never stored: a refused request leaves nothing behind.
    log.warning("bitrix24 request refused: %s %s (%s)", status, code, detail)
    return ApiError(status, code, detail)


def authenticate(auth: b24.Auth, *, event: str, settings: Bitrix24Settings,
                 credentials: CredentialStore) -> str | None:
    """None when the request is genuine, else why not (without echoing any token)."""
    if not same_portal(auth.domain, settings.portal_key):
        return "auth[domain] is not the configured portal"
    if settings.member_id and not same_secret(auth.member_id, settings.member_id):
        return "auth[member_id] is not this portal's"
    if event == "ONAPPINSTALL" and settings.client_id:
        # An app learns its token from ONAPPINSTALL (docs: safe-event-handlers), a reinstall
        # brings a new one: kept only once the portal itself accepts the install's access
        # token (Bitrix24Processor.app_event), so a forged install stores nothing.
        return None
    # The stored token is a database read: only for an app setup that has no configured one.
    expected = settings.application_token.get_secret_value() if settings.application_token \
        else credentials.application_token()
    if expected is None:
        return "no application token known yet: set bitrix24.application_token"
    if not auth.application_token or not same_secret(auth.application_token, expected):
        return "auth[application_token] does not match"
    return None


@bp.before_request
def _only_when_enabled() -> None:
    require_enabled(current_app.extensions["loyalty"])


def _check_storable(item: b24.Event | b24.RobotCall) -> None:
    """Refuse what the inbox could not keep, here as a 400 rather than at the insert as a 500."""
    texts = [("auth[domain]", item.auth.domain, PORTAL_MAX)]
    if isinstance(item, b24.RobotCall):
        texts.append(("code", item.code, ROBOT_CODE_MAX))
    for field, value, limit in texts:
        if len(value) > limit or not storable(value):
            raise b24.PayloadError(f"{field}: at most {limit} characters and no NUL")


def _accepted(services: Services, content_type: str, read_body: Callable[[], bytes],
              parse: Callable[[dict[str, Any]], T], invalid: str) -> tuple[T, bytes]:
    """The parsed, authenticated call and its body, or an ApiError (415/400/401) with
    nothing stored. The body is read only once the content type is right."""
    if content_type != FORM:
        raise _refused(415, "unsupported_media_type", f"expected {FORM}")
    body = read_body()
    try:
        item = parse(decode(body))
        _check_storable(item)
    except QueryError as exc:
        raise _refused(400, "malformed_body", str(exc)) from None
    except b24.PayloadError as exc:
        raise _refused(400, invalid, str(exc)) from None
    event = item.name if isinstance(item, b24.Event) else "robot"
    try:
        why = authenticate(item.auth, event=event, settings=services.settings.bitrix24,
                           credentials=services.bitrix24_credentials)
    except CRMAuthError as exc:
        # The stored application token does not open (another secret key): the request
        # cannot be told genuine, so it is not stored; nor is it a client's mistake.
        raise ApiError(503, "credentials_unreadable",
                       f"the stored application token cannot be read ({exc.code}): "
                       "see loyalty-connector doctor",
                       headers={"Retry-After": "60"}) from None
    if why:
        raise _refused(401, "unauthorized", why)
    return item, body


def require_enabled(services: Services) -> None:
    if not services.settings.bitrix24.enabled:
        raise ApiError(404, "not_found", "bitrix24 is not enabled on this service")


def accept_event(services: Services, content_type: str,
                 read_body: Callable[[], bytes]) -> Stored:
    """An outgoing event (Bitrix24 enabled), stored; ApiError when refused."""
    event, body = _accepted(services, content_type, read_body, b24.parse_event,
                            "invalid_event")
    # Events carry no id and are never re-sent; processing is by current state, so every
    # delivery is kept (a repeated one costs one fetch, a dropped one would lose a change).
    key = f"bitrix24:event:{hashlib.sha256(body).hexdigest()[:32]}:{uuid.uuid4().hex}"
    return services.inbox.put(source="bitrix24", kind=event.name, dedup_key=key, body=body,
                              content_type=content_type, portal=event.auth.domain)


@bp.post("/events")
def events() -> ResponseReturnValue:
    stored = accept_event(current_app.extensions["loyalty"], request.mimetype, request_body)
    return jsonify(status="accepted", id=stored.id)


@bp.post("/robots")
def robots() -> ResponseReturnValue:
    services: Services = current_app.extensions["loyalty"]
    call, body = _accepted(services, request.mimetype, request_body, b24.parse_robot,
                           "invalid_robot_call")
    # One robot run has one event_token: a repeated delivery must not redeem twice.
    key = b24.robot_key(services.settings.bitrix24.portal_key, call.event_token)
    stored = services.inbox.put(source="bitrix24", kind=ROBOT_KIND + call.code, dedup_key=key,
                                body=body, content_type=request.mimetype,
                                portal=call.auth.domain)
    return jsonify(status="accepted", id=stored.id, duplicate=stored.duplicate)
