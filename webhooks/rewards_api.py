"""The rewards catalogue and its claims in the admin API (/api/v1/rewards, /api/v1/claims),
behind the same bearer token as the rest of /api/v1.

A claim takes an idempotency key like every change: 201 the first time, 200 with the same
claim and `"duplicate": true` for a repeat. A refusal is a 409 `reward_refused` whose
`reason` says why: points, stock, limit, tier, window, disabled.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from connector.ledger.fingerprint import request_fingerprint
from connector.services import Services
from webhooks.api import ledger_key, require_admin_token
from webhooks.validation import Fields, check_text, invalid, json_body, query_flag

bp = Blueprint("rewards_api", __name__, url_prefix="/api/v1")
bp.before_request(require_admin_token)
ACTOR = "api"
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
NAME_MAX = 128
TIER_MAX = 64
COUNT_MAX = 1_000_000_000
# ISO 8601 date and time, with or without an offset (without: program.timezone).
MOMENT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?"
                    r"(Z|[+-][0-9]{2}:[0-9]{2})?$")
CLAIM_CODE = re.compile(r"^[A-Za-z0-9 -]{1,32}$")
# What an update clears when sent as null; a name and a cost cannot be cleared.
CLEARABLE = ("stock", "per_customer", "tier", "starts", "ends")


def _services() -> Services:
    return current_app.extensions["loyalty"]


def _definition(fields: Fields, *, creating: bool) -> dict[str, Any]:
    """The reward's fields as given: for an update, absent ones left out and CLEARABLE ones
    sent as null kept as None (cleared)."""
    data: dict[str, Any] = {}
    if creating:
        data["id"] = fields.text("id", max_length=48, pattern=SLUG)
        data["name"] = fields.text("name", max_length=NAME_MAX)
        data["cost"] = fields.amount("cost")
    else:
        data["name"] = fields.optional_text("name", max_length=NAME_MAX)
        data["cost"] = fields.optional_amount("cost")
    data["stock"] = fields.optional_count("stock", minimum=0, maximum=COUNT_MAX)
    data["per_customer"] = fields.optional_count("per_customer", minimum=1,
                                                 maximum=COUNT_MAX)
    data["tier"] = fields.optional_text("tier", max_length=TIER_MAX)
    data["starts"] = fields.optional_text("starts", max_length=32, pattern=MOMENT)
    data["ends"] = fields.optional_text("ends", max_length=32, pattern=MOMENT)
    if not creating:
        data["active"] = fields.optional_flag("active")
    fields.finish()
    given = {k: v for k, v in data.items() if v is not None}
    return given if creating else {**given, **dict.fromkeys(fields.nulls(*CLEARABLE))}


def _query(*known: str) -> None:
    """Refuse a query parameter the route does not read (a misspelt `open` lists them all)."""
    unknown = sorted(set(request.args) - set(known))
    if unknown:
        raise invalid(unknown[0], "unknown query parameter")


def _slug(reward_id: str) -> str:
    return check_text("reward_id", reward_id, max_length=48, pattern=SLUG)


# -- the catalogue -------------------------------------------------------------------------
@bp.get("/rewards")
def rewards() -> ResponseReturnValue:
    _query("all")
    listed = _services().rewards.list(include_inactive=query_flag("all"))
    return jsonify(rewards=[reward.as_json() for reward in listed])


@bp.post("/rewards")
def create_reward() -> ResponseReturnValue:
    made = _services().rewards.create(_definition(json_body(), creating=True))
    return jsonify(made.as_json()), 201


@bp.patch("/rewards/<reward_id>")
def update_reward(reward_id: str) -> ResponseReturnValue:
    slug = _slug(reward_id)
    return jsonify(_services().rewards.update(
        slug, _definition(json_body(), creating=False)).as_json())


@bp.post("/rewards/<reward_id>/disable")
def disable_reward(reward_id: str) -> ResponseReturnValue:
    return jsonify(_services().rewards.disable(_slug(reward_id)).as_json())


# -- claims --------------------------------------------------------------------------------
@bp.post("/rewards/<reward_id>/claim")
def claim(reward_id: str) -> ResponseReturnValue:
    slug = _slug(reward_id)
    fields = json_body()
    ref, key = fields.ref(), fields.idempotency_key(request.headers.get("Idempotency-Key"))
    fields.finish()
    # One key, one claim: the same key for another reward or customer is a conflict.
    fingerprint = request_fingerprint("reward", {"crm": ref.crm, "portal": ref.portal,
                                                 "contact_id": ref.contact_id, "reward": slug})
    claimed = _services().claims.claim(ref, slug, key=ledger_key(key), via="api",
                                       actor=ACTOR, fingerprint=fingerprint)
    return jsonify(claimed.as_json()), 200 if claimed.result.duplicate else 201


@bp.get("/claims")
def claims() -> ResponseReturnValue:
    _query("open")
    listed = _services().claims.list(open_only=query_flag("open"))
    return jsonify(claims=[c.as_json() for c in listed])


def _code(code: str) -> str:
    return check_text("code", code, max_length=32, pattern=CLAIM_CODE)


@bp.post("/claims/<code>/handed")
def handed(code: str) -> ResponseReturnValue:
    return jsonify(_services().claims.handed(_code(code), actor=ACTOR).as_json())


@bp.post("/claims/<code>/cancel")
def cancel(code: str) -> ResponseReturnValue:
    return jsonify(_services().claims.cancel(_code(code), actor=ACTOR).as_json())
