"""The text of every code a person reads or types: referral codes (8 characters), reward
claim codes (10) and generated promo codes (12).

One alphabet without look-alikes (no 0/O, 1/I/L), so a code read aloud or copied from a
printed mailing comes through; drawn with `secrets`; read in any case, forgiving spaces,
dashes and underscores. Each kind of code keeps its own length beside its use.
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_SEPARATORS = str.maketrans("", "", " -_\t")


def new_code(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def compact(text: object) -> str:
    """A code as typed, without separators, in upper case; not yet checked."""
    return str(text).translate(_SEPARATORS).upper()


def normalize(text: object, length: int) -> str | None:
    """A code as typed in its stored form; None when it cannot be a code of this length at
    all, so garbage is told apart from a well-formed code that names nothing."""
    if text is None:
        return None
    code = compact(text)
    if len(code) != length or any(char not in ALPHABET for char in code):
        return None
    return code
