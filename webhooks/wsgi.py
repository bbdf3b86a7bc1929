"""The WSGI entry for a production server: `gunicorn 'webhooks.wsgi:app()'`.

It builds the same application `web` serves, from the same settings (`$LOYALTY_CONFIG`, else
./config.toml, and LOYALTY_* variables), with the same logging, and refuses to serve a
database that is missing or not migrated to head (run `loyalty-connector db upgrade` first,
as on every upgrade). It never starts the inbox worker or the scheduler: those run as
`loyalty-connector worker` and `loyalty-connector scheduler`, so however many gunicorn
workers there are, no job runs in them.
"""

from __future__ import annotations

import sys

from flask import Flask

from connector.cli.service import service_logging
from connector.config import load_settings
from connector.errors import ConfigError, StorageError
from connector.i18n import translator
from connector.services import Services
from webhooks import create_app


def app() -> Flask:
    """A ready application, or the reason it cannot be (one line each, then an error that
    makes gunicorn stop instead of restarting workers that cannot boot)."""
    service_logging()
    try:
        settings = load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        raise
    services = Services.build(settings)
    try:
        missing = services.db.missing_file()
        if missing is not None:
            # Read by whoever starts the server: the program's language, like the CLI's refusal.
            t = translator(settings.program.language)
            raise StorageError(t._("no database at %(path)s: run %(command)s", path=str(missing),
                                   command="`loyalty-connector db upgrade`"))
        services.db.check()
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        services.close()
        raise
    # The check's connection is not handed on to forked workers (gunicorn --preload).
    services.db.dispose()
    return create_app(services=services)
