"""GET /healthz: is the database reachable and migrated, and can each CRM be called."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from connector.errors import StorageError
from connector.services import Services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    services: Services = current_app.extensions["loyalty"]
    checks: dict[str, str] = {}
    try:
        services.db.check()
        checks["database"] = "ok"
    except StorageError as exc:
        return jsonify(status="unhealthy", checks={"database": str(exc)}), 503
    b24, amo = services.settings.bitrix24, services.settings.amocrm
    for crm, enabled, uses_oauth, store in (
            ("bitrix24", b24.enabled, b24.webhook_url is None, services.bitrix24_credentials),
            ("amocrm", amo.enabled, amo.long_lived_token is None, services.amocrm_credentials)):
        if not enabled:
            continue
        state = store.status()
        # Revoked credentials stop every call to that CRM until an admin re-authorizes.
        if state and state[0] == "revoked":
            checks[crm] = f"revoked: {state[1]}"
        elif uses_oauth and state is None:
            checks[crm] = "not authorized yet: install the app / open the authorization link"
        else:
            checks[crm] = "ok"
    healthy = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if healthy else "unhealthy", checks=checks), \
        200 if healthy else 503
