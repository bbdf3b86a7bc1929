"""Who may call: the one place secrets are compared and admin tokens are read from requests.

Every comparison is constant-time (hmac.compare_digest): the time an answer takes never tells
how much of a guess was right.
"""

from __future__ import annotations

import hmac

from flask import request
from pydantic import SecretStr

from webhooks.errors import ApiError


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def matches_any(given: str, secrets: list[str]) -> bool:
    # Every secret is compared, so the time taken does not tell which one nearly matched.
    found = [same_secret(given, secret) for secret in secrets]
    return bool(given) and any(found)


def configured(*secrets: SecretStr | None) -> list[str]:
    return [value for secret in secrets
            if secret is not None and (value := secret.get_secret_value())]


def presented(*, basic: bool = False) -> str:
    """The request's bearer token, or with `basic` also a Basic password; "" when none."""
    auth = request.authorization
    if auth is None:
        return ""
    if auth.type == "bearer":
        return (auth.token or "").strip()
    if basic and auth.type == "basic":
        return auth.password or ""
    return ""


def require(secrets: list[str], *, disabled: tuple[str, str], refused: str,
            challenge: str = "Bearer", basic: bool = False) -> None:
    """403 `disabled` when no secret is configured, 401 `refused` unless one is presented."""
    if not secrets:
        raise ApiError(403, *disabled)
    if not matches_any(presented(basic=basic), secrets):
        raise ApiError(401, "unauthorized", refused, headers={"WWW-Authenticate": challenge})
