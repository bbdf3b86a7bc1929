"""GET /api/v1/economics: the money view (connector.economics.money) as JSON, behind the same
bearer token as the rest of /api/v1.

The period is `days` (the last N days up to now, default 30) or `since` and `until` (dates,
local midnights in program.timezone, `until` not included), as `stats` takes them.
"""

from __future__ import annotations

from datetime import date, datetime

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from connector import periods
from connector.economics.money import money_view
from connector.services import Services
from webhooks.api import require_admin_token
from webhooks.errors import ApiError
from webhooks.validation import invalid, query_int

bp = Blueprint("economics_api", __name__, url_prefix="/api/v1")
bp.before_request(require_admin_token)
DEFAULT_DAYS = periods.DEFAULT_DAYS
MAX_DAYS = 3650
# Dates far enough from year 1 and 9999 that the previous period (churn) stays in range.
FIRST_YEAR, LAST_YEAR = 1900, 2999
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _date(field: str) -> date | None:
    raw = request.args.get(field)
    if raw is None:
        return None
    try:
        day = date.fromisoformat(raw) if len(raw) == 10 and raw.isascii() else None
    except ValueError:
        day = None
    if day is None or not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise invalid(field, f"must be a date YYYY-MM-DD, {FIRST_YEAR} to {LAST_YEAR}")
    return day


def period(services: Services, now: datetime) -> tuple[datetime, datetime]:
    days = query_int("days", minimum=1, maximum=MAX_DAYS)
    since, until = _date("since"), _date("until")
    zone = services.settings.program.zone
    if since is None and until is None:
        # As `stats --days N` and the dashboard read it (connector.periods).
        return periods.last_days(now, days or DEFAULT_DAYS, zone)
    if since is None or until is None or days is not None:
        raise ApiError(400, "invalid_request", "give days, or both since and until")
    if until <= since:
        raise invalid("until", "must be after since")
    return periods.between(since, until, zone)


@bp.get("/economics")
def economics() -> ResponseReturnValue:
    services: Services = current_app.extensions["loyalty"]
    now = services.ledger.clock()
    since, until = period(services, now)
    with services.db.transaction(write=False) as session:
        view = money_view(session, services.settings.program, since=since, until=until,
                          at=now)
    return jsonify(view.as_json())
