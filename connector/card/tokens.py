"""Card page tokens, pure: derived, never stored.

A token is HMAC-SHA256(card.secret, account id + the link's random salt), 32 base64url
characters (192 bits). Why derived and not random-and-stored:
- write-back must be able to put the URL into the CRM field again at any time, so the
  connector needs the token itself, not only a hash of it;
- a copy of the database alone (salts, hashes) gives no working link: making one needs the
  secret, which lives in the environment, not in the database; the secret alone gives none
  either, the salts being random;
- rotation draws a new salt: the old token then hashes to nothing stored, and no record of
  it remains that could bring it back.
The database keeps sha256(token) to find the account in one indexed lookup: the time a
guess takes depends on no prefix of the real token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

TOKEN_LENGTH = 32
TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")
_CONTEXT = b"loyalty-card-link\x00"
# What an unknown token is checked against, so that it takes the steps a known one takes.
_NO_ACCOUNT, _NO_SALT = 0, "0" * 32


def new_salt() -> str:
    return secrets.token_hex(16)


def derive(secret: str, account_id: int, salt: str) -> str:
    digest = hmac.new(secret.encode(), _CONTEXT + f"{account_id}\x00{salt}".encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:TOKEN_LENGTH]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def well_formed(token: str) -> bool:
    return TOKEN.fullmatch(token) is not None


def matches(secret: str, token: str, found: tuple[int, str] | None) -> bool:
    """Whether `token` is the live token of the link found by its hash ((account id, salt),
    or None when no link has that hash). Known and unknown tokens take the same steps: one
    derivation, one constant-time comparison. A token found by hash but not derived from the
    current secret (the secret was changed) does not match."""
    account_id, salt = found or (_NO_ACCOUNT, _NO_SALT)
    expected = derive(secret, account_id, salt)
    same = hmac.compare_digest(expected.encode(), token.encode())
    return found is not None and same
