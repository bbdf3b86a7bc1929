"""The web tier: `create_app(settings)` builds the Flask application."""

from __future__ import annotations

from flask import Flask

from connector.config import Settings, load_settings
from connector.services import Services


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or (services.settings if services else load_settings())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.extensions["loyalty"] = services or Services.build(settings)

    from webhooks import amocrm, api, bitrix24, errors, health
    from webhooks.validation import JSONProvider

    app.json = JSONProvider(app)
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(bitrix24.bp)
    app.register_blueprint(amocrm.bp)
    return app
