"""The OpenAPI 3.1 description of /api/v1, served at GET /api/v1/openapi.json.

It is public: it holds no secret, and a POS integrator needs it before holding the token.
The limits come from webhooks.validation, so the description cannot drift from the checks.
Responses list their core fields and allow more, so a new field is not a breaking change.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from connector.codes.redeem import REASONS
from connector.money import MAX_AMOUNT
from webhooks.api import HISTORY_PAGE, HISTORY_PAGE_MAX, PROMO_CODE_MAX, REFERRAL_CODE_MAX
from webhooks.economics_api import DATE_PATTERN as ECONOMICS_DATE_PATTERN
from webhooks.economics_api import DEFAULT_DAYS as ECONOMICS_DEFAULT_DAYS
from webhooks.economics_api import MAX_DAYS as ECONOMICS_MAX_DAYS
from webhooks.product_rows import MAX_ROWS
from webhooks.validation import AMOUNT_TEXT, BONUS_NAME, COMMENT_MAX, CONTACT_MAX, CRM, TEXT_MAX

bp = Blueprint("openapi", __name__)
PATH = "/api/v1/openapi.json"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(max_length: int = TEXT_MAX, *, nullable: bool = False, **extra: Any) -> Schema:
    """A text field (null, where allowed, counts as absent). Beyond what a schema can say,
    the server also refuses blank text, NUL and unpaired surrogates."""
    return {"type": ["string", "null"] if nullable else "string", "minLength": 1,
            "maxLength": max_length, **extra}


def _flag(name: str, description: str) -> Schema:
    """An optional yes/no query parameter, as the server reads one."""
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string",
                       "pattern": "^([01]|[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"}}


def _amount(description: str, *, signed: bool = False, nullable: bool = False) -> Schema:
    limit = int(MAX_AMOUNT)
    number: Schema = {"type": "number", "maximum": limit}
    text: Schema = {"type": "string", "pattern": AMOUNT_TEXT.pattern}
    if signed:
        number.update(minimum=-limit, **{"not": {"const": 0}})
    else:
        number["exclusiveMinimum"] = 0
        text["pattern"] = AMOUNT_TEXT.pattern.replace("-?", "")
    sign = "not zero" if signed else "positive"
    return {
        "description": f"{description}: {sign}, at most two decimal places and at most "
                       f"{limit}; a JSON number or a string of digits such as \"10.50\". "
                       "Never read as a float.",
        "anyOf": [text, number, *([{"type": "null"}] if nullable else [])],
    }


ACCOUNT_FIELDS: Schema = {
    "crm": _text(16, pattern=CRM.pattern),
    "portal": _text(),
    "contact_id": _text(CONTACT_MAX),
}
KEY = _text(description="idempotency key; or the Idempotency-Key header (both: equal)",
            nullable=True)
COMMENT = _text(COMMENT_MAX, nullable=True)
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
DECIMAL_STRING: Schema = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$"}
NULLABLE_DECIMAL: Schema = {**DECIMAL_STRING, "type": ["string", "null"]}
REFERRAL_CODE = _text(REFERRAL_CODE_MAX, nullable=True, description=(
    "the code of the customer who referred this one, in any case; linked before the "
    "purchase (the first purchase pays the referral). A code that cannot link is no error: "
    "`referral.outcome` in the answer says why"))
PROMO_CODE = _text(PROMO_CODE_MAX, nullable=True, description=(
    "a promo code from a [[program.promo]] campaign, in any case, with or without dashes. "
    "A code that cannot be used is no error: `promo.outcome` in the answer says why"))
PROMO: Schema = {"type": "object", "required": ["outcome", "code"], "properties": {
    "outcome": {"type": "string", "enum": ["applied", "valid", *REASONS]},
    "code": {"type": "string"},
    "campaign": NULLABLE_STRING,
    "points": {**DECIMAL_STRING, "description": "points the code adds (preview: would add) "
                                                "on top of the purchase's cashback"},
    "detail": {"type": "string"},
}}
LINK: Schema = {"type": "object", "required": ["outcome", "code"], "properties": {
    "outcome": {"type": "string", "enum": [
        "linked", "already", "valid", "invalid", "unknown", "self", "cycle", "purchased",
        "taken"]},
    "code": {"type": "string"},
    "detail": {"type": "string"},
    "newcomer_bonus": DECIMAL_STRING,
}}

def _rows() -> Schema:
    """A purchase's product rows, for the product rules (program.product_rules)."""
    identifier: Schema = {"anyOf": [_text(64), {"type": "integer", "minimum": 0}]}

    def money(description: str) -> Schema:  # as _amount, but 0 is a price too
        return {"description": f"{description}: 0 or more, at most two decimal places",
                "anyOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,2})?$"},
                          {"type": "number", "minimum": 0, "maximum": int(MAX_AMOUNT)}]}
    return {"type": ["array", "null"], "minItems": 1, "maxItems": MAX_ROWS,
            "description": "the purchase's rows; each earns by the product rules, the "
                           "amount defaults to their total",
            "items": {"type": "object", "required": ["product_id", "price", "quantity"],
                      "additionalProperties": False, "properties": {
                "product_id": identifier,
                "price": money("price of one unit after its discount"),
                "quantity": {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                                       {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,4})?$"}]},
                "section": {**identifier, "description": "catalog section / category id"},
                "discount": {**money("discount on one unit"),
                             "anyOf": [*money("")["anyOf"], {"type": "null"}]},
                "properties": {"type": ["object", "null"],
                               "additionalProperties": {"anyOf": [
                                   {"type": "string"}, {"type": "integer"},
                                   {"type": "array", "items": {"type": "string"}}]}},
                "name": _text(nullable=True),
            }}}


