"""The fingerprint of a client's request, kept with the entry its idempotency key produced.

A repeated key is a replay only when the request is the same one: "redeem 10" retried under
its key answers the first outcome, "redeem 200" under that key is a conflict (stripe's rule).
Amounts are hashed as parsed (`10`, `"10"` and `"10.00"` are one request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal

from connector.money import from_minor, to_minor


def _canonical(value: object) -> object:
    if isinstance(value, Decimal):
        return str(from_minor(to_minor(value)))
    if value is None or isinstance(value, bool | int | str):
        return value
    raise TypeError(f"a request field of type {type(value).__name__} has no fingerprint")


def request_fingerprint(operation: str, fields: Mapping[str, object]) -> str:
    """sha256 (hex) of the operation and its fields; an absent field equals null."""
    canonical = {name: _canonical(value) for name, value in fields.items() if value is not None}
    text = json.dumps({"operation": operation, "fields": canonical}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
