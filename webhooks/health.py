"""GET /healthz: is the database reachable and migrated, and can each CRM be called.

Anyone may ask (a load balancer or uptime probe sends no token) and gets the status alone:
200 {"status": "ok"} or 503 {"status": "unhealthy"}. The checks behind it (database error
texts, each CRM's credential state and why it failed) tell an outsider how the service is
set up, so they are shown only with `Authorization: Bearer <server.metrics_token or
server.admin_token>`, the tokens /metrics takes.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from connector.errors import DatabaseUnavailableError, StorageError
from connector.health import crm_statuses
from connector.services import Services
from webhooks.auth import configured, matches_any, presented

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    services: Services = current_app.extensions["loyalty"]
    checks: dict[str, str] = {}
    try:
        services.db.check()
        checks["database"] = "ok"
    except DatabaseUnavailableError as exc:
        # The kind of failure only, never the database's address, even to a token holder.
        checks["database"] = f"database unreachable: {type(exc.__cause__ or exc).__name__}"
    except StorageError as exc:
        checks["database"] = str(exc)
    else:
        for status in crm_statuses(services):
            checks[status.crm] = "ok" if status.ok else status.detail
    healthy = all(value == "ok" for value in checks.values())
    answer: dict[str, object] = {"status": "ok" if healthy else "unhealthy"}
    server = services.settings.server
    if matches_any(presented(), configured(server.metrics_token, server.admin_token)):
        answer["checks"] = checks
    return jsonify(answer), 200 if healthy else 503
