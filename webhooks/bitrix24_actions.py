"""Bitrix24 "Webhook" automation rule: /bitrix24/actions/<secret>/<action>?deal_id=<id>.

The portal's standard rule calls a URL and reads no answer; it needs no app, so this is how a
webhook setup gets robots (connector.bitrix24.actions applies them). Like amoCRM's pipeline
actions, the secret in the URL is the check (wrong, or bitrix24.actions_secret unset: 404, as
for any unknown URL, nothing stored), and the call is stored in the inbox and answered at
once. GET and POST are both taken: the rule's method is not documented, and the query is all
that is read.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from connector.bitrix24 import actions
from connector.services import Services
from mappings.phpquery import encode
from webhooks.auth import same_secret
from webhooks.bitrix24 import FORM, require_enabled
from webhooks.errors import ApiError, error_response
from webhooks.validation import request_body

bp = Blueprint("bitrix24_actions", __name__, url_prefix="/bitrix24/actions")


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "The requested URL was not found on the server.")


@bp.route("/<secret>/<path:action>", methods=["GET", "POST"])
def run(secret: str, action: str) -> ResponseReturnValue:
    """accrue (the deal's purchase), bonus/<name>, redeem/<points|max>, promo/<code>,
    reward/<id> or nps/<0-10>, for the deal's contact, once per deal and action."""
    services: Services = current_app.extensions["loyalty"]
    require_enabled(services)
    configured = services.settings.bitrix24.actions_secret
    if configured is None or not same_secret(secret, configured.get_secret_value()):
        raise _not_found()
    if action.startswith("nps/") and not actions.ACTION.fullmatch(action):
        return error_response(400, "invalid_score", "nps/<score>: the score is a whole "
                              "number from 0 to 10, e.g. /nps/9")
    if not actions.ACTION.fullmatch(action):
        return error_response(404, "unknown_action",
                              "use /bitrix24/actions/<secret>/accrue, /bonus/<name> (at most "
                              "51 letters, digits, _ or -), /redeem/<points|max>, "
                              "/promo/<code>, /reward/<reward id> or /nps/<0-10>")
    deal = actions.DEAL.fullmatch(request.args.get("deal_id", ""))
    if deal is None:
        return error_response(400, "invalid_action",
                              "add ?deal_id={{ID}} to the URL (the deal's ID field)")
    request_body()  # unused, but held to server.max_body_bytes like every other body
    portal = services.settings.bitrix24.portal_key
    stored = services.inbox.put(
        source="bitrix24", kind=actions.kind(action),
        dedup_key=actions.key(portal, action, deal.group(1)),
        body=encode({"deal_id": deal.group(1)}).encode(), content_type=FORM, portal=portal)
    return jsonify(status="accepted", id=stored.id, duplicate=stored.duplicate)
