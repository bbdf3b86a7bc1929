"""The one way out to a Bitrix24 portal: auth, the portal's leaky bucket, retries, errors.

Two ways in: an inbound webhook URL (https://PORTAL/rest/USER_ID/SECRET/), or an OAuth app
whose tokens (from ONAPPINSTALL) live in the database and are refreshed on `expired_token`.
An app's calls go to the configured portal's REST root (settings.rest_url) and its refreshes
to settings.oauth_url, never to the client_endpoint an install or an OAuth answer names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import requests

from connector.config import Bitrix24Settings
from connector.crm.credentials import CredentialStore, Tokens
from connector.crm.limiter import LeakyBucket, Limiter
from connector.crm.retry import never_sent, retrying
from connector.errors import CRMAuthError, FatalCRMError, RetriableCRMError
from connector.i18n import N_
from connector.metrics import Metrics, counted_call
from mappings.phpquery import encode

log = logging.getLogger(__name__)

PAGE_SIZE = 50  # fixed by the portal for every list method
BATCH_LIMIT = 50  # commands per batch
# Refusals before execution: repeating them never duplicates anything.
RATE_LIMITED = {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT"}
AUTH_ERRORS = {"INVALID_TOKEN", "NO_AUTH_FOUND", "INVALID_CREDENTIALS", "USER_ACCESS_ERROR",
               "PORTAL_DELETED", "PAYMENT_REQUIRED", "WRONG_AUTH_TYPE", "INVALID_GRANT",
               "INVALID_CLIENT"}
# Calls that create something: repeated only when the portal surely did not run them.
NOT_IDEMPOTENT = ("crm.automation.trigger.execute", "crm.timeline.comment.add")


@dataclass(frozen=True)
class Decision:
    action: Literal["ok", "retry", "refresh", "auth", "fatal"]
    code: str = ""
    detail: str = ""
    wait: float | None = None
    executed: bool = True  # False: refused before running, safe to repeat any call


def classify(status: int, body: Any, *, now: float | None = None,
             operating_reset_at: float | None = None) -> Decision:
    """Decide what a portal response means. Error codes are authoritative, the status only
    when there is no code (limit errors came as 429 on older portals, 503 now)."""
    if isinstance(body, dict) and "error" in body:
        code = str(body.get("error") or "").upper()
        detail = str(body.get("error_description") or code or f"HTTP {status}")
        if code == "QUERY_LIMIT_EXCEEDED":
            return Decision("retry", code, detail, wait=1.0, executed=False)
        if code == "OPERATION_TIME_LIMIT":
            wait = 60.0
            if operating_reset_at is not None and now is not None:
                wait = max(operating_reset_at - now, 1.0)
            return Decision("retry", code, detail, wait=wait, executed=False)
        if code == "OVERLOAD_LIMIT":
            return Decision("retry", code, detail, wait=60.0, executed=False)
        if code == "EXPIRED_TOKEN":
            return Decision("refresh", code, detail, executed=False)
        if code in AUTH_ERRORS or status == 401:
            return Decision("auth", code, detail, executed=False)
        if status >= 500 or code in {"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"}:
            return Decision("retry", code, detail)
        return Decision("fatal", code, detail)
    if 200 <= status < 300 and isinstance(body, dict) and "result" in body:
        return Decision("ok")
    if status in (429, 503):
        return Decision("retry", f"HTTP_{status}", f"HTTP {status} without a JSON error",
                        wait=1.0, executed=False)
    if status >= 500 or status in (408, 425):
        return Decision("retry", f"HTTP_{status}", f"HTTP {status}")
    if status == 401:
        return Decision("auth", "HTTP_401", "HTTP 401")
    return Decision("fatal", f"HTTP_{status}", f"unexpected HTTP {status} answer")


@dataclass(frozen=True)
class Page:
    result: Any
    total: int | None = None
    next: int | None = None


@dataclass
class BatchResult:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    times: dict[str, dict[str, Any]] = field(default_factory=dict)


def _as_map(value: Any) -> dict[str, Any]:
    """PHP encodes an empty map as [] and a 0..n map as a list; read both as maps."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    return {}


