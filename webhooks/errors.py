"""One place that turns every error into JSON: `{"error": code, "detail": text}`.

    ApiError                  refused by the web tier (auth, body, a field): its own status
    LedgerError               refused by the ledger: status by its class, code by its `.code`
    HTTPException             werkzeug's (404, 405, 413, ...): its status, code from its name
    the database away         503 database_unavailable with Retry-After, logged once (outage.py)
    anything else             500 internal_error, logged with its traceback
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import RoutingException

from connector.db import is_unavailable
from connector.errors import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InsufficientPointsError,
    InvalidAmountError,
    InvalidScoreError,
    LedgerError,
    NothingToReverseError,
    RedemptionCapError,
    ReturnTooLargeError,
    RewardNotFoundError,
    RewardRefusedError,
    UnknownBonusError,
    UnknownCampaignError,
)
from webhooks import outage

log = logging.getLogger(__name__)

# Checked in order with isinstance, so a future subclass inherits its parent's status.
LEDGER_STATUS: tuple[tuple[type[LedgerError], int], ...] = (
    (AccountNotFoundError, 404),
    (InsufficientPointsError, 409),
    (IdempotencyConflictError, 409),
    (NothingToReverseError, 409),
    (ReturnTooLargeError, 409),
    (RewardNotFoundError, 404),
    (UnknownCampaignError, 404),
    (RewardRefusedError, 409),
    (RedemptionCapError, 422),
    (InvalidAmountError, 400),
    (UnknownBonusError, 400),
    (InvalidScoreError, 400),
)
LEDGER_DEFAULT_STATUS = 422


class ApiError(Exception):
    """A request the web tier refuses: HTTP `status`, a stable `code`, one line of `detail`."""

    def __init__(self, status: int, code: str, detail: str, *,
                 headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(detail)


def error_payload(code: str, detail: str | None = None, *,
                  extra: Mapping[str, object] | None = None) -> dict[str, object]:
    body: dict[str, object] = {**(extra or {}), "error": code}
    if detail is not None:
        body["detail"] = detail
    return body


def error_response(status: int, code: str, detail: str | None = None, *,
                   headers: Mapping[str, str] | None = None,
                   extra: Mapping[str, object] | None = None) -> Response:
    response = jsonify(error_payload(code, detail, extra=extra))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.detail, headers=exc.headers)


def handle_ledger_error(exc: LedgerError) -> Response:
    status = next((status for cls, status in LEDGER_STATUS if isinstance(exc, cls)),
                  LEDGER_DEFAULT_STATUS)
    # The context (max_redeemable, available, ...) tells the caller what would succeed.
    return error_response(status, exc.code, exc.detail, extra=exc.context)


def http_error(exc: HTTPException, max_body: int | None
               ) -> tuple[int, str, str | None, dict[str, str]]:
    """werkzeug's error (404, 405, 413, a client that went away, ...) as status, code,
    detail and headers of the JSON answer."""
    code, detail = exc.name.lower().replace(" ", "_"), exc.description
    if isinstance(exc, RequestEntityTooLarge):
        code, detail = "body_too_large", f"the body exceeds server.max_body_bytes ({max_body})"
    headers = {name: value for name, value in exc.get_headers()
               if name.lower() != "content-type"}  # keeps Allow on 405
    return exc.code or 500, code, detail, headers


def handle_http_exception(exc: HTTPException) -> HTTPException | Response:
    if exc.code is None or isinstance(exc, RoutingException):
        return exc  # a redirect (e.g. to add a trailing slash) must stay a redirect
    status, code, detail, headers = http_error(exc, current_app.config["MAX_CONTENT_LENGTH"])
    return error_response(status, code, detail, headers=headers)


def log_unexpected(exc: Exception, method: str, path: str) -> None:
    # Method and path only: headers and body may carry the admin token or customer data.
    log.error("unhandled %s on %s %s", type(exc).__name__, method, path, exc_info=exc)


def handle_unexpected(exc: Exception) -> Response:
    if is_unavailable(exc):
        current_app.extensions["outage"].refused(exc, request.method, request.path)
        return error_response(503, outage.CODE, outage.DETAIL, headers=outage.HEADERS)
    log_unexpected(exc, request.method, request.path)
    return error_response(500, "internal_error")


def note_answered(response: Response) -> Response:
    if response.status_code < 500:
        current_app.extensions["outage"].answered()
    return response


def init_app(app: Flask) -> None:
    """Answer every error of every blueprint as JSON."""
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(LedgerError, handle_ledger_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
    app.extensions["outage"] = outage.OutageLog()
    app.after_request(note_answered)
