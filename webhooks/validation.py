"""Reading /api/v1 requests: the JSON wire format and the checks on every field.

JSON numbers are parsed as Decimal and Decimals are written as strings, so an amount never
passes through float. Every refusal is a 400 whose detail starts with the field at fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeVar

from flask import current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request

from connector.ledger.fingerprint import request_fingerprint
from connector.ledger.views import AccountRef
from connector.money import MAX_AMOUNT, parse_amount
from webhooks.errors import ApiError

T = TypeVar("T")

CRM = re.compile(r"^[a-z0-9_]{1,16}$")
# The one written form of an amount in a string. Decimal() alone would also take " 5",
# "1e2", "1_000" and other scripts' digits, none of which a till or a shop sends on purpose.
AMOUNT_TEXT = re.compile(r"^-?[0-9]+(\.[0-9]{1,2})?$")
BONUS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TEXT_MAX = 255  # the ledger's column width for portal, source, key
CONTACT_MAX = 64
COMMENT_MAX = 2000
JSON = "application/json"
# PostgreSQL's text columns refuse NUL, and a lone surrogate (JSON "\ud800") has no UTF-8
# form for any database: either would fail at the insert, after validation, as a 500.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


class JSONProvider(DefaultJSONProvider):
    """Numbers in as Decimal, Decimal out as a string: the API's money contract."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_float", Decimal)
        # NaN and Infinity would otherwise arrive as floats, past parse_float.
        kwargs.setdefault("parse_constant", _no_constant)
        return json.loads(s, **kwargs)

    @staticmethod
    def default(o: Any) -> Any:
        # Flask renders Decimal as str today too; stated here because clients rely on it.
        if isinstance(o, Decimal):
            return str(o)
        return DefaultJSONProvider.default(o)