def _body(properties: Schema, required: list[str]) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": properties, "required": required,
        "additionalProperties": False}}}}


def _error(description: str) -> Schema:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


READ_ERRORS = {
    "400": _error("a path or query parameter is invalid; `detail` names it"),
    "401": _error("no or wrong bearer token"),
    "403": _error("the API is disabled: server.admin_token is not set"),
    "404": _error("no such account or card"),
}
BODY_ERRORS = {
    **READ_ERRORS,
    "400": _error("the body is not a JSON object, or a field is invalid; `detail` names it"),
    "413": _error("the body exceeds server.max_body_bytes"),
    "415": _error("the body is not application/json"),
}
CHANGE_ERRORS = {
    **BODY_ERRORS,
    "404": _error("no account for that contact"),
    "409": _error("the idempotency key was used for another request (another operation, "
                  "account or parameters), too few points, nothing to reverse, or a return "
                  "larger than what is left of its purchase"),
    "422": _error("refused by the program's rules, e.g. the redemption cap; the body "
                  "says what would succeed"),
}
ACCOUNT_PARAMETERS = [
    {"name": "crm", "in": "path", "required": True, "schema": _text(16, pattern=CRM.pattern)},
    {"name": "portal", "in": "path", "required": True,
     "schema": _text(pattern="^[^/]+$")},
    {"name": "contact_id", "in": "path", "required": True,
     "schema": _text(CONTACT_MAX, pattern="^[^/]+$")},
]
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key", "in": "header", "required": False, "schema": _text(),
    "description": "the change's idempotency key, instead of (or equal to) the body's `key`"}


def _change(summary: str, properties: Schema, required: list[str]) -> Schema:
    return {"post": {
        "summary": summary,
        "parameters": [IDEMPOTENCY_HEADER],
        "requestBody": _body({**ACCOUNT_FIELDS, **properties, "key": KEY},
                             ["crm", "portal", "contact_id", *required]),
        "responses": {
            "201": _ok("done: the new entry", _ref("Result")),
            "200": _ok("a repeat of an earlier request with the same key: its entry, "
                       "`duplicate` true; or nothing to do (`entry_id` null)", _ref("Result")),
            **CHANGE_ERRORS,
        },
    }}


