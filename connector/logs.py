"""Logs: one JSON object per line for collectors, readable lines on a terminal; every record
carries the context it happened in (request id, inbox ids, job) and no secrets.

    configure_logging("INFO")                    # once at start; calling again replaces it
    with log_context(inbox_id=17):
        log.warning("...")                       # -> {"...", "inbox_id": 17}

The context lives in a ContextVar, so threads (waitress, the scheduler) each see their own.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

_context: ContextVar[Mapping[str, Any]] = ContextVar("loyalty_log_context",
                                                    default=MappingProxyType({}))

# Attributes every LogRecord has; anything else on a record is an extra field worth printing.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MASK = "***"

# Shapes secrets take in what gets logged: URLs, form bodies, JSON, Python reprs, headers.
SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A Bitrix24 inbound webhook is https://PORTAL/rest/<user>/<secret>/<method>
    (re.compile(r"(/rest/\d+/)[^/\s\"'?&]+"), rf"\g<1>{MASK}"),
    # amoCRM webhooks and pipeline actions, and Bitrix24 "Webhook" rule actions, carry their
    # secret as a path segment
    (re.compile(r"(/(?:amocrm/(?:webhooks|actions)|bitrix24/actions)/)[^/\s\"'?&]+"),
     rf"\g<1>{MASK}"),
    # a customer's card page link is as good as a password to that page
    (re.compile(r"(/card/)[^/\s\"'?&]+"), rf"\g<1>{MASK}"),
    (re.compile(r"\b(Bearer|Basic)\s+[^\s\"',;]+", re.IGNORECASE), rf"\g<1> {MASK}"),
    # auth[application_token]=..., "access_token": "...", 'refresh_token': '...', auth=...
    (re.compile(r"((?:\b|(?<=%5B))(?:auth|application_token|access_token|refresh_token|"
                r"client_secret|webhook_secret|actions_secret|admin_token|metrics_token|password)"
                r"(?:\]|%5D)?[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,;}\]]+", re.IGNORECASE),
     rf"\g<1>{MASK}"),
    # JSON Web Tokens (amoCRM long-lived tokens), wherever they appear
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),
)


def redact(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# -- context -------------------------------------------------------------------------------
def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add fields to every record logged in this context until `unbind(token)`."""
    return _context.set(MappingProxyType({**_context.get(), **fields}))


def unbind(token: Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def request_id(given: str | None, fresh: Callable[[], str]) -> str:
    """The caller's X-Request-Id when it is a plain token, else a new one from `fresh` (see
    request_ids): a header is attacker-controlled and must not put newlines or markup into
    the logs."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return fresh()


def request_ids() -> Callable[[], str]:
    """New request ids: a random prefix and a counter. Unique like UUID4s for telling
    requests apart in the logs, without a call into the kernel's random source per request."""
    prefix, numbers = uuid.uuid4().hex[:16], itertools.count(1)
    return lambda: f"{prefix}{next(numbers):016x}"


# -- filters and formats -------------------------------------------------------------------
class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):  # an explicit extra= wins
                setattr(record, key, value)
        return True


class RedactingFilter(logging.Filter):
    """Masks secrets in the message, the traceback and string extra fields. It rewrites the
    record itself, so every handler after it sees the masked text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: the handler reports it as logging always does
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class Throttle(logging.Filter):
    """At most one record per `seconds` from the logger it is added to; the next one that
    passes tells how many were held back. For loggers that fire per request under load
    (waitress's "Task queue depth is N"): one line a minute says as much as a thousand."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.seconds = seconds
        self.clock = clock
        self._next = float("-inf")
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        with self._lock:
            if now < self._next:
                self._held += 1
                return False
            self._next = now + self.seconds
            held, self._held = self._held, 0
        if held:
            record.msg = f"{record.msg} (and {held} like it in the last {self.seconds:g} s)"
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in extra_fields(record).items():
            data.setdefault(key, value)  # an extra field never hides the record's own
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = extra_fields(record)
        if fields:
            line += " [" + " ".join(f"{key}={value}" for key, value in fields.items()) + "]"
        return line


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs; found again by its class to be replaced."""


def configure_logging(level: str = "INFO", *, json_output: bool | None = None,
                      stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to `stream` (stderr): JSON lines unless it is a terminal (or
    `json_output` says otherwise). Calling it again replaces the previous configuration."""
    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels:
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    stream = stream or sys.stderr
    if json_output is None:
        json_output = not (hasattr(stream, "isatty") and stream.isatty())
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter() if json_output else HumanFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levels[level.upper()])
    return handler
