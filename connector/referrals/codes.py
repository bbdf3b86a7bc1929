"""Referral codes and card numbers: short, random (`secrets`), unique in the database.

Codes use an alphabet without look-alikes (no 0/O, 1/I/L), so one read aloud or copied
from a printed mailing comes through; input is case-insensitive and forgives spaces and
dashes. Card numbers are random digits with a Luhn check digit, not the account id.
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8
CARD_DIGITS = 10
_SEPARATORS = str.maketrans("", "", " -_\t")


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize(text: str | None) -> str | None:
    """A code as typed (any case, spaces, dashes) in its stored form; None when it cannot be
    a code at all, so garbage is told apart from a well-formed code that names nobody."""
    if text is None:
        return None
    code = str(text).translate(_SEPARATORS).upper()
    if len(code) != CODE_LENGTH or any(char not in ALPHABET for char in code):
        return None
    return code


def luhn_digit(body: str) -> str:
    """The check digit that makes `body` + digit pass the Luhn test."""
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and len(number) > 1 and luhn_digit(number[:-1]) == number[-1]


def new_card_number() -> str:
    """Ten digits: nine random (the first never 0, so the number keeps its length wherever
    it is read as a number) and the Luhn check digit."""
    body = str(1 + secrets.randbelow(9)) + "".join(
        str(secrets.randbelow(10)) for _ in range(CARD_DIGITS - 2))
    return body + luhn_digit(body)