REWARD_ID = {"name": "reward_id", "in": "path", "required": True,
             "schema": _text(48, pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$")}
CLAIM_CODE = {"name": "code", "in": "path", "required": True,
              "schema": _text(32, pattern=r"^[A-Za-z0-9 -]{1,32}$")}
MOMENT = _text(32, nullable=True, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
               r"(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})?$",
               description="ISO 8601; without an offset: program.timezone")
REWARD_FIELDS: Schema = {
    "name": _text(128, nullable=True),
    "cost": _amount("points the reward costs", nullable=True),
    "stock": {"type": ["integer", "null"], "minimum": 0, "maximum": 1_000_000_000},
    "per_customer": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000_000},
    "tier": _text(64, nullable=True, description="the least tier that may claim it"),
    "starts": MOMENT,
    "ends": MOMENT,
}
REWARD_ERRORS = {
    **BODY_ERRORS,
    "404": _error("no such reward"),
    "409": _error("`reward_refused`: the id exists already, or the reward is defined in "
                  "the configuration (change it there)"),
}
CLAIM_ERRORS = {
    **READ_ERRORS,
    "404": _error("no claim with that code"),
    "409": _error("`reward_refused`: cancelled claims cannot be handed over, handed ones "
                  "not cancelled"),
}


NPS_TALLY: Schema = {
    "type": "object", "required": ["nps", "answers", "promoters", "passives", "detractors"],
    "properties": {"nps": {"type": ["string", "null"],
                           "description": "% promoters - % detractors, one decimal"},
                   "answers": {"type": "integer"}, "promoters": {"type": "integer"},
                   "passives": {"type": "integer"}, "detractors": {"type": "integer"}}}


def _nps_paths() -> Schema:
    answer = {"type": "object", "required": ["answer_id", "score", "duplicate"],
              "properties": {"answer_id": {"type": "integer"},
                             "score": {"type": "integer", "minimum": 0, "maximum": 10},
                             "duplicate": {"type": "boolean"},
                             "bonus_points": {"type": "string"}}}
    return {"/api/v1/nps": {
        "post": {
            "summary": "Record a 0-10 \"how likely are you to recommend us\" answer; the "
                       "bonus for answering ([program.nps]) at most once per period",
            "parameters": [IDEMPOTENCY_HEADER],
            "requestBody": _body({**ACCOUNT_FIELDS, "key": KEY,
                                  "score": {"type": "integer", "minimum": 0, "maximum": 10},
                                  "occurred_at": MOMENT},
                                 ["crm", "portal", "contact_id", "score"]),
            "responses": {
                "201": _ok("recorded", answer),
                "200": _ok("a repeat of an earlier answer with the same key", answer),
                **BODY_ERRORS,
                "409": _error("the key was used for another answer"),
            },
        },
        "get": {
            "summary": "NPS of the last N days: overall, by tier, by RFM segment, by month",
            "parameters": [{"name": "days", "in": "query", "required": False,
                            "schema": {"type": "string", "pattern": "^[0-9]{1,4}$"},
                            "description": "1..3660; default program.nps.report_days"}],
            "responses": {"200": _ok("the report", {**NPS_TALLY, "required": ["nps"]}),
                          **READ_ERRORS},
        }}}


def _reward_paths() -> Schema:
    claim_body = _body({**ACCOUNT_FIELDS, "key": KEY}, ["crm", "portal", "contact_id"])
    return {
        "/api/v1/rewards": {
            "get": {
                "summary": "The rewards catalogue",
                "parameters": [_flag("all", "1 or true: disabled rewards too")],
                "responses": {"200": _ok("the rewards", {
                    "type": "object", "required": ["rewards"],
                    "properties": {"rewards": {"type": "array", "items": _ref("Reward")}}}),
                    **READ_ERRORS},
            },
            "post": {
                "summary": "Add a reward to the catalogue",
                "requestBody": _body({
                    **REWARD_FIELDS, "id": REWARD_ID["schema"], "name": _text(128),
                    "cost": _amount("points the reward costs")}, ["id", "name", "cost"]),
                "responses": {"201": _ok("the new reward", _ref("Reward")), **REWARD_ERRORS},
            },
        },
        "/api/v1/rewards/{reward_id}": {"patch": {
            "summary": "Change a reward made through the API: absent fields stay; null clears "
                       "stock, per_customer, tier, starts or ends",
            "parameters": [REWARD_ID],
            "requestBody": _body({**REWARD_FIELDS, "active": {"type": ["boolean", "null"]}},
                                 []),
            "responses": {"200": _ok("the reward", _ref("Reward")), **REWARD_ERRORS},
        }},
        "/api/v1/rewards/{reward_id}/disable": {"post": {
            "summary": "Stop offering a reward made through the API; claims stand",
            "parameters": [REWARD_ID],
            "responses": {"200": _ok("the reward", _ref("Reward")), **REWARD_ERRORS},
        }},
        "/api/v1/rewards/{reward_id}/claim": {"post": {
            "summary": "Claim a reward for a customer: points paid, a claim code issued, "
                       "staff told in the CRM",
            "parameters": [REWARD_ID, IDEMPOTENCY_HEADER],
            "requestBody": claim_body,
            "responses": {
                "201": _ok("claimed", _ref("Claimed")),
                "200": _ok("a repeat of an earlier claim with the same key", _ref("Claimed")),
                **CHANGE_ERRORS,
                "404": _error("no such reward, or no account for that contact"),
                "409": _error("`reward_refused` with `reason`: points, stock, limit, tier, "
                              "window, disabled; or the key was used for another request"),
            },
        }},
        "/api/v1/claims": {"get": {
            "summary": "Reward claims, newest first",
            "parameters": [_flag("open", "1 or true: only those still to hand over")],
            "responses": {"200": _ok("the claims", {
                "type": "object", "required": ["claims"],
                "properties": {"claims": {"type": "array", "items": _ref("Claim")}}}),
                **READ_ERRORS},
        }},
        "/api/v1/claims/{code}/handed": {"post": {
            "summary": "The reward was handed over",
            "parameters": [CLAIM_CODE],
            "responses": {"200": _ok("the claim", _ref("Claim")), **CLAIM_ERRORS},
        }},
        "/api/v1/claims/{code}/cancel": {"post": {
            "summary": "Cancel a claim: points back with their expiry, the unit to the stock",
            "parameters": [CLAIM_CODE],
            "responses": {"200": _ok("the claim", _ref("Claim")), **CLAIM_ERRORS},
        }},
    }


def _campaign_paths() -> Schema:
    name = {"name": "name", "in": "path", "required": True,
            "schema": _text(128, pattern="^[^/]+$"),
            "description": "a campaign with a holdout, a trigger (e.g. loyalty_birthday) or "
                           "the A/B test"}
    return {
        "/api/v1/campaigns": {"get": {
            "summary": "Campaigns, trigger mailings and the A/B test with a control group",
            "responses": {"200": _ok("the tests", {
                "type": "object", "required": ["campaigns"],
                "properties": {"campaigns": {"type": "array",
                                             "items": _ref("CampaignSummary")}}}),
                **{k: v for k, v in READ_ERRORS.items() if k != "404"}},
        }},
        "/api/v1/campaigns/{name}/report": {"get": {
            "summary": "Treated against control: purchase rate, average check, revenue per "
                       "customer with 95% intervals, cost, incremental revenue, ROI",
            "parameters": [name],
            "responses": {"200": _ok("the report", _ref("CampaignReport")),
                          **READ_ERRORS,
                          "404": _error("no campaign, trigger holdout or A/B test of that "
                                        "name")},
        }},
    }


def _campaign_schemas(timestamp: Schema) -> Schema:
    nullable_time = {**timestamp, "type": ["string", "null"]}
    # Shares and rates to four places, money to two, the control share as configured.
    number: Schema = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
    rate: Schema = {**number, "type": ["string", "null"]}
    interval = {"type": ["object", "null"], "required": ["difference", "low", "high"],
                "properties": {"difference": number, "low": number,
                               "high": number, "p_value": rate}}
    group = {"type": "object", "required": ["customers", "buyers", "purchases", "revenue"],
             "properties": {"customers": {"type": "integer", "minimum": 0},
                            "buyers": {"type": "integer", "minimum": 0},
                            "purchases": {"type": "integer"},
                            "revenue": number, "purchase_rate": rate,
                            "average_check": rate, "revenue_per_customer": rate}}
    kind = {"type": "string", "enum": ["campaign", "trigger", "ab_test"]}
    return {
        "CampaignSummary": {"type": "object", "required": [
            "name", "kind", "control_share", "finished", "treated", "control"], "properties": {
            "name": {"type": "string"}, "kind": kind, "control_share": number,
            "starts": nullable_time, "ends": nullable_time,
            "days": {"type": ["integer", "null"]}, "finished": {"type": "boolean"},
            "treated": {"type": "integer", "minimum": 0},
            "control": {"type": "integer", "minimum": 0}}},
        "CampaignReport": {"type": "object", "required": [
            "name", "kind", "groups", "difference", "cost", "incremental_revenue", "roi"],
            "properties": {
            "name": {"type": "string"}, "kind": kind, "control_share": number,
            "starts": nullable_time, "ends": nullable_time,
            "days": {"type": ["integer", "null"]}, "finished": {"type": "boolean"},
            "groups": {"type": "object", "required": ["treated", "control"],
                       "properties": {"treated": group, "control": group}},
            "recorded": {"type": "object"},
            "difference": {"type": "object", "properties": {
                "purchase_rate": interval, "average_check": interval,
                "revenue_per_customer": interval, "confidence_level": number}},
            "cost_points": rate, "cost": number,
            "incremental_revenue": {**rate, "description":
                                    "(treated − control revenue per customer) × treated "
                                    "customers; null without a control group"},
            "roi": {**rate, "description": "(incremental revenue − cost) / cost; "
                                                       "null without a control group or cost"},
        }},
    }


def _reward_schemas(timestamp: Schema) -> Schema:
    nullable_time = {**timestamp, "type": ["string", "null"]}
    nullable_int = {"type": ["integer", "null"]}
    claim = {"type": "object", "required": ["id", "code", "reward", "points", "status",
                                            "account", "created_at"], "properties": {
        "id": {"type": "integer"}, "code": {"type": "string"}, "reward": {"type": "string"},
        "reward_name": {"type": "string"}, "points": DECIMAL_STRING,
        "status": {"type": "string", "enum": ["issued", "handed", "cancelled"]},
        "account": _ref("AccountRef"), "via": {"type": "string"}, "created_at": timestamp,
        "handed_at": nullable_time, "cancelled_at": nullable_time}}
    return {
        "Reward": {"type": "object", "required": ["id", "name", "cost", "active", "origin"],
                   "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "cost": DECIMAL_STRING,
            "stock": nullable_int, "stock_left": nullable_int, "per_customer": nullable_int,
            "tier": NULLABLE_STRING, "starts_at": nullable_time, "ends_at": nullable_time,
            "active": {"type": "boolean"},
            "origin": {"type": "string", "enum": ["config", "api"]}}},
        "Claim": claim,
        "Claimed": {"type": "object", "required": ["kind", "entry_id", "points", "balance",
                                                   "duplicate", "claim"], "properties": {
            "kind": {"type": "string"}, "account_id": {"type": "integer"},
            "entry_id": {"type": "integer"}, "points": DECIMAL_STRING,
            "balance": DECIMAL_STRING, "duplicate": {"type": "boolean"},
            "shortfall": DECIMAL_STRING, "details": {"type": "object"},
            "claim": _ref("Claim")}},
    }


