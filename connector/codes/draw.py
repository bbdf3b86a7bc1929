"""Promo code text: drawing unique codes and reading what people type.

Generated codes are 12 characters of the alphabet all codes share (connector.codes.alphabet:
no 0/O, 1/I/L), drawn with `secrets`: 31^12 (about 2^59) possibilities, so a batch of a
million leaves guessing one hopeless. They print in groups of four (`ABCD-EFGH-JKMN`);
input is read in any case, with or without spaces and dashes.
"""

from __future__ import annotations

from connector.codes import alphabet

CODE_LENGTH = 12
MAX_LENGTH = 32


def new_code() -> str:
    return alphabet.new_code(CODE_LENGTH)


def normalize(text: object) -> str | None:
    """A code as typed in its stored form; None when it cannot be a code at all. Not held
    to the alphabet or one length: a shared code is whatever the campaign configures."""
    if text is None:
        return None
    code = alphabet.compact(text)
    if not 3 <= len(code) <= MAX_LENGTH or not code.isascii() or not code.isalnum():
        return None
    return code


def printed(code: str) -> str:
    """How a generated code is printed; a shared code as configured."""
    if len(code) != CODE_LENGTH:
        return code
    return "-".join(code[i:i + 4] for i in range(0, CODE_LENGTH, 4))
