"""Referral codes and card numbers: short, random (`secrets`), unique in the database.

Codes are 8 characters of the alphabet all codes share (connector.codes.alphabet: no
look-alikes, read in any case, forgiving spaces and dashes). Card numbers are random digits
with a Luhn check digit, not the account id.
"""

from __future__ import annotations

import secrets

from connector.codes import alphabet

CODE_LENGTH = 8
CARD_DIGITS = 10


def new_code() -> str:
    return alphabet.new_code(CODE_LENGTH)


def normalize(text: str | None) -> str | None:
    """A referral code as typed in its stored form; None when it cannot be one at all."""
    return alphabet.normalize(text, CODE_LENGTH)


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