def invalid(field: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_request", f"{field}: {problem}")


def storable(value: str) -> bool:
    """Whether every supported database can keep this text as it is."""
    return UNSTORABLE.search(value) is None


def check_text(field: str, value: object, *, max_length: int = TEXT_MAX,
               pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if not value.strip():
        raise invalid(field, "must not be empty")
    if not storable(value):
        raise invalid(field, "must not contain NUL characters or unpaired surrogates")
    if len(value) > max_length:
        raise invalid(field, f"must be at most {max_length} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(field, f"must match {pattern.pattern}")
    return value


def check_amount(field: str, value: object, *, signed: bool = False) -> Decimal:
    """A positive amount (or, `signed`, a non-zero one) with at most two decimal places."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise invalid(field, "must be a number or a decimal string, e.g. \"10.50\"")
    if isinstance(value, str) and not AMOUNT_TEXT.fullmatch(value):
        raise invalid(field, "must be digits with at most two decimal places, e.g. \"10.50\"")
    try:
        amount = parse_amount(str(value))
    except ValueError as exc:
        raise invalid(field, str(exc)) from None
    except ArithmeticError:
        # parse_amount lets decimal.InvalidOperation out for values past 28 digits.
        raise invalid(field, f"must be at most {MAX_AMOUNT}") from None
    if signed and amount == 0:
        raise invalid(field, "must not be zero")
    if not signed and amount <= 0:
        raise invalid(field, "must be positive")
    return amount


def account_ref(crm: object, portal: object, contact_id: object) -> AccountRef:
    return AccountRef(check_text("crm", crm, pattern=CRM), check_text("portal", portal),
                      check_text("contact_id", contact_id, max_length=CONTACT_MAX))


class Fields:
    """One JSON object, read field by field. `finish` refuses fields nobody read, so a
    misspelt optional field (`purchase_amout`) is an error, not a redemption without cap."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data
        self._read: set[str] = set()
        self._parsed: dict[str, object] = {}  # what each field meant, for the fingerprint

    def _get(self, field: str) -> Any:
        self._read.add(field)
        return self._data.get(field)  # null counts as absent

    def _keep(self, field: str, value: T) -> T:
        self._parsed[field] = value
        return value

    def optional_text(self, field: str, *, max_length: int = TEXT_MAX,
                      pattern: re.Pattern[str] | None = None) -> str | None:
        value = self._get(field)
        return self._keep(field, None if value is None else check_text(
            field, value, max_length=max_length, pattern=pattern))

    def text(self, field: str, *, max_length: int = TEXT_MAX,
             pattern: re.Pattern[str] | None = None) -> str:
        value = self.optional_text(field, max_length=max_length, pattern=pattern)
        if value is None:
            raise invalid(field, "required")
        return value

    def optional_amount(self, field: str, *, signed: bool = False) -> Decimal | None:
        value = self._get(field)
        return self._keep(field, None if value is None
                          else check_amount(field, value, signed=signed))

    def amount(self, field: str, *, signed: bool = False) -> Decimal:
        value = self.optional_amount(field, signed=signed)
        if value is None:
            raise invalid(field, "required")
        return value

    def raw(self, field: str) -> Any:
        """A field read as it came, for a parser of its own (None: absent); `note` what it
        meant for the fingerprint."""
        return self._get(field)

    def nulls(self, *fields: str) -> list[str]:
        """Those of `fields` sent as null: where an update clears a value with null and keeps
        it when the field is left out (everywhere else null counts as absent)."""
        return [field for field in fields if field in self._data and self._data[field] is None]

    def note(self, field: str, meaning: object) -> None:
        self._keep(field, meaning)

    def flag(self, field: str, *, default: bool = False) -> bool:
        value = self._get(field)
        if value is None:
            return self._keep(field, default)
        if not isinstance(value, bool):
            raise invalid(field, "must be true or false")
        return self._keep(field, value)

    def optional_flag(self, field: str) -> bool | None:
        return None if self._data.get(field) is None else self.flag(field)

    def optional_count(self, field: str, *, minimum: int, maximum: int) -> int | None:
        """A whole number (a JSON integer, not a string or a fraction) within the bounds."""
        value = self._get(field)
        if value is None:
            return self._keep(field, None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(field, "must be a whole number")
        if not minimum <= value <= maximum:
            raise invalid(field, f"must be from {minimum} to {maximum}")
        return self._keep(field, value)

    def optional_ref(self) -> AccountRef | None:
        """crm, portal and contact_id: all three or none."""
        names = ("crm", "portal", "contact_id")
        given = [self._get(name) for name in names]
        if all(value is None for value in given):
            return None
        for name, value in zip(names, given, strict=True):
            if value is None:
                raise invalid(name, "required with the other account fields")
        ref = account_ref(*given)
        self._parsed.update(crm=ref.crm, portal=ref.portal, contact_id=ref.contact_id)
        return ref

    def ref(self) -> AccountRef:
        ref = self.optional_ref()
        if ref is None:
            raise invalid("crm", "required")
        return ref

    def idempotency_key(self, header: str | None) -> str:
        """The Idempotency-Key header or the body's "key"; both given must agree."""
        body = self.optional_text("key")
        self._parsed.pop("key")  # the key names the request; it is not part of it
        if header is not None:
            header = check_text("Idempotency-Key", header)
            if body is not None and body != header:
                raise invalid("key", "differs from the Idempotency-Key header")
        key = header or body
        if key is None:
            raise invalid("key", "required: send an Idempotency-Key header or \"key\"")
        return key

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise invalid(unknown[0], "unknown field")

    def fingerprint(self, operation: str) -> str:
        """The request as read (after `finish`), to keep with its idempotency key."""
        return request_fingerprint(operation, self._parsed)


def request_body() -> bytes:
    """The raw body of Flask's current request; 413 past server.max_body_bytes."""
    return read_body(request)


def read_body(incoming: Request) -> bytes:
    """The raw body; 413 past the request's max_content_length. Werkzeug refuses a
    Content-Length over the limit, but a body streamed without one (chunked, behind a server
    that sets wsgi.input_terminated) it cuts at the limit without a word: a cut body must not
    pass for the whole one."""
    body = incoming.get_data(cache=True)
    limit = incoming.max_content_length
    if incoming.content_length is None and limit is not None and len(body) >= limit \
            and incoming.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return body


def json_body() -> Fields:
    """The request's JSON object; 415 for another content type, 400 for anything else."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", f"send the body as {JSON}")
    raw = request_body()
    try:
        # RFC 8259: JSON between systems is UTF-8; json.loads would also guess UTF-16/32.
        data = current_app.json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # includes bad UTF-8 and NaN
        raise ApiError(400, "invalid_json", f"body: not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "body: nested too deeply") from None
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object")
    return Fields(data)


def query_int(field: str, *, minimum: int, maximum: int | None = None) -> int | None:
    """A whole number from the query string, None when absent."""
    raw = request.args.get(field)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise invalid(field, "must be a whole number")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise invalid(field, f"must be {bounds}")
    return value


def query_flag(field: str) -> bool:
    raw = request.args.get(field, "0").lower()
    if raw not in ("0", "1", "true", "false"):
        raise invalid(field, "must be 1 or 0")
    return raw in ("1", "true")
