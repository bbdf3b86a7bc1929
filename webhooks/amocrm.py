"""amoCRM receivers: account webhooks, digital-pipeline actions, the OAuth callback.

Account webhooks are not signed, so the secret in the URL is the check (wrong secret: 404,
nothing stored). amoCRM waits at most 2 seconds and disables a hook after 100 failures in
2 hours: bodies are stored in the inbox and answered 200 at once.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from connector.amocrm.authorization import Refused, authorize
from connector.inbox import Stored
from connector.services import Services
from mappings import amocrm as amo
from mappings.phpquery import QueryError, decode
from webhooks.auth import same_secret
from webhooks.errors import ApiError, error_response
from webhooks.validation import request_body

log = logging.getLogger(__name__)
bp = Blueprint("amocrm", __name__, url_prefix="/amocrm")
FORM = "application/x-www-form-urlencoded"
# The inbox kind "action:bonus:<name>" fits inbox_events.kind (64) with names up to 51.
# ASCII digits only: \d would also take other scripts' digits.
ACTION = re.compile(r"bonus/[A-Za-z0-9_-]{1,51}|redeem/(max|[0-9]{1,9}(\.[0-9]{1,2})?)"
                    r"|referral/[A-Za-z0-9-]{1,32}|promo/[A-Za-z0-9-]{1,50}"
                    r"|reward/[a-z0-9][a-z0-9_-]{0,47}|nps/(10|[0-9])")


def _services() -> Services:
    return current_app.extensions["loyalty"]


def secret_ok(services: Services, given: str) -> bool:
    configured = services.settings.amocrm.webhook_secret
    if configured is None or not services.settings.amocrm.enabled:
        return False
    return same_secret(given, configured.get_secret_value())


def not_found() -> ApiError:
    # The same answer as for any unknown URL: a wrong secret reveals nothing.
    return ApiError(404, "not_found", NotFound.description)


def accept(services: Services, kind: str, content_type: str,
           read_body: Callable[[], bytes], request_id: str | None) -> Stored:
    """A webhook or pipeline action (secret already checked), stored; ApiError when refused.
    The body is read only once the content type is right; `request_id` is amoCRM's
    X-Amocrm-Requestid header."""
    if content_type != FORM:
        raise ApiError(415, "unsupported_media_type", f"expected {FORM}")
    body = read_body()
    try:
        hook = amo.parse_webhook(decode(body))
    except (QueryError, amo.PayloadError) as exc:
        log.warning("amocrm webhook refused: 400 (%s)", exc)
        raise ApiError(400, "invalid_webhook", str(exc)) from None
    settings = services.settings.amocrm
    if hook.subdomain and hook.subdomain != settings.account_subdomain:
        log.warning("amocrm webhook refused: 400 (account %s)", hook.subdomain)
        raise ApiError(400, "invalid_webhook", "account[subdomain] is not this account")
    # amoCRM re-sends a hook it thinks failed with the same request id.
    request_id = (request_id or "")[:64]
    if not request_id.isprintable():
        request_id = ""  # amoCRM's ids are UUIDs: anything else is not one of its re-sends
    key = (f"amocrm:request:{request_id}:{kind}" if request_id else
           f"amocrm:body:{hashlib.sha256(body).hexdigest()[:32]}:{uuid.uuid4().hex}")
    return services.inbox.put(source="amocrm", kind=kind, dedup_key=key, body=body,
                              content_type=content_type, portal=settings.portal_key)


@bp.post("/webhooks/<secret>")
def webhooks(secret: str) -> ResponseReturnValue:
    services = _services()
    if not secret_ok(services, secret):
        raise not_found()
    stored = accept(services, "webhook", request.mimetype, request_body,
                    request.headers.get("X-Amocrm-Requestid"))
    return jsonify(status="accepted", id=stored.id, duplicate=stored.duplicate)


@bp.post("/actions/<secret>/<path:action>")
def actions(secret: str, action: str) -> ResponseReturnValue:
    """A digital-pipeline "send webhook" action: bonus/<name>, redeem/<points|max>,
    referral/<code>, promo/<code>, reward/<reward id> or nps/<0-10>."""
    services = _services()
    if not secret_ok(services, secret):
        raise not_found()
    if action.startswith("nps/") and not ACTION.fullmatch(action):
        return error_response(400, "invalid_score", "nps/<score>: the score is a whole "
                              "number from 0 to 10, e.g. /nps/9")
    if not ACTION.fullmatch(action):
        return error_response(404, "unknown_action",
                              "use /amocrm/actions/<secret>/bonus/<name> (at most 51 letters, "
                              "digits, _ or -), /redeem/<points|max>, /referral/<code>, "
                              "/promo/<code>, /reward/<reward id> or /nps/<0-10>")
    verb, _, argument = action.partition("/")
    stored = accept(services, f"action:{verb}:{argument}", request.mimetype, request_body,
                    request.headers.get("X-Amocrm-Requestid"))
    return jsonify(status="accepted", id=stored.id, duplicate=stored.duplicate)


@bp.get("/oauth/callback")
def oauth_callback() -> ResponseReturnValue:
    """The integration's redirect URI: only for an authorization the connector started (see
    connector.amocrm.authorization); then the tokens are kept and waiting events woken."""
    services = _services()
    try:
        woken = authorize(services, request.args)
    except Refused as exc:
        log.warning("amocrm oauth callback refused: %d %s", exc.status, exc.code)
        return error_response(exc.status, exc.code, exc.detail)
    return jsonify(status="authorized", account=services.settings.amocrm.portal_key,
                   events_resumed=woken)
