"""The catalogue: every marked string of the code and templates is in each language's
messages.po, translated in Russian and Ukrainian with the same placeholders, and the
committed .mo files say what their .po files say. Plus the locale's numbers and dates."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog

from connector.errors import ConfigError
from connector.i18n import LANGUAGES, N_, catalog, translator
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def extracted() -> Catalog:
    return catalog.extract()


def ids(found: Catalog) -> set[object]:
    return {(message.context, message.id) for message in found if message.id}


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_marked_string_is_in_the_catalogue(extracted: Catalog, language: str) -> None:
    missing = ids(extracted) - ids(catalog.read(language))
    assert not missing, (f"{len(missing)} string(s) not in {language}'s messages.po, e.g. "
                         f"{sorted(map(str, missing))[:5]}: run python -m connector.i18n update")


def test_the_template_is_what_the_code_marks(extracted: Catalog) -> None:
    with catalog.TEMPLATE.open("rb") as handle:
        from babel.messages.pofile import read_po

        committed = read_po(handle)
    assert ids(committed) == ids(extracted), "run python -m connector.i18n update"


@pytest.mark.parametrize("language", ["ru", "uk"])
def test_russian_and_ukrainian_are_translated_with_the_same_placeholders(
        language: str) -> None:
    found = catalog.read(language)
    assert catalog.untranslated(found) == [], (
        f"fill their msgstr in connector/locale/{language}/LC_MESSAGES/messages.po, then run "
        "python -m connector.i18n compile")
    problems = [(message.id, [str(error) for error in errors])
                for message, errors in found.check() if errors]
    assert problems == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compiled_catalogues_are_up_to_date(language: str) -> None:
    assert catalog.mo_entries(language) == catalog.po_entries(catalog.read(language)), \
        f"{language}'s messages.mo is older than its .po: run python -m connector.i18n compile"


def test_a_missing_translation_cannot_slip_through() -> None:
    """The checks above can fail: an untranslated and a mismatched entry are found."""
    broken = Catalog(locale="ru")
    broken.add("Balance", "")
    broken.add("Hello, %(name)s!", "Здравствуйте, %(nom)s!", flags=["python-format"])
    assert catalog.untranslated(broken) == ["Balance"]
    assert [message.id for message, errors in broken.check() if errors] == [
        "Hello, %(name)s!"]


@pytest.mark.parametrize(("language", "number", "money", "percent", "day", "moment"), [
    ("ru", "1\u00a0234,5", "1\u00a0234,50\u00a0₽", "12,5\u00a0%", "6 декабря 2026",
     "06.12.2026 17:30"),
    ("uk", "1\u00a0234,5", "1\u00a0234,50\u00a0₽", "12,5%", "6 грудня 2026",
     "06.12.2026 17:30"),
    ("en", "1,234.5", "1,234.50\u00a0₽", "12.5%", "6 December 2026", "6 Dec 2026, 17:30"),
])
def test_numbers_and_dates_in_the_locale(language: str, number: str, money: str,
                                         percent: str, day: str, moment: str) -> None:
    from zoneinfo import ZoneInfo

    t = translator(language)
    assert t.number(D("1234.5")) == number
    assert t.money(D("1234.5"), "RUB") == money
    assert t.money(D("1234"), "RUB") == money.split(",")[0].split(".")[0] + "\u00a0₽" \
        if language != "en" else t.money(D("1234"), "RUB") == "1,234\u00a0₽"
    assert t.percent(D("0.125")) == percent
    assert t.date(date(2026, 12, 6)) == day
    assert t.moment(datetime(2026, 12, 6, 14, 30, tzinfo=UTC), ZoneInfo("Europe/Moscow")) == \
        moment


def test_a_message_marked_early_renders_in_any_language_and_stays_english_in_str() -> None:
    message = N_("Too many requests")
    assert str(message) == "Too many requests"
    assert message.render(translator("ru")) == "Слишком много запросов"
    assert message.render(translator("uk")) == "Забагато запитів"


def test_an_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="ru, uk, en"):
        translator("de")


def test_the_catalogues_ship_in_the_package() -> None:
    """Every catalogue file matches the package data a wheel carries."""
    import tomllib
    from fnmatch import fnmatch

    root = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["package-data"]["connector"]
    files = [path.relative_to(root / "connector").as_posix()
             for path in (root / "connector" / "locale").rglob("*") if path.is_file()]
    assert {f"{language}/LC_MESSAGES/messages.mo" for language in LANGUAGES} <= {
        file.removeprefix("locale/") for file in files}
    assert [file for file in files if not any(fnmatch(file, p) for p in patterns)] == []


def test_the_setting_takes_the_three_languages_only(tmp_path: Path) -> None:
    for language in LANGUAGES:
        assert make_settings(tmp_path, program={"language": language}).program.language == \
            language
    with pytest.raises(ConfigError) as refused:
        make_settings(tmp_path, program={"language": "de"})
    assert refused.value.problems[0].startswith("program.language: Input should be 'ru', "
                                                "'uk' or 'en'")
