"""What owners and customers read, in `program.language`: one gettext catalogue
(connector/locale/<language>/LC_MESSAGES/messages.po, compiled to .mo beside it) and the
locale's way of writing numbers, money, percentages and dates (Babel, CLDR data).

Source strings are English, marked where they are written:

- Python: `t._("Balance")`, `t._("%(count)s pending", count=n)`,
  `t.ngettext("%(num)d day", "%(num)d days", n)`, `t.pgettext("context", "word")` with `t`
  a `Translator`;
  text built before the language is known (doctor's checks) uses `N_(...)`, a `Message`
  rendered later: `message.render(t)`, or in English by `str(message)`.
- Templates: `{{ _("Balance") }}`, `{{ ngettext("%(num)d day", "%(num)d days", n) }}`
  (Jinja's i18n extension, new style: placeholders filled and escaped by Jinja), and the
  formatters as `t.number(x)`, `t.money(x, currency)`, `t.date(d)`.

Placeholders are always named (`%(name)s`): translations may reorder them. A new string is
one marked call plus its lines in the catalogues: `python -m connector.i18n update`
extracts every marked string, merges it into each messages.po and compiles the .mo files
(README, Language). JSON answers never go through here: they stay language-neutral.
"""

from __future__ import annotations

import gettext
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from babel import Locale
from babel.dates import format_date, format_datetime, format_timedelta
from babel.numbers import format_decimal, format_percent

from connector.reports import age_text

Language = Literal["ru", "uk", "en"]
LANGUAGES: tuple[Language, ...] = ("ru", "uk", "en")
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "messages"
NBSP = "\u00a0"
DASH = "—"  # a figure that is not known (no data yet)
# Babel writes "RUB 1,234.50" in English and "1 234,50 RUB" in Ukrainian: the sign is what a
# customer recognises in every language.
CURRENCY_SIGNS = {"RUB": "₽", "USD": "$", "EUR": "€", "KZT": "₸", "BYN": "Br", "UAH": "₴"}


@dataclass(frozen=True)
class Translator:
    """One language's catalogue and formats. Built once per process and language
    (`translator()`), passed down like the settings it comes from."""

    language: str
    translations: gettext.NullTranslations
    locale: Locale = field(repr=False)

    # -- words ---------------------------------------------------------------------------
    def _(self, message: str, **values: Any) -> str:
        text = self.translations.gettext(message)
        return text % values if values else text

    def pgettext(self, context: str, message: str, **values: Any) -> str:
        """The same English word translated differently by `context`."""
        text = self.translations.pgettext(context, message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: Any) -> str:
        """The form for `n`; `%(num)d` in the text is `n` itself, as in templates."""
        return self.translations.ngettext(singular, plural, n) % {"num": n, **values}

    # -- figures -------------------------------------------------------------------------
    def number(self, value: Decimal | int | None, places: int | None = None) -> str:
        """1 234 or 1 234,5 (ru, uk); 1,234 or 1,234.5 (en). Decimals only when there are
        any, unless `places` fixes how many."""
        if value is None:
            return DASH
        if places is not None:
            pattern = "#,##0" + ("." + "0" * places if places else "")
            return format_decimal(value, format=pattern, locale=self.locale)
        return format_decimal(value, locale=self.locale, decimal_quantization=False)

    def money(self, value: Decimal | int | None, currency: str) -> str:
        """1 234 ₽ for a whole amount, 1 234,50 ₽ otherwise."""
        if value is None:
            return DASH
        whole = Decimal(value) == Decimal(value).to_integral_value()
        sign = CURRENCY_SIGNS.get(currency, currency)
        return f"{self.number(value, 0 if whole else 2)}{NBSP}{sign}"

    def percent(self, rate: Decimal | None, places: int | None = 1) -> str:
        """A share (0.125) as the locale writes a percentage: 12,5 % (ru), 12.5% (en);
        `places=None`: decimals only when there are any."""
        if rate is None:
            return DASH
        decimals = ".##" if places is None else "." + "0" * places if places else ""
        pattern = self.locale.percent_formats[None].pattern.replace(
            "#,##0", "#,##0" + decimals, 1)
        return format_percent(rate, format=pattern, locale=self.locale)

    def points(self, value: Decimal) -> str:
        """"150 баллов", "1 балл", "2,5 балла"; "150 points", "1 point"."""
        return f"{self.number(value)}{NBSP}{self.points_word(value)}"

    def figure(self, value: Decimal) -> str:
        """Points or money to the hundredth, as the ledger keeps them: 1 210,00 (ru),
        1,210.00 (en): what the CLI and the texts written into a CRM show."""
        return self.number(value, 2)

    def ledger_points(self, value: Decimal, *, signed: bool = False) -> str:
        """Points to the hundredth with the word that agrees: "+50,00 баллов", "2,00 бали",
        "500.00 points"; `signed` writes a gain's "+"."""
        sign = "+" if signed and value > 0 else ""
        return f"{sign}{self.figure(value)} {self.points_word(value)}"

    def points_word(self, value: Decimal) -> str:
        if value != value.to_integral_value():
            # A fraction has a form of its own (genitive singular: "2,5 балла", "2,5 бала")
            # that gettext's plural forms, counting whole numbers, do not give.
            return self.pgettext("a fraction of", "points")
        return self.ngettext("point", "points", int(abs(value)))

    def duration(self, delta: timedelta | None) -> str:
        """How long, in the largest whole unit: 3 дн., 5 ч, 12 мин; 3 days, 5 hr, 12 min."""
        if delta is None:
            return DASH
        return format_timedelta(max(delta, timedelta(0)), threshold=1, format="short",
                                locale=self.locale)

    # -- dates ---------------------------------------------------------------------------
    def date(self, value: date) -> str:
        """6 декабря 2026 (ru), 6 грудня 2026 (uk), 6 December 2026 (en)."""
        return format_date(value, "d MMMM y", locale=self.locale)

    def short_date(self, value: date) -> str:
        """A chart's axis by day: 06.12 (ru, uk), Dec 6 (en)."""
        return format_date(value, "MMM d" if self.language == "en" else "dd.MM",
                           locale=self.locale)

    def month(self, value: date) -> str:
        """A chart's axis by month: янв. 2026 (ru), Jan 2026 (en)."""
        return format_date(value, "LLL y", locale=self.locale)

    def moment(self, value: datetime | None, zone: tzinfo | None = None) -> str:
        """A date and time to the minute in `zone`: 06.12.2026 14:30 (ru, uk),
        6 Dec 2026, 14:30 (en)."""
        if value is None:
            return DASH
        pattern = "d MMM y, HH:mm" if self.language == "en" else "dd.MM.y HH:mm"
        return format_datetime(value, pattern, tzinfo=zone, locale=self.locale)


