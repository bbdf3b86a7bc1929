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

    from webhooks import health

    app.register_blueprint(health.bp)
    return app
