"""Claim codes: what a customer shows staff. Random (`secrets`), unique in the database, in the
referral codes' alphabet without look-alikes; 10 characters, so guessing one is hopeless."""

from __future__ import annotations

import secrets

from connector.referrals.codes import ALPHABET

CODE_LENGTH = 10
_SEPARATORS = str.maketrans("", "", " -_\t")


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize(text: str) -> str | None:
    """A code as typed (any case, spaces, dashes) in its stored form; None when it is none."""
    code = str(text).translate(_SEPARATORS).upper()
    if len(code) != CODE_LENGTH or any(char not in ALPHABET for char in code):
        return None
    return code