@lru_cache(maxsize=len(LANGUAGES))
def translator(language: str) -> Translator:
    """The translator for a configured language, its catalogue read once per process."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)} (got {language!r})")
    translations = gettext.translation(DOMAIN, localedir=str(LOCALE_DIR),
                                       languages=[language])
    return Translator(language, translations, Locale.parse(language))


# -- messages made before the language is known ----------------------------------------------
@dataclass(frozen=True)
class Message:
    """A marked English text and the values for its placeholders, translated when shown.
    `str()` is the English text: what logs and JSON answers carry."""

    msgid: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def render(self, t: Translator | None = None) -> str:
        """In `t`'s language (English without one); a value that is a Message itself is
        rendered in the same language, and so are a timedelta ("3 дн.", "3 d"), a
        datetime (in UTC) and a tuple of them (joined by commas)."""
        text = t.translations.gettext(self.msgid) if t is not None else self.msgid
        if not self.values:
            return text
        return text % {key: _value(value, t) for key, value in self.values.items()}

    def __str__(self) -> str:
        return self.render()

    def map_values(self, change: Callable[[str], str]) -> Message:
        """The same message with every text value (nested ones too) passed through
        `change`: what redacting a secret out of it takes."""
        def each(value: Any) -> Any:
            if isinstance(value, Message):
                return value.map_values(change)
            return change(value) if isinstance(value, str) else value

        return Message(self.msgid, {key: each(value) for key, value in self.values.items()})


Text = Message | str  # a marked message, or words a CRM or a library said (shown as they are)


def render(text: Message | str, t: Translator | None = None) -> str:
    """A Message in `t`'s language; a plain string (a CRM's or a library's words) as is."""
    return text.render(t) if isinstance(text, Message) else text


def _value(value: Any, t: Translator | None) -> Any:
    if isinstance(value, Message):
        return value.render(t)
    if isinstance(value, tuple):  # a list of items (an import row's changes): "a, b, c"
        return ", ".join(str(_value(item, t)) for item in value)
    if isinstance(value, timedelta):
        return t.duration(value) if t is not None else age_text(value)
    if isinstance(value, datetime):  # a moment shown in UTC: 06.12.2026 14:30 UTC
        return (t.moment(value, UTC) if t is not None else
                value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")) + " UTC"
    return value


# gettext's name for a string marked now and translated later.
def N_(msgid: str, **values: Any) -> Message:
    return Message(msgid, values)
