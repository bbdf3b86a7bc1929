"""The JSON admin API under /api/v1: read accounts and cards, preview a purchase, and change
balances for a POS, a web shop or an admin tool.

Every request carries `Authorization: Bearer <server.admin_token>`. Every change carries an
idempotency key: the first request answers 201, a repeat answers 200 with the same entry and
`"duplicate": true`, and writes nothing; the same key with other fields is a 409.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from connector import triggers, welcome
from connector.errors import ConfigError
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef, Result
from connector.money import from_minor, to_minor
from connector.products.rows import Row, digest, rows_total
from connector.referrals.linking import Linker
from connector.services import Services
from webhooks.auth import configured, require
from webhooks.errors import ApiError
from webhooks.product_rows import parse_rows
from webhooks.validation import (
    BONUS_NAME,
    COMMENT_MAX,
    TEXT_MAX,
    Fields,
    account_ref,
    check_text,
    invalid,
    json_body,
    query_flag,
    query_int,
    request_body,
)

bp = Blueprint("api", __name__, url_prefix="/api/v1")
ACTOR = "api"
ACCOUNT_HISTORY = 20
HISTORY_PAGE = 50
HISTORY_PAGE_MAX = 200
# The ledger's keys are one space shared with keys it derives itself (expiry:lot:N,
# referral:N, CRM events); a prefix keeps a client's key from ever taking one of those.
KEY_PREFIX = "api:"
# A referral code is 8 characters; more room for how people type it (spaces, dashes).
REFERRAL_CODE_MAX = 32
# Rows of one return: a receipt's worth, and a bound on the request's work.
PROMO_CODE_MAX = 64  # 32 characters stored, room for spaces and dashes as typed


def _ledger() -> Ledger:
    services: Services = current_app.extensions["loyalty"]
    return services.ledger


@bp.before_request
def require_admin_token() -> None:
    """Refuse the whole API unless the bearer token is the configured admin token."""
    services: Services = current_app.extensions["loyalty"]
    require(configured(services.settings.server.admin_token),
            disabled=("api_disabled", "set server.admin_token (or LOYALTY_SERVER__ADMIN_TOKEN) "
                                      "to enable /api/v1"),
            refused="send Authorization: Bearer <server.admin_token>")


def ledger_key(key: str) -> str:
    """The client's key in the API's namespace, within the ledger's 255 characters."""
    stored = KEY_PREFIX + key
    if len(stored) <= TEXT_MAX:
        return stored
    return f"{KEY_PREFIX}sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _client_key(fields: Fields) -> str:
    return fields.idempotency_key(request.headers.get("Idempotency-Key"))


def _outcome(result: Result, body: dict[str, Any] | None = None) -> ResponseReturnValue:
    created = result.entry_id is not None and not result.duplicate
    return jsonify(body if body is not None else result.as_json()), 201 if created else 200


def _services() -> Services:
    services: Services = current_app.extensions["loyalty"]
    return services


def _welcomed(body: dict[str, Any], ref: AccountRef, existed: bool) -> dict[str, Any]:
    """The answer, with the welcome bonus when this request made the account and
    program.welcome_on includes "api"."""
    granted = welcome.welcome_if_new(_services(), ref, existed=existed, channel="api",
                                     actor=ACTOR)
    if granted is not None and granted.entry_id is not None:
        body["welcome"] = granted.as_json()
    return body


def _linker() -> Linker:
    services: Services = current_app.extensions["loyalty"]
    return Linker(services.db, services.ledger)


# -- reading -------------------------------------------------------------------------------
@bp.get("/accounts/<crm>/<portal>/<contact_id>")
def account(crm: str, portal: str, contact_id: str) -> ResponseReturnValue:
    ref = account_ref(crm, portal, contact_id)
    with_history = query_flag("history")
    body = _ledger().account(ref).as_json()
    if with_history:
        body["history"] = [e.as_json() for e in _ledger().history(ref, limit=ACCOUNT_HISTORY)]
    return jsonify(body)


