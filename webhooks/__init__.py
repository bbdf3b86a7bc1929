"""The web tier: `create_app(settings)` builds the Flask application."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, g, request

from connector import logs
from connector.config import Settings, load_settings
from connector.i18n import translator
from connector.services import Services


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or (services.settings if services else load_settings())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.extensions["loyalty"] = services or Services.build(settings)

    from webhooks import (
        amocrm,
        api,
        bitrix24,
        bitrix24_actions,
        bitrix24_tab,
        campaigns_api,
        campaigns_page,
        dashboard,
        economics_api,
        errors,
        health,
        metrics,
        money_dashboard,
        nps_api,
        nps_dashboard,
        openapi,
        rewards_api,
    )
    from webhooks.card import init_app as init_card_page
    from webhooks.i18n import init_app as init_language
    from webhooks.validation import JSONProvider

    app.json = JSONProvider(app)
    init_language(app, translator(settings.program.language))
    errors.init_app(app)
    _request_ids(app, logs.request_ids())
    metrics.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(rewards_api.bp)
    app.register_blueprint(economics_api.bp)
    app.register_blueprint(campaigns_api.bp)
    app.register_blueprint(nps_api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(money_dashboard.bp)
    app.register_blueprint(campaigns_page.bp)
    app.register_blueprint(nps_dashboard.bp)
    app.register_blueprint(bitrix24.bp)
    app.register_blueprint(bitrix24_actions.bp)
    app.register_blueprint(bitrix24_tab.bp)
    app.register_blueprint(amocrm.bp)
    init_card_page(app, app.extensions["loyalty"])
    return app


def _request_ids(app: Flask, fresh: Callable[[], str]) -> None:
    """Every request gets an id (the caller's X-Request-Id when sane), echoed in the answer
    and carried by every log record written while it is served."""

    @app.before_request
    def bind_request_id() -> None:
        g.request_id = logs.request_id(request.headers.get("X-Request-Id"), fresh)
        g.request_log_context = logs.bind(request_id=g.request_id)

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers["X-Request-Id"] = g.request_id
        return response

    @app.teardown_request
    def unbind_request_id(_error: BaseException | None) -> None:
        token = g.pop("request_log_context", None)
        if token is not None:
            logs.unbind(token)
