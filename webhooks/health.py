"""GET /healthz: is the database reachable and migrated, and can each CRM be called."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from connector.errors import DatabaseUnavailableError, StorageError
from connector.health import crm_statuses
from connector.services import Services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    services: Services = current_app.extensions["loyalty"]
    checks: dict[str, str] = {}
    try:
        services.db.check()
        checks["database"] = "ok"
    except DatabaseUnavailableError as exc:
        # Unauthenticated: the kind of failure only, never the database's address.
        cause = type(exc.__cause__ or exc).__name__
        return jsonify(status="unhealthy", checks={"database": f"database unreachable: "
                                                               f"{cause}"}), 503
    except StorageError as exc:
        return jsonify(status="unhealthy", checks={"database": str(exc)}), 503
    for status in crm_statuses(services):
        checks[status.crm] = "ok" if status.ok else status.detail
    healthy = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if healthy else "unhealthy", checks=checks), \
        200 if healthy else 503
