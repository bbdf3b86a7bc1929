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
from connector.money import parse_amount
from connector.program import Program
from connector.referrals.codes import normalize

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CARD = re.compile(r"[0-9A-Za-z]{4,32}")
_CONTACT = re.compile(r"[0-9]{1,64}")
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y")


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
    balance: Decimal
    expires: date | None
    tier: str | None
    birthday: date | None
    card: str | None
    referrer: str | None

    @property
    def minor(self) -> int:
        """The balance in hundredths (parse_amount left it with two places exactly)."""
        return int(self.balance.scaleb(2))


def parse_row(raw: RawRow, program: Program, today: date) -> Row:
    contact = raw.text("contact_id") or None
    if contact is not None and not _CONTACT.fullmatch(contact):
        raise RowRefused(N_("bad contact id %(value)s: a CRM contact id is a number",
                            value=repr(contact)))
    phone = _phone(raw.text("phone")) if raw.text("phone") else None
    email = _email(raw.text("email")) if raw.text("email") else None
    if contact is None and phone is None and email is None:
        raise RowRefused(N_("no contact id, phone or e-mail to find the contact by"))
    balance = _balance(raw.text("balance"))
    expires = _date(raw.values.get("expires"), N_("expiry date"))
    if expires is not None and expires <= today:
        raise RowRefused(N_("expiry date %(date)s is not in the future", date=expires.isoformat()))
    birthday = _date(raw.values.get("birthday"), N_("birthday"))
    if birthday is not None and not date(1900, 1, 1) <= birthday <= today:
        raise RowRefused(N_("birthday %(date)s is not a past date", date=birthday.isoformat()))
    card = raw.text("card_number").replace(" ", "").replace("-", "") or None
    if card is not None and not _CARD.fullmatch(card):
        raise RowRefused(N_("bad card number %(value)s: 4 to 32 letters or digits",
                            value=repr(raw.text("card_number"))))
    referrer = raw.text("referrer") or None
    if referrer is not None and normalize(referrer) is None and not _CONTACT.fullmatch(
            referrer):
        raise RowRefused(N_("bad referrer %(value)s: a contact id or a referral code",
                            value=repr(referrer)))
    return Row(line=raw.line, contact_id=contact, phone=phone, email=email, balance=balance,
               expires=expires, tier=_tier(raw.text("tier"), program), birthday=birthday,
               card=card, referrer=referrer)


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


def _tier(text: str, program: Program) -> str | None:
    if not text:
        return None
    names = [tier.name for tier in program.settings.tiers]
    for name in names:
        if name.lower() == text.lower():
            return name
    raise RowRefused(N_("unknown tier %(value)s (tiers: %(tiers)s)", value=repr(text),
                    tiers=", ".join(names)))


def expiry_moment(day: date, program: Program) -> datetime:
    """The balance expires on `day`: when it begins in the program's zone (the date
    `account show` then gives as the next expiry)."""
    return datetime.combine(day, time(), program.zone).astimezone(UTC)
