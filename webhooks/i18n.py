"""The pages' language: the program's catalogue installed in this app's Jinja environment
(`_()` and `ngettext()` in templates) and its translator as `t` for numbers and dates."""

from __future__ import annotations

from flask import Flask

from connector.i18n import Translator

EXTENSION = "i18n"


def init_app(app: Flask, t: Translator) -> None:
    app.extensions[EXTENSION] = t
    app.jinja_env.add_extension("jinja2.ext.i18n")
    # New style: placeholders are named, filled and escaped by Jinja itself.
    app.jinja_env.install_gettext_translations(t.translations, newstyle=True)  # type: ignore[attr-defined]
    app.jinja_env.globals["t"] = t