# -- the money view (connector.economics.money) ---------------------------------------------
def _economics_paths() -> Schema:
    day = {"type": "string", "pattern": ECONOMICS_DATE_PATTERN}
    return {"/api/v1/economics": {"get": {
        "summary": "The money view: liability, breakage, program cost, members' revenue, "
                   "churn, LTV per tier and RFM segment (README, Money view)",
        "parameters": [
            {"name": "days", "in": "query", "required": False,
             "description": f"the last N days up to now (default {ECONOMICS_DEFAULT_DAYS})",
             "schema": {"type": "integer", "minimum": 1, "maximum": ECONOMICS_MAX_DAYS}},
            {"name": "since", "in": "query", "required": False,
             "description": "first day (program.timezone), with `until` instead of `days`",
             "schema": day},
            {"name": "until", "in": "query", "required": False,
             "description": "first day not included", "schema": day}],
        "responses": {"200": _ok("the money view", _ref("MoneyView")),
                      **{code: error for code, error in READ_ERRORS.items()
                         if code != "404"}},
    }}}


def _economics_schemas(timestamp: Schema) -> Schema:
    rate = {"type": ["string", "null"], "pattern": r"^[0-9]+\.[0-9]{4}$"}
    ltv = {"type": "array", "items": {"type": "object",
                                      "required": ["group", "customers", "revenue", "ltv"],
                                      "properties": {
        "group": NULLABLE_STRING, "customers": {"type": "integer"},
        "revenue": DECIMAL_STRING, "ltv": NULLABLE_DECIMAL}}}
    money = ("outstanding_points", "liability", "expiring_30_points", "expiring_30",
             "expiring_90_points", "expiring_90", "issued_points", "issued_expired_points",
             "redeemed_points", "redeemed_cost", "reward_points", "reward_cost", "cost",
             "revenue")
    properties: Schema = {
        "since": timestamp, "until": timestamp, "at": timestamp,
        "currency": {"type": "string"},
        "point_value": {"type": "string", "description": "currency units one point pays for"},
        **{name: DECIMAL_STRING for name in money},
        "tier_discounts": {**NULLABLE_DECIMAL, "description": "null: not known (the "
                           "discounts are given by the CRM or the till, not the ledger)"},
        "breakage": rate, "cost_share": rate, "churn": rate,
        "previously_active": {"type": "integer"}, "churned": {"type": "integer"},
        "ltv_tiers": ltv, "ltv_segments": ltv,
        "incremental_revenue": {**NULLABLE_DECIMAL, "description": (
            "what the campaigns with a holdout group that ended in the period brought beyond "
            "their control groups; null when none did")},
        "roi": {"type": ["string", "null"], "pattern": r"^-?[0-9]+\.[0-9]{4}$",
                "description": "(incremental revenue − cost) / cost; null without "
                               "incremental revenue or cost"},
    }
    return {"MoneyView": {"type": "object", "required": list(properties),
                          "properties": properties}}


