"""GET /metrics (Prometheus text format), and the hooks that count every request.

The endpoint needs `Authorization: Bearer <token>`: server.metrics_token, or the admin token.
With neither configured it answers 403: the numbers (points issued, inbox backlog, CRM
errors) are business data, and a proxy in front makes every caller look local, so "allow
from 127.0.0.1" would not be a safe default.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from connector.services import Services
from webhooks.auth import configured, require

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    services: Services = current_app.extensions["loyalty"]
    server = services.settings.server
    require(configured(server.metrics_token, server.admin_token),
            disabled=("metrics_disabled", "set server.metrics_token "
                                          "(or LOYALTY_SERVER__METRICS_TOKEN) to enable /metrics"),
            refused="send Authorization: Bearer <server.metrics_token>")
    return Response(services.metrics.exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _started() -> None:
    g.metrics_started = time.perf_counter()


def _answered(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None:
        services: Services = current_app.extensions["loyalty"]
        # The URL rule, not the path: /amocrm/webhooks/<secret> stays one series and keeps
        # its secret out of the labels.
        rule = request.url_rule.rule if request.url_rule is not None else None
        services.metrics.observe_request(rule, response.status_code,
                                         time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Serve /metrics and count every request the app answers."""
    services: Services = app.extensions["loyalty"]
    services.metrics  # noqa: B018 -- built now, before request threads race to build it
    app.before_request(_started)
    app.after_request(_answered)
    app.register_blueprint(bp)