@bp.get("/accounts/<crm>/<portal>/<contact_id>/history")
def history(crm: str, portal: str, contact_id: str) -> ResponseReturnValue:
    ref = account_ref(crm, portal, contact_id)
    limit = query_int("limit", minimum=1, maximum=HISTORY_PAGE_MAX)
    if limit is None:
        limit = HISTORY_PAGE
    before = query_int("before", minimum=1)
    # One entry more than asked says whether an older page exists.
    entries = _ledger().history(ref, limit=limit + 1, before_id=before)
    page = entries[:limit]
    more = len(entries) > limit
    return jsonify(entries=[e.as_json() for e in page], next_before=page[-1].id if more else None)


@bp.get("/cards/<card_number>")
def card(card_number: str) -> ResponseReturnValue:
    card_number = check_text("card_number", card_number, max_length=32)
    return jsonify(_ledger().account_by_card(card_number).as_json())


@bp.post("/preview")
def preview() -> ResponseReturnValue:
    fields = json_body()
    ref = fields.optional_ref()
    rows = _rows(fields)
    # With rows, the amount defaults to what they come to (a checkout's basket).
    amount = fields.amount("amount") if rows is None else \
        fields.optional_amount("amount") or rows_total(rows)
    category = fields.optional_text("category")
    code = fields.optional_text("referral_code", max_length=REFERRAL_CODE_MAX)
    promo_code = fields.optional_text("promo_code", max_length=PROMO_CODE_MAX)
    fields.finish()
    # asdict keeps Decimals; the app's JSON provider writes each as a string.
    body = asdict(_ledger().preview(amount, ref, category=category, rows=rows))
    if rows is None:
        del body["eligible_amount"]  # only rows tell what is eligible
    if promo_code is not None:
        # Nothing is used: what the code would add on top of points_earned, or why not.
        body["promo"] = _ledger().check_promo(promo_code, amount, ref,
                                              category=category).as_json()
    if code is not None:
        check = _linker().check(ref, code)
        body["referral"] = check.as_json()
        if check.outcome == "valid":
            body["referral"]["newcomer_bonus"] = from_minor(to_minor(
                _ledger().program.bonus_points("referral_newcomer")))
    return jsonify(body)


# -- changing ------------------------------------------------------------------------------
@bp.post("/accrue")
def accrue() -> ResponseReturnValue:
    fields = json_body()
    ref, key = fields.ref(), _client_key(fields)
    amount = fields.amount("amount")
    source = fields.optional_text("source")
    category = fields.optional_text("category")
    comment = fields.optional_text("comment", max_length=COMMENT_MAX)
    code = fields.optional_text("referral_code", max_length=REFERRAL_CODE_MAX)
    promo_code = fields.optional_text("promo_code", max_length=PROMO_CODE_MAX)
    fields.finish()
    # The link comes first, so this purchase (the first one) pays the referral. A code
    # that cannot link is recorded and answered, never a refusal of the purchase. A used
    # key links nothing: its request is a repeat (answered as first) or a conflict (409).
    existed = welcome.known(_services(), ref, "api")
    link = _linker().link(ref, code, via="api") \
        if code is not None and not _ledger().key_used(ledger_key(key)) else None
    # Without a source the purchase is named by the client's key, so /reverse can find it.
    result = _ledger().accrue(ref, amount, key=ledger_key(key), source=source or key,
                              category=category, comment=comment, actor=ACTOR,
                              fingerprint=fields.fingerprint("accrue"), promo_code=promo_code)
    services: Services = current_app.extensions["loyalty"]
    triggers.record(services.db, [t for t in triggers.from_results([result])
                                  if t.code == triggers.REFERRAL_REWARDED],
                    program=services.program)
    body = _welcomed(result.as_json(), ref, existed)
    if link is not None:
        body["referral"] = link.as_json()
    if "promo" in result.details:
        # Used with the purchase, or refused (outcome says why); a repeat answers the same.
        body["promo"] = result.details["promo"]
    return _outcome(result, body)


