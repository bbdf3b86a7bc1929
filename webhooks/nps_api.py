"""NPS answers in the admin API (/api/v1/nps), behind the same bearer token as /api/v1.

POST records a 0-10 answer under an idempotency key (201; a repeat 200 with `duplicate`
true); a score that is not a whole number from 0 to 10 is a 400 `invalid_score`. GET reports
the NPS of a period.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from connector import periods
from connector.errors import InvalidScoreError
from connector.nps.answers import parse_score
from connector.nps.report import nps_report
from connector.services import Services
from webhooks.api import ledger_key, require_admin_token
from webhooks.rewards_api import MOMENT
from webhooks.validation import invalid, json_body, query_int

bp = Blueprint("nps_api", __name__, url_prefix="/api/v1")
bp.before_request(require_admin_token)
ACTOR = "api"
MAX_DAYS = 3660


def _services() -> Services:
    return current_app.extensions["loyalty"]


@bp.post("/nps")
def record() -> ResponseReturnValue:
    services = _services()
    fields = json_body()
    ref, key = fields.ref(), fields.idempotency_key(request.headers.get("Idempotency-Key"))
    score = fields.raw("score")
    if score is None:
        raise invalid("score", "required")
    # A JSON number only: "8" or 8.0 in a request is a client's mistake worth telling.
    if isinstance(score, bool) or not isinstance(score, int):
        raise InvalidScoreError("score: a whole number from 0 to 10 is needed (a JSON "
                                "integer)", score=repr(score)[:40])
    value = parse_score(score)
    fields.note("score", value)
    moment = fields.optional_text("occurred_at", max_length=32, pattern=MOMENT)
    fields.finish()
    occurred_at = None
    if moment is not None:
        try:
            parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            raise invalid("occurred_at", "not a date and time (e.g. 2026-03-01T12:00)") from None
        occurred_at = parsed if parsed.tzinfo else parsed.replace(
            tzinfo=services.settings.program.zone)
        if occurred_at > services.ledger.clock() + timedelta(minutes=5):
            raise invalid("occurred_at", "must not be in the future")
    recorded = services.nps.record(
        ref, value, source="api", source_key=ledger_key(key), occurred_at=occurred_at,
        raw={"crm": ref.crm, "portal": ref.portal, "contact_id": ref.contact_id,
             "score": value, "occurred_at": moment}, actor=ACTOR)
    return jsonify(recorded.as_json()), 200 if recorded.duplicate else 201


@bp.get("/nps")
def report() -> ResponseReturnValue:
    unknown = sorted(set(request.args) - {"days"})
    if unknown:
        raise invalid(unknown[0], "unknown query parameter")
    services = _services()
    days = query_int("days", minimum=1, maximum=MAX_DAYS) or \
        services.settings.program.nps.report_days
    program = services.settings.program
    # The last N days as every report reads them (connector.periods).
    since, until = periods.last_days(services.ledger.clock(), days, program.zone)
    with services.db.transaction(write=False) as session:
        figures = nps_report(session, [tier.name for tier in program.tiers], program.zone,
                             since=since, until=until)
    return jsonify(figures.as_json())
