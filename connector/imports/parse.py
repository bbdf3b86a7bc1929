"""One row's values read on their own: a number, dates, a phone, an e-mail, a tier. Each
reader raises RowRefused with the reason a report shows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from connector.i18n import N_, Message
from connector.imports.rows import RawRow
from connector.money import MAX_AMOUNT, from_minor, parse_amount
from connector.program import Program
from connector.referrals.codes import normalize

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CARD = re.compile(r"[0-9A-Za-z]{4,32}")
_CONTACT = re.compile(r"[0-9]{1,64}")
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y")
# A balance as it is usually written (digits, at most two places): read as hundredths
# without a Decimal; any other spelling goes through parse_amount and its messages.
_PLAIN_AMOUNT = re.compile(r"([0-9]{1,15})(?:\.([0-9]{1,2}))?")
_MAX_MINOR = int(MAX_AMOUNT * 100)
_OLDEST_BIRTHDAY = date(1900, 1, 1)


class RowRefused(Exception):
    """Why a row is left out (the report's reason): a marked message, shown in
    program.language by the report, in English by `str()` (JSON, logs)."""

    def __init__(self, message: Message) -> None:
        super().__init__(str(message))
        self.message = message


@dataclass
class Row:
    """A row whose values are each well-formed; which contact it names may still be unknown
    (phone / e-mail only) until matched."""

    line: int
    contact_id: str | None
    phone: str | None
    email: str | None
    minor: int  # the opening balance in hundredths
    expires: date | None
    tier: str | None
    birthday: date | None
    card: str | None
    referrer: str | None

    @property
    def balance(self) -> Decimal:
        return from_minor(self.minor)

    @property
    def balance_text(self) -> str:
        """As str(self.balance) gives it ("1234.50"), without a Decimal."""
        return f"{self.minor // 100}.{self.minor % 100:02d}"


def parse_row(raw: RawRow, program: Program, today: date) -> Row:
    return RowParser(program, today).parse(raw)


class RowParser:
    """parse_row for many rows: the tiers looked up by name once, each value read from the
    row once (100,000 rows: a second less than a call per value)."""

    def __init__(self, program: Program, today: date) -> None:
        self.today = today
        self.tiers: dict[str, str] = {}
        for tier in program.settings.tiers:
            self.tiers.setdefault(tier.name.lower(), tier.name)  # the first, as before
        self.tier_names = ", ".join(tier.name for tier in program.settings.tiers)

    def parse(self, raw: RawRow) -> Row:
        values = raw.values
        contact = _text(values.get("contact_id")) or None
        if contact is not None and not _CONTACT.fullmatch(contact):
            raise RowRefused(N_("bad contact id %(value)s: a CRM contact id is a number",
                                value=repr(contact)))
        phone_text, email_text = _text(values.get("phone")), _text(values.get("email"))
        phone = _phone(phone_text) if phone_text else None
        email = _email(email_text) if email_text else None
        if contact is None and phone is None and email is None:
            raise RowRefused(N_("no contact id, phone or e-mail to find the contact by"))
        minor = _minor(_text(values.get("balance")))
        today = self.today
        expires = _date(values.get("expires"), N_("expiry date"))
        if expires is not None and expires <= today:
            raise RowRefused(N_("expiry date %(date)s is not in the future",
                                date=expires.isoformat()))
        birthday = _date(values.get("birthday"), N_("birthday"))
        if birthday is not None and not _OLDEST_BIRTHDAY <= birthday <= today:
            raise RowRefused(N_("birthday %(date)s is not a past date", date=birthday.isoformat()))
        card_text = _text(values.get("card_number"))
        card = card_text.replace(" ", "").replace("-", "") or None
        if card is not None and not _CARD.fullmatch(card):
            raise RowRefused(N_("bad card number %(value)s: 4 to 32 letters or digits",
                                value=repr(card_text)))
        referrer = _text(values.get("referrer")) or None
        if referrer is not None and normalize(referrer) is None and not _CONTACT.fullmatch(
                referrer):
            raise RowRefused(N_("bad referrer %(value)s: a contact id or a referral code",
                                value=repr(referrer)))
        tier_text = _text(values.get("tier"))
        tier = None
        if tier_text:
            tier = self.tiers.get(tier_text.lower())
            if tier is None:
                raise RowRefused(N_("unknown tier %(value)s (tiers: %(tiers)s)",
                                    value=repr(tier_text), tiers=self.tier_names))
        return Row(line=raw.line, contact_id=contact, phone=phone, email=email, minor=minor,
                   expires=expires, tier=tier, birthday=birthday, card=card,
                   referrer=referrer)


def _text(value: Any) -> str:
    """As RawRow.text reads a value."""
    if value is None:
        return ""
    return (value if isinstance(value, str) else str(value)).strip()


def _minor(text: str) -> int:
    plain = _PLAIN_AMOUNT.fullmatch(text)
    if plain is not None:
        whole, cents = plain.groups()
        minor = int(whole) * 100 + (int(cents.ljust(2, "0")) if cents else 0)
        if minor <= _MAX_MINOR:
            return minor
    return int(_balance(text).scaleb(2))


def phone_digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _phone(text: str) -> str:
    digits = phone_digits(text)
    if not 7 <= len(digits) <= 15 or re.search(r"[^0-9+()\-.\s]", text):
        raise RowRefused(N_("bad phone %(value)s: 7 to 15 digits", value=repr(text)))
    return ("+" if text.lstrip().startswith("+") else "") + digits


def _email(text: str) -> str:
    if not _EMAIL.fullmatch(text):
        raise RowRefused(N_("bad e-mail %(value)s", value=repr(text)))
    return text.lower()


def _balance(text: str) -> Decimal:
    if not text:
        raise RowRefused(N_("no opening balance (write 0 for none)"))
    try:
        value = parse_amount(text.replace(" ", "").replace(",", "."))
    except ValueError as exc:
        raise RowRefused(N_("bad balance %(value)s: %(reason)s", value=repr(text),
                            reason=str(exc))) from None
    if value < 0:
        raise RowRefused(N_("bad balance %(value)s: an opening balance is not negative",
                            value=repr(text)))
    return value


def _date(value: Any, what: Message) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        return date.fromisoformat(text)  # the usual spelling, ten times faster than strptime
    except ValueError:
        pass
    for pattern in _DATE_FORMATS[1:]:
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise RowRefused(N_("bad %(what)s %(value)s: write YYYY-MM-DD or DD.MM.YYYY", what=what,
                        value=repr(text)))


def expiry_moment(day: date, program: Program) -> datetime:
    """The balance expires on `day`: when it begins in the program's zone (the date
    `account show` then gives as the next expiry)."""
    return datetime.combine(day, time(), program.zone).astimezone(UTC)