class Bitrix24Client:
    def __init__(self, settings: Bitrix24Settings, *, credentials: CredentialStore | None = None,
                 limiter: Limiter | None = None, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.credentials = credentials
        self.metrics = metrics
        self.limiter: Limiter = limiter or LeakyBucket.under(
            settings.requests_per_second, settings.burst, sleep=sleep,
            on_wait=metrics.limiter_waited("bitrix24") if metrics else None)
        self.session = session or requests.Session()
        self.sleep = sleep
        self.clock = clock
        self.calls = 0
        # method -> (operating, operating_reset_at, what its last request used): the
        # portal's per-method time budget as its answers' `time` blocks report it.
        self._operating: dict[str, tuple[float, float | None, float]] = {}
        self._webhook = settings.webhook_url.get_secret_value() if settings.webhook_url else None
        self.portal = settings.portal_key

    # -- public calls ----------------------------------------------------------------------
    def call(self, method: str, params: Mapping[str, Any] | None = None, *,
             idempotent: bool | None = None) -> Page:
        if idempotent is None:
            idempotent = method not in NOT_IDEMPOTENT and not method.endswith(".add")
        self._await_operating([method])
        body = self._send(method, dict(params or {}), idempotent=idempotent)
        return Page(body["result"], _int_or_none(body.get("total")),
                    _int_or_none(body.get("next")))

    def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]], *,
              halt: bool = False) -> BatchResult:
        """Up to 50 commands in one request; a failing command never hides the others."""
        if len(commands) > BATCH_LIMIT:
            raise ValueError(f"a batch takes at most {BATCH_LIMIT} commands")
        if not commands:
            return BatchResult()
        cmd = {name: f"{method}?{encode(params)}" if params else method
               for name, (method, params) in commands.items()}
        idempotent = all(m not in NOT_IDEMPOTENT and not m.endswith(".add")
                         for m, _ in commands.values())
        self._await_operating([method for method, _ in commands.values()])
        body = self._send("batch", {"halt": 1 if halt else 0, "cmd": cmd},
                          idempotent=idempotent)
        inner = _as_map(body.get("result"))
        out = BatchResult(
            results=_as_map(inner.get("result")),
            errors={k: v for k, v in _as_map(inner.get("result_error")).items()
                    if isinstance(v, dict)},
            totals={k: int(v) for k, v in _as_map(inner.get("result_total")).items()},
            times={k: v for k, v in _as_map(inner.get("result_time")).items()
                   if isinstance(v, dict)},
        )
        # "An external call to batch is not accounted for in operating"; each command is,
        # under its own method (limits.md).
        by_method: dict[str, list[dict[str, Any]]] = {}
        for name, (method, _) in commands.items():
            if name in out.times:
                by_method.setdefault(method, []).append(out.times[name])
        for method, blocks in by_method.items():
            self._note_time(method, blocks)
        return out

    def pages(self, method: str, params: Mapping[str, Any] | None = None
              ) -> Iterator[dict[str, Any]]:
        """Every item of a list method paged by START (for lists without the >ID filter
        list_all needs, such as user fields, whose filter takes exact values only): the
        first page says the total, and the pages after it go 50 to a batch."""
        first = self.call(method, {**(params or {})})
        yield from first.result or []
        if first.next is None:
            return
        if first.total is None:  # no total to plan by: one page a request, by `next`
            start: int | None = first.next
            while start is not None:
                page = self.call(method, {**(params or {}), "start": start})
                yield from page.result or []
                start = page.next
            return
        starts = list(range(first.next, max(first.total, first.next + 1), PAGE_SIZE))
        for chunk in range(0, len(starts), BATCH_LIMIT):
            commands = {f"s{start}": (method, {**(params or {}), "start": start})
                        for start in starts[chunk:chunk + BATCH_LIMIT]}
            result = self.batch(commands)
            for name in commands:
                if name not in result.results:
                    error = result.errors.get(name) or {}
                    raise RetriableCRMError(
                        f"{method}: {error.get('error') or 'error'}: "
                        f"{error.get('error_description') or 'a page did not come back'}",
                        code=str(error.get("error") or ""))
                page = result.results[name]
                yield from (page.values() if isinstance(page, dict) else page or [])

    def list_all(self, method: str, *, filter: Mapping[str, Any] | None = None,
                 select: list[str] | None = None,
                 on_total: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
        """Every item, by the documented fast method (settings/performance/huge-data.md:
        order by ID, filter >ID, start=-1), 50 pages to a request: each `batch` chains 50
        pages, every page's `>ID` taken from the row 49 of the page before it by a
        `$result[pN][49][ID]` reference (batch.md). The very first page is asked with
        start=0, so its answer counts the rows once (`result_total`, passed to on_total):
        the list ends at the first page with fewer than 50 rows, or when a chain's last
        page brings the rows read to exactly that count (so that a count that is a
        multiple of a chain costs no request for an empty page). What the portal makes of
        the commands after the end (their reference points past the last row) is never
        read. A page that fails inside a batch ends that request's chain, and the next
        request resumes after the last row read."""
        def params(after: int | str, start: int = -1) -> dict[str, Any]:
            out: dict[str, Any] = {"order": {"ID": "ASC"},
                                   "filter": {**(filter or {}), ">ID": after}, "start": start}
            if select:  # the chain needs each page's last ID
                out["select"] = select if "ID" in select else [*select, "ID"]
            return out

        last_id = 0
        total: int | None = None
        read = 0
        failures = 0
        per_page = 0.0
        while True:
            length = self._chain_length(method, per_page)
            commands = {"p0": (method, params(last_id, 0 if total is None else -1))}
            for index in range(1, length):
                commands[f"p{index}"] = (
                    method, params(f"$result[p{index - 1}][{PAGE_SIZE - 1}][ID]"))
            result = self.batch(commands, halt=True)
            ran = sum(1 for name in commands if name in result.times)
            if ran and method in self._operating:
                per_page = self._operating[method][2] / ran
            if total is None and "p0" in result.results:
                total = result.totals.get("p0")
                if total is not None and on_total is not None:
                    on_total(total)
            for index in range(length):
                name = f"p{index}"
                if name not in result.results:
                    error = result.errors.get(name) or {}
                    if index == 0:
                        failures = self._first_page_failed(method, error, failures)
                    elif str(error.get("error") or "").upper() == "OPERATION_TIME_LIMIT":
                        known = self._operating.get(method, (0.0, None, 0.0))
                        self._operating[method] = (float("inf"), known[1], known[2])
                    break  # the chain broke here: resume after the last row read
                failures = 0
                page = result.results[name]
                rows = list(page.values()) if isinstance(page, dict) else list(page or [])
                yield from rows
                read += len(rows)
                if len(rows) < PAGE_SIZE:
                    return
                # The count ends the list only where reading on would cost a request, and
                # only when it came out exact: more rows than counted means some started to
                # match during the read, and as many counted ones may still lie ahead.
                if total is not None and read == total and index == length - 1:
                    return
                last_id = int(rows[-1]["ID"])

    def _chain_length(self, method: str, per_page: float) -> int:
        """How many pages the next chain may hold: as many as the method's operating time
        has room for at what a page took so far (all 50 while that is unknown); when not
        one page fits, wait for operating_reset_at first."""
        if per_page <= 0:
            return BATCH_LIMIT
        limit = self.settings.operating_limit_seconds
        known = self._operating.get(method)
        room = limit - known[0] if known is not None else limit
        if room < per_page:
            self._await_operating([method])
            room = limit  # assumed: the next answer says where the method stands
        length = max(1, min(BATCH_LIMIT, int(room // per_page)))
        if method in self._operating:
            operating, reset_at, _ = self._operating[method]
            # what this chain is expected to use, for the check before the request
            self._operating[method] = (operating, reset_at, per_page * length)
        return length

    def _first_page_failed(self, method: str, error: Mapping[str, Any] | None,
                           failures: int) -> int:
        """The first page of a chain failed inside its batch: wait and repeat it when the
        error says so (limits, operating time, a 5xx), up to max_retries; else raise."""
        body = dict(error or {"error": "", "error_description": "no result and no error"})
        code = str(body.get("error") or "").upper()
        decision = classify(500 if code in ("INTERNAL_SERVER_ERROR",
                                            "ERROR_UNEXPECTED_ANSWER") else 400, body,
                            now=self.clock(),
                            operating_reset_at=self._operating.get(method, (0.0, None))[1])
        message = f"{method}: {decision.code or 'error'}: {decision.detail}"
        if decision.action == "auth":
            raise CRMAuthError(message, code=decision.code)
        if decision.action != "retry":
            raise FatalCRMError(message, code=decision.code)
        if failures >= self.settings.max_retries:
            raise RetriableCRMError(message, code=decision.code, retry_after=decision.wait)
        if decision.code == "OPERATION_TIME_LIMIT":
            self._operating[method] = (float("inf"), self._operating.get(
                method, (0.0, None))[1] or self.clock() + (decision.wait or 60.0), 0.0)
        else:
            self.sleep(decision.wait or min(2.0 ** failures, 30.0))
        return failures + 1

    def confirm(self, access_token: str) -> None:
        """Whether an ONAPPINSTALL's token may become the app's credentials, asked of the
        configured portal (safe-event-handlers: check the install before keeping its
        application_token). It must be a token the portal knows, of this app (app.info's
        CODE is the client_id of a local app), and an administrator's: only an administrator
        installs an app, while any employee holds a token of this app (the AUTH_ID the card
        tab receives). CRMAuthError says which check failed."""
        info = self.call_as_user("app.info", access_token)
        code = str(info.get("CODE") or "") if isinstance(info, dict) else ""
        if code.startswith("local.") and code != self.settings.client_id:
            raise CRMAuthError("app.info: the install's token belongs to another application",
                               code="WRONG_APP")
        if self.call_as_user("user.admin", access_token) is not True:
            raise CRMAuthError("user.admin: the install's token is not a portal "
                               "administrator's (only an administrator installs an app)",
                               code="NOT_ADMIN")

    def call_as_user(self, method: str, access_token: str,
                     params: Mapping[str, Any] | None = None) -> Any:
        """One call with a user's own token (a widget's AUTH_ID) on the configured portal,
        never at a domain the request names. Not retried and never refreshed: the token is
        the user's, and the user waits for the answer. CRMAuthError when the portal does not
        know the token or it has expired."""
        try:
            body = self._once(method, f"{self.settings.rest_url}{method}.json",
                              {**(params or {}), "auth": access_token}, idempotent=True)
        except _ExpiredToken:
            raise CRMAuthError(f"{method}: the user's access token has expired",
                               code="EXPIRED_TOKEN") from None
        return body["result"]

    # -- the per-method operating time ---------------------------------------------------
    def _note_time(self, method: str, blocks: list[dict[str, Any]]) -> None:
        """Keep a method's `operating` (its execution time in the last 10 minutes, as of the
        last of `blocks`) and what this request used of it."""
        operating = _float_or_none(blocks[-1].get("operating"))
        reset_at = _float_or_none(blocks[-1].get("operating_reset_at"))
        if operating is None:
            return
        before = self._operating.get(method)
        spent = sum(_float_or_none(b.get("duration")) or 0.0 for b in blocks)
        if before is not None and before[0] != float("inf"):
            spent = max(spent, operating - before[0])
        else:  # at most all of it (other calls may share the window): err on the safe side
            spent = max(spent, operating)
        self._operating[method] = (operating, reset_at, max(spent, 0.0))

    def _await_operating(self, methods: list[str]) -> None:
        """limits.md: a method over its operating limit (480 s in 10 minutes by default) is
        blocked with OPERATION_TIME_LIMIT. Before a request that would bring a method to the
        limit (its operating plus what its last request used), wait for operating_reset_at,
        when the oldest minute of the window drops out."""
        limit = self.settings.operating_limit_seconds
        for method in dict.fromkeys(methods):
            known = self._operating.get(method)
            if known is None:
                continue
            operating, reset_at, spent = known
            if operating + spent <= limit:  # the portal blocks a method once over it
                continue
            wait = (reset_at - self.clock()) if reset_at is not None else 60.0
            if wait > 0:
                used = "all" if operating == float("inf") else f"{operating:.0f} s"
                log.warning("bitrix24 %s has used %s of its %.0f s of operating time; "
                            "waiting %.0f s for operating_reset_at", method, used, limit, wait)
                self.sleep(wait)
            # What the oldest minute took is unknown: the next answer says where it stands.
            del self._operating[method]

    # -- transport -------------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        refreshed = False
        for attempt in retrying(self.settings.max_retries, sleep=self.sleep):
            with attempt:
                url, auth = self._target(method)
                try:
                    return self._once(method, url, {**params, **auth}, idempotent=idempotent)
                except _ExpiredToken:
                    if refreshed or self.credentials is None:
                        raise CRMAuthError("access token expired and could not be refreshed",
                                           code="EXPIRED_TOKEN") from None
                    self._refresh(auth.get("auth"))
                    refreshed = True
                    url, auth = self._target(method)
                    return self._once(method, url, {**params, **auth}, idempotent=idempotent)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    @counted_call("bitrix24", lambda method, *_: method)
    def _once(self, method: str, url: str, payload: dict[str, Any], *,
              idempotent: bool) -> dict[str, Any]:
        self.limiter.acquire()
        self.calls += 1
        try:
            response = self.session.post(url, json=payload, timeout=self.settings.timeout_seconds)
        except requests.ConnectionError as exc:
            if not idempotent and not never_sent(exc):
                raise FatalCRMError(
                    f"{method}: connection lost; not repeated (it may have run)",
                    code="CONNECTION", message=N_("%(method)s: connection lost; not repeated "
                                                  "(it may have run)", method=method)) from None
            raise RetriableCRMError(
                f"{method}: cannot reach the portal ({type(exc).__name__})", code="CONNECTION",
                message=N_("%(method)s: cannot reach the portal (%(error)s)", method=method,
                           error=type(exc).__name__)) from None
        except requests.Timeout:
            if not idempotent:
                raise FatalCRMError(
                    f"{method}: timed out; not repeated (it may have run)", code="TIMEOUT",
                    message=N_("%(method)s: timed out; not repeated (it may have run)",
                               method=method)) from None
            raise RetriableCRMError(f"{method}: timed out", code="TIMEOUT",
                                    message=N_("%(method)s: timed out", method=method)) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("time"), dict):
            self._note_time(method, [body["time"]])
        decision = classify(response.status_code, body, now=self.clock(),
                            operating_reset_at=self._operating.get(method, (0.0, None))[1])
        if decision.action == "ok":
            return body  # type: ignore[no-any-return]
        message = f"{method}: {decision.code or 'error'}: {decision.detail}"
        if decision.action == "retry" and (idempotent or not decision.executed):
            if decision.code == "QUERY_LIMIT_EXCEEDED":
                self.limiter.pause(decision.wait or 1.0)
            log.warning("bitrix24 %s answered %s; will retry", method, decision.code)
            raise RetriableCRMError(message, code=decision.code, status=response.status_code,
                                    retry_after=decision.wait)
        if decision.action == "refresh":
            raise _ExpiredToken()
        if decision.action == "auth":
            raise CRMAuthError(message, code=decision.code, status=response.status_code)
        raise FatalCRMError(message, code=decision.code, status=response.status_code)

    def _target(self, method: str) -> tuple[str, dict[str, str]]:
        if self._webhook:
            return f"{self._webhook.rstrip('/')}/{method}.json", {}
        tokens = self._tokens()
        return f"{self.settings.rest_url}{method}.json", {"auth": tokens.access_token}

    def _tokens(self) -> Tokens:
        if self.credentials is None:
            raise CRMAuthError("bitrix24: neither webhook_url nor app credentials configured",
                               code="NO_AUTH")
        tokens = self.credentials.load()
        if tokens is None:
            raise CRMAuthError(f"bitrix24 {self.portal}: the app is not installed yet "
                               "(no ONAPPINSTALL received)", code="NOT_INSTALLED")
        if tokens.expiring(datetime.now(UTC)):
            tokens = self.credentials.refresh(tokens.access_token, self._refresh_grant)
        return tokens

    def _refresh(self, failed_token: str | None) -> None:
        assert self.credentials is not None
        self.credentials.refresh(failed_token, self._refresh_grant)

    @counted_call("bitrix24", lambda *_: "oauth/token")
    def _refresh_grant(self, refresh_token: str) -> Tokens:
        """GET oauth/token/?grant_type=refresh_token; the answer carries a new pair."""
        secret = self.settings.client_secret
        if not self.settings.client_id or secret is None:
            raise CRMAuthError("bitrix24: client_id/client_secret needed to refresh tokens",
                               code="NO_CLIENT")
        self.limiter.acquire_local()  # under the credential row's lock: see acquire_local
        self.calls += 1
        try:
            response = self.session.get(
                self.settings.oauth_url, timeout=self.settings.timeout_seconds,
                params={"grant_type": "refresh_token", "client_id": self.settings.client_id,
                        "client_secret": secret.get_secret_value(),
                        "refresh_token": refresh_token})
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise RetriableCRMError(f"oauth refresh failed ({type(exc).__name__})",
                                    code="OAUTH", message=N_("oauth refresh failed (%(error)s)",
                                                             error=type(exc).__name__)) from None
        if response.status_code != 200 or "access_token" not in body:
            code = str(body.get("error", "")).upper() if isinstance(body, dict) else ""
            if response.status_code >= 500:
                raise RetriableCRMError(f"oauth refresh: HTTP {response.status_code}",
                                        code=code)
            raise CRMAuthError(f"oauth refresh refused: {code or response.status_code}; "
                               "reinstall the app", code=code or "OAUTH")
        return tokens_from(body, endpoint=self.settings.rest_url)


class _ExpiredToken(Exception):
    """Internal signal: refresh the OAuth token and repeat once."""

    call_result = "token_expired"


def tokens_from(data: Mapping[str, Any], *, endpoint: str) -> Tokens:
    """Tokens from an OAuth answer or an ONAPPINSTALL `auth[...]` block, to be used at
    `endpoint` (the configured portal's: the block's own client_endpoint is not trusted)."""
    expires_in = _int_or_none(data.get("expires_in")) or 3600
    return Tokens(access_token=str(data["access_token"]),
                  refresh_token=data.get("refresh_token"),
                  expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
                  endpoint=endpoint,
                  member_id=data.get("member_id"),
                  application_token=data.get("application_token"))


def portal_of(webhook_url: str | None) -> str | None:
    return urlsplit(webhook_url).hostname if webhook_url else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
