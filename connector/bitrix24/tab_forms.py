"""Signed form tokens of the CRM tab: the CSRF protection that works inside Bitrix24's iframe.

The tab lives in a third-party iframe, where browsers block or partition cookies, so the
proof that a change comes from a page we served sits in the form itself: a token naming the
Bitrix24 user (and whether the portal said they are an admin), the contact, the operation,
an expiry and a nonce, signed with HMAC-SHA256 (names ride along for the page after the
change, which gets no AUTH_ID). The key is derived from the app's
client_secret (the tab exists only for an app), under a label of its own, so the token is
worth nothing anywhere else. The nonce becomes the ledger's idempotency key: a form sent
twice changes the balance once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

FORM_LIFETIME = timedelta(minutes=15)
KEY_LABEL = b"loyalty-connector/bitrix24-tab-form/v1"
VERSION = "v1"
OPERATIONS = ("bonus", "redeem", "reward")


class TabRefused(Exception):
    """A tab request refused: HTTP `status`, a stable `code`, one line of `detail`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(detail)


@dataclass(frozen=True)
class FormGrant:
    """What a verified form token allows: one operation on one contact by one user."""

    user_id: int
    user_name: str
    admin: bool
    contact_id: str
    label: str  # what the page calls the customer
    operation: str
    nonce: str
    expires_at: int  # epoch seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FormTokens:
    def __init__(self, secret: str, clock: Callable[[], datetime]) -> None:
        self._key = hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest()
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{VERSION}.{payload}".encode(),
                             hashlib.sha256).digest())

    def issue(self, *, user_id: int, user_name: str, admin: bool, contact_id: str, label: str,
              operation: str) -> str:
        expires = int((self._clock() + FORM_LIFETIME).timestamp())
        grant = FormGrant(user_id, user_name, admin, contact_id, label, operation,
                          secrets.token_hex(16), expires)
        payload = _b64(json.dumps(asdict(grant), separators=(",", ":")).encode())
        return f"{VERSION}.{payload}.{self._sign(payload)}"

    def verify(self, token: str) -> FormGrant:
        """The grant a token carries; TabRefused 401 when it is not ours or has expired."""
        version, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if version != VERSION or not payload or not signature or \
                not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise TabRefused(401, "invalid_form", "the form token is not one this service "
                                                  "signed: reopen the tab")
        try:
            grant = FormGrant(**json.loads(_unb64(payload)))
        except (ValueError, TypeError, binascii.Error):
            raise TabRefused(401, "invalid_form", "the form token cannot be read: reopen "
                                                  "the tab") from None
        if grant.operation not in OPERATIONS:
            raise TabRefused(401, "invalid_form", "the form token names no known operation")
        if self._clock().timestamp() >= grant.expires_at:
            minutes = int(FORM_LIFETIME.total_seconds() // 60)
            raise TabRefused(401, "form_expired", f"the form is older than {minutes} minutes:"
                                                  " reopen the tab and send it again")
        return grant
