"""Control groups in the admin API, behind the same bearer token as the rest of /api/v1:
GET /api/v1/campaigns (every test with its recorded groups) and
GET /api/v1/campaigns/<name>/report (treated against control, as `campaigns report`)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from connector.campaigns.report import report, summaries
from connector.services import Services
from webhooks.api import require_admin_token

bp = Blueprint("campaigns_api", __name__, url_prefix="/api/v1")
bp.before_request(require_admin_token)


def _services() -> Services:
    return current_app.extensions["loyalty"]


@bp.get("/campaigns")
def campaigns() -> ResponseReturnValue:
    services = _services()
    with services.db.transaction(write=False) as session:
        rows = summaries(session, services.program, services.ledger.clock())
    return jsonify({"campaigns": rows})


@bp.get("/campaigns/<name>/report")
def campaign_report(name: str) -> ResponseReturnValue:
    """404 unknown_campaign when no campaign, trigger holdout or A/B test has the name."""
    services = _services()
    with services.db.transaction(write=False) as session:
        result = report(session, services.program, name, services.ledger.clock())
    return jsonify(result.as_json())
