"""GET /healthz: is the database reachable and migrated."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from connector.errors import StorageError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    services = current_app.extensions["loyalty"]
    try:
        services.db.check()
    except StorageError as exc:
        return jsonify(status="unhealthy", checks={"database": str(exc)}), 503
    return jsonify(status="ok", checks={"database": "ok"})