def spec() -> Schema:
    """The description as a JSON-ready dict."""
    timestamp = {"type": "string", "format": "date-time"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "loyalty-connector admin API",
            "version": "1",
            "description": "Balances, cards, purchase previews and balance changes. Every "
                           "change takes an idempotency key: the first call answers 201, a "
                           "repeat 200 with the same entry and `duplicate` true. Amounts are "
                           "exact decimals, written as strings.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/accounts/{crm}/{portal}/{contact_id}": {"get": {
                "summary": "An account: balance, tier, spend, next expiry",
                "parameters": [*ACCOUNT_PARAMETERS,
                               _flag("history", "1 or true: add the latest entries")],
                "responses": {"200": _ok("the account", _ref("Account")), **READ_ERRORS},
            }},
            "/api/v1/accounts/{crm}/{portal}/{contact_id}/history": {"get": {
                "summary": "An account's entries, newest first, paged backwards",
                "parameters": [
                    *ACCOUNT_PARAMETERS,
                    {"name": "limit", "in": "query", "required": False,
                     "description": f"entries per page (default {HISTORY_PAGE})",
                     "schema": {"type": "integer", "minimum": 1,
                                "maximum": HISTORY_PAGE_MAX}},
                    {"name": "before", "in": "query", "required": False,
                     "description": "only entries older than this entry id (`next_before`)",
                     "schema": {"type": "integer", "minimum": 1,
                                "maximum": 999_999_999_999_999_999}}],
                "responses": {"200": _ok("a page of entries", {
                    "type": "object", "required": ["entries", "next_before"],
                    "properties": {"entries": {"type": "array", "items": _ref("Entry")},
                                   "next_before": {"type": ["integer", "null"]}}}),
                    **READ_ERRORS},
            }},
            "/api/v1/cards/{card_number}": {"get": {
                "summary": "The account behind a loyalty card",
                "parameters": [{"name": "card_number", "in": "path", "required": True,
                                "schema": _text(32, pattern="^[^/]+$")}],
                "responses": {"200": _ok("the account", _ref("Account")), **READ_ERRORS},
            }},
            "/api/v1/accounts/{crm}/{portal}/{contact_id}/card/rotate": {"post": {
                "summary": "A new card page link for the account; the old one stops working",
                "parameters": ACCOUNT_PARAMETERS,
                "responses": {
                    "200": _ok("the new link; write-back puts it into the contact's "
                               "card_url field", _ref("CardLink")),
                    **READ_ERRORS,
                    "403": _error("the API is disabled (server.admin_token is not set), or "
                                  "card pages are (card.secret is not set)"),
                    "404": _error("no account for that contact"),
                },
            }},
            "/api/v1/preview": {"post": {
                "summary": "What a purchase would earn and how much of it may be paid with "
                           "points; writes nothing",
                "requestBody": _body({
                    **{name: {**schema, "type": ["string", "null"]}
                       for name, schema in ACCOUNT_FIELDS.items()},
                    "amount": _amount("the purchase amount (with rows: default their total)",
                                      nullable=True),
                    "rows": _rows(),
                    "category": _text(nullable=True),
                    "referral_code": REFERRAL_CODE,
                    "promo_code": PROMO_CODE,
                }, []),
                "responses": {"200": _ok("the preview", _ref("Preview")), **BODY_ERRORS},
            }},
            "/api/v1/accrue": _change("Points for a purchase", {
                "amount": _amount("the purchase amount"),
                "source": _text(nullable=True, description="the purchase, for /reverse; "
                                                           "default: the key"),
                "category": _text(nullable=True),
                "comment": COMMENT,
                "referral_code": REFERRAL_CODE,
                "promo_code": PROMO_CODE,
            }, ["amount"]),
            "/api/v1/redeem": _change("Pay part of a purchase with points", {
                "points": _amount("points to redeem"),
                "purchase_amount": _amount("the purchase, for the program's cap",
                                           nullable=True),
                "rows": _rows(),
                "partial": {"type": ["boolean", "null"],
                            "description": "redeem what the balance and the cap allow"},
                "source": _text(nullable=True),
                "comment": COMMENT,
            }, ["points"]),
            "/api/v1/adjust": _change("Add (positive) or remove (negative) points by hand", {
                "points": _amount("points to add or (negative) remove", signed=True),
                "reason": _text(COMMENT_MAX),
            }, ["points", "reason"]),
            "/api/v1/bonus": _change("Grant a named bonus", {
                "name": _text(64, pattern=BONUS_NAME.pattern),
                "points": _amount("points instead of the configured amount", nullable=True),
                "comment": COMMENT,
            }, ["name"]),
            "/api/v1/reverse": _change("Undo what a purchase earned or spent", {
                "source": _text(description="the purchase's source (or its accrual key)"),
                "comment": COMMENT,
            }, ["source"]),
            "/api/v1/return": _change("Give back part or all of a purchase: points taken "
                                      "back, and points that paid for it given back, in "
                                      "proportion", {
                "source": _text(description="the purchase's source (or its accrual key)"),
                "amount": _amount("the amount returned; default: the rows' total",
                                  nullable=True),
                "rows": {**_rows(), "description": "the returned products; with `amount`, "
                                                   "they must add up to it"},
                "comment": COMMENT,
            }, ["source"]),
            **_reward_paths(),
            **_economics_paths(),
            **_campaign_paths(),
            **_nps_paths(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "server.admin_token"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "detail": {"type": "string"}}},
                "AccountRef": {"type": "object", "required": ["crm", "portal", "contact_id"],
                               "properties": {name: {"type": "string"}
                                              for name in ACCOUNT_FIELDS}},
                "Account": {"type": "object", "required": [
                    "id", "ref", "card_number", "balance", "available", "pending", "tier",
                    "discount_percent", "qualifying_spend", "next_expiry_points",
                    "purchase_count", "purchase_total", "created_at"], "properties": {
                    "id": {"type": "integer"},
                    "ref": _ref("AccountRef"),
                    "card_number": NULLABLE_STRING,
                    "balance": DECIMAL_STRING,
                    "available": DECIMAL_STRING,
                    "pending": DECIMAL_STRING,
                    "tier": {"type": "string"},
                    "discount_percent": {"type": "string"},
                    "qualifying_spend": DECIMAL_STRING,
                    "next_tier": NULLABLE_STRING,
                    "spend_to_next_tier": NULLABLE_DECIMAL,
                    "next_expiry_points": DECIMAL_STRING,
                    "next_expiry_at": {**timestamp, "type": ["string", "null"]},
                    "purchase_count": {"type": "integer", "minimum": 0},
                    "purchase_total": DECIMAL_STRING,
                    "first_purchase_at": {**timestamp, "type": ["string", "null"]},
                    "last_purchase_at": {**timestamp, "type": ["string", "null"]},
                    "birthday": {"type": ["string", "null"], "format": "date"},
                    "created_at": timestamp,
                    "referral_code": NULLABLE_STRING,
                    "referred_by": {**NULLABLE_STRING,
                                    "description": "the referrer's referral code; for an "
                                                   "erased referrer its anonymous id "
                                                   "(erased-<hex>)"},
                    "referrals": {"type": "object", "required": [
                        "invited", "converted", "points_paid"], "properties": {
                        "invited": {"type": "integer", "minimum": 0},
                        "converted": {"type": "integer", "minimum": 0},
                        "points_paid": DECIMAL_STRING}},
                    "history": {"type": "array", "items": _ref("Entry")},
                }},
                "Entry": {"type": "object", "required": [
                    "id", "kind", "points", "balance_after", "key", "occurred_at"],
                    "properties": {
                    "id": {"type": "integer"},
                    "kind": {"type": "string"},
                    "points": DECIMAL_STRING,
                    "balance_after": DECIMAL_STRING,
                    "key": {"type": "string"},
                    "source": NULLABLE_STRING,
                    "purchase_amount": NULLABLE_DECIMAL,
                    "comment": NULLABLE_STRING,
                    "actor": NULLABLE_STRING,
                    "details": {"type": ["object", "null"]},
                    "occurred_at": timestamp,
                }},
                "Result": {"type": "object", "required": [
                    "kind", "account_id", "entry_id", "points", "balance", "duplicate"],
                    "properties": {
                    "kind": {"type": "string"},
                    "account_id": {"type": "integer"},
                    "entry_id": {"type": ["integer", "null"]},
                    "points": DECIMAL_STRING,
                    "balance": DECIMAL_STRING,
                    "duplicate": {"type": "boolean"},
                    "shortfall": DECIMAL_STRING,
                    "details": {"type": "object"},
                    "referral": LINK,
                    "promo": PROMO,
                }},
                "CardLink": {"type": "object", "required": ["url", "rotations", "issued_at"],
                             "properties": {
                    "url": {"type": "string", "format": "uri"},
                    "rotations": {"type": "integer", "minimum": 0},
                    "issued_at": timestamp,
                }},
                "Preview": {"type": "object", "required": [
                    "purchase_amount", "tier", "points_earned", "max_redeem_points",
                    "max_redeem_amount"], "properties": {
                    "purchase_amount": DECIMAL_STRING,
                    "tier": {"type": "string"},
                    "discount_percent": {"type": "string"},
                    "points_earned": DECIMAL_STRING,
                    "max_redeem_points": DECIMAL_STRING,
                    "max_redeem_amount": DECIMAL_STRING,
                    "campaigns": {"type": "array", "items": {"type": "string"}},
                    "eligible_amount": {**NULLABLE_DECIMAL, "description":
                                        "what the rows that earn points come to"},
                    "referral": LINK,
                    "promo": PROMO,
                }},
                **_reward_schemas(timestamp),
                **_economics_schemas(timestamp),
                **_campaign_schemas(timestamp),
            },
        },
    }


@bp.get(PATH)
def openapi() -> ResponseReturnValue:
    return jsonify(spec())
