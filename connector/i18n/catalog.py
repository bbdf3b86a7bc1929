"""Keeping the catalogues: extract the marked strings from the code and templates, merge them
into each language's messages.po, compile the .mo files the program reads.

Both .po and .mo files are committed, so `pip install -e .` and a wheel work without a build
step; tests/test_i18n.py fails when a marked string is missing from a catalogue, a Russian or
Ukrainian one is untranslated, or a .mo is older than its .po.
"""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po, write_po

from connector.i18n import DOMAIN, LANGUAGES, LOCALE_DIR

ROOT = LOCALE_DIR.parent.parent  # the project: connector/, webhooks/ and their templates
SOURCES = ("connector", "webhooks")
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2)}
TEMPLATE = LOCALE_DIR / f"{DOMAIN}.pot"
STAMP = datetime(2026, 1, 1, tzinfo=UTC)
HEADER = ("# What loyalty-connector's owners and customers read. Source strings: English.\n"
          "# Update with: python -m connector.i18n update (README, Language).")


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def extract() -> Catalog:
    """Every marked string of the code and templates (locations left out: a catalogue then
    changes only when the strings do)."""
    catalog = Catalog(project="loyalty-connector", charset="utf-8")
    for source in SOURCES:
        for _file, _line, message, comments, context in extract_from_dir(
                ROOT / source, METHODS, options_map=OPTIONS, keywords=KEYWORDS,
                comment_tags=("i18n:",), strip_comment_tags=True):
            catalog.add(message, None, auto_comments=comments, context=context)
    return catalog


def read(language: str) -> Catalog:
    with po_path(language).open("rb") as handle:
        return read_po(handle, locale=language, domain=DOMAIN)


def write(path: Path, catalog: Catalog) -> None:
    # Fixed header fields: a catalogue (and its .mo) changes only when its strings do.
    catalog.fuzzy = False
    catalog.creation_date = catalog.revision_date = STAMP
    catalog.header_comment = HEADER
    catalog.version = "1"
    catalog.msgid_bugs_address = catalog.last_translator = ""
    catalog.language_team = ""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        write_po(handle, catalog, width=100, no_location=True, omit_header=False,
                 sort_output=True, include_previous=False)


def compiled(catalog: Catalog) -> bytes:
    buffer = BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()


def update() -> list[str]:
    """Extract, merge into every language's .po (new strings untranslated, gone ones
    dropped), compile the .mo files. Returns what changed, one line per file."""
    template = extract()
    write(TEMPLATE, template)
    changed: list[str] = []
    for language in LANGUAGES:
        path = po_path(language)
        if path.exists():
            catalog = read(language)
            catalog.update(template, no_fuzzy_matching=True)
            catalog.obsolete.clear()
        else:
            catalog = Catalog(locale=language, domain=DOMAIN, project="loyalty-connector",
                              charset="utf-8")
            catalog.update(template, no_fuzzy_matching=True)
        write(path, catalog)
        mo = path.with_suffix(".mo")
        data = compiled(catalog)
        if not mo.exists() or mo.read_bytes() != data:
            mo.write_bytes(data)
            changed.append(str(mo.relative_to(ROOT)))
        missing = untranslated(catalog) if language != "en" else []
        if missing:
            changed.append(f"{path.relative_to(ROOT)}: {len(missing)} untranslated")
    return changed


def compile_all() -> None:
    for language in LANGUAGES:
        po_path(language).with_suffix(".mo").write_bytes(compiled(read(language)))


def untranslated(catalog: Catalog) -> list[str]:
    """msgids of a catalogue with no translation, or only a fuzzy one."""
    found = []
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(strings):
            found.append(message.id if isinstance(message.id, str) else message.id[0])
    return found


def mo_entries(language: str) -> dict[tuple[str | None, object], object]:
    """What a compiled .mo holds, as {(context, msgid): msgstr}, to compare with its .po."""
    with po_path(language).with_suffix(".mo").open("rb") as handle:
        return _entries(read_mo(handle))


def po_entries(catalog: Catalog) -> dict[tuple[str | None, object], object]:
    """What compiling the .po now would put in the .mo."""
    return _entries(read_mo(BytesIO(compiled(catalog))))


def _tuple(value: object) -> tuple[object, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _entries(catalog: Catalog) -> dict[tuple[str | None, object], object]:
    return {(message.context, _tuple(message.id)): _tuple(message.string)
            for message in catalog if message.id}