@bp.post("/redeem")
def redeem() -> ResponseReturnValue:
    fields = json_body()
    ref, key = fields.ref(), _client_key(fields)
    points = fields.amount("points")
    purchase_amount = fields.optional_amount("purchase_amount")
    rows = _rows(fields)
    if rows is not None and purchase_amount is None:
        purchase_amount = rows_total(rows)
    partial = fields.flag("partial")
    source = fields.optional_text("source")
    comment = fields.optional_text("comment", max_length=COMMENT_MAX)
    fields.finish()
    return _outcome(_ledger().redeem(ref, points, key=ledger_key(key),
                                     purchase_amount=purchase_amount, source=source or key,
                                     partial=partial, comment=comment, actor=ACTOR,
                                     fingerprint=fields.fingerprint("redeem"), rows=rows))


def _rows(fields: Fields) -> list[Row] | None:
    raw = fields.raw("rows")
    if raw is None:
        return None
    rows = parse_rows(raw)
    fields.note("rows", digest(rows))
    return rows


@bp.post("/adjust")
def adjust() -> ResponseReturnValue:
    fields = json_body()
    ref, key = fields.ref(), _client_key(fields)
    points = fields.amount("points", signed=True)
    reason = fields.text("reason", max_length=COMMENT_MAX)
    fields.finish()
    existed = welcome.known(_services(), ref, "api")
    result = _ledger().adjust(ref, points, key=ledger_key(key), reason=reason, actor=ACTOR,
                              fingerprint=fields.fingerprint("adjust"))
    return _outcome(result, _welcomed(result.as_json(), ref, existed))


@bp.post("/bonus")
def bonus() -> ResponseReturnValue:
    fields = json_body()
    ref, key = fields.ref(), _client_key(fields)
    name = fields.text("name", pattern=BONUS_NAME)
    points = fields.optional_amount("points")
    comment = fields.optional_text("comment", max_length=COMMENT_MAX)
    fields.finish()
    existed = welcome.known(_services(), ref, "api")
    result = _ledger().grant_bonus(ref, name, key=ledger_key(key), points=points,
                                   comment=comment, actor=ACTOR,
                                   fingerprint=fields.fingerprint("bonus"))
    return _outcome(result, _welcomed(result.as_json(), ref, existed))


@bp.post("/reverse")
def reverse() -> ResponseReturnValue:
    fields = json_body()
    ref, key = fields.ref(), _client_key(fields)
    source = fields.text("source")
    comment = fields.optional_text("comment", max_length=COMMENT_MAX)
    fields.finish()
    return _outcome(_ledger().reverse(ref, source, key=ledger_key(key), comment=comment,
                                      actor=ACTOR, fingerprint=fields.fingerprint("reverse")))


@bp.post("/return")
def return_purchase() -> ResponseReturnValue:
    """Part or all of a purchase given back: `amount`, or `rows` of returned products (the
    amount is their total), or both when they agree."""
    fields = json_body()
    ref, key = fields.ref(), _client_key(fields)
    source = fields.text("source")
    amount = fields.optional_amount("amount")
    rows = _rows(fields) or []
    comment = fields.optional_text("comment", max_length=COMMENT_MAX)
    fields.finish()
    if amount is None and not rows:
        raise invalid("amount", "required: send \"amount\" or the returned \"rows\"")
    total = rows_total(rows) if rows else None
    if amount is not None and total is not None and amount != total:
        raise invalid("amount", f"differs from the rows' total {total}")
    # The request as the shop sent it stays beside the entry (numbers as written).
    raw = json.loads(request_body().decode("utf-8"), parse_float=str)
    return _outcome(_ledger().return_purchase(
        ref, source, amount if amount is not None else total or Decimal(0),
        key=ledger_key(key), rows=rows, comment=comment, actor=ACTOR,
        source_data={"request": raw}, fingerprint=fields.fingerprint("return")))


# -- card pages ------------------------------------------------------------------------------
@bp.post("/accounts/<crm>/<portal>/<contact_id>/card/rotate")
def rotate_card(crm: str, portal: str, contact_id: str) -> ResponseReturnValue:
    """A new card page link for the account: the old one answers 404 from now on, and
    write-back puts the new URL into the contact's card_url field."""
    ref = account_ref(crm, portal, contact_id)
    services: Services = current_app.extensions["loyalty"]
    try:
        link = services.cards.rotate(ref)
    except ConfigError:
        raise ApiError(403, "card_disabled", "set card.secret (or LOYALTY_CARD__SECRET) to "
                                             "enable card pages") from None
    return jsonify(link.as_json())
