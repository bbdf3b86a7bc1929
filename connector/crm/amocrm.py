"""The one way out to an amoCRM account (API v4): auth, the 7 requests/s limit, retries.

Auth is a long-lived token, or OAuth 2.0 whose refresh tokens are single-use: a refresh runs
under the credential row's lock and the new pair is committed before it is used, so two
workers never spend the same refresh token. 429 and 403 answers are HTML, not JSON, so they
are read by status: 429 backs off hard, 403 (the account blocked for abuse) stops all calls.
A POST creates something (a note, a Salesbot run): after a timeout, a dropped connection or a
5xx it may have run, so it is repeated only when amoCRM surely did not run it (the connection
was never made, or the gateway refused it with 429), as the Bitrix24 client does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import requests

from connector.config import AmoCRMSettings
from connector.crm.credentials import CredentialStore, Tokens
from connector.crm.limiter import LeakyBucket, Limiter
from connector.crm.retry import never_sent, retrying
from connector.errors import CRMAuthError, FatalCRMError, RetriableCRMError
from connector.i18n import N_
from connector.metrics import Metrics, counted_call, rest_route

log = logging.getLogger(__name__)
PAGE_LIMIT = 250
BACKOFF_429_S = 5.0  # no Retry-After is sent; repeated 429s block the account
# POSTs that are safe to repeat: "an existing webhook with that address is updated".
IDEMPOTENT_POSTS = frozenset({"/api/v4/webhooks"})


@dataclass(frozen=True)
class Decision:
    action: Literal["ok", "retry", "refresh", "auth", "fatal"]
    detail: str = ""
    wait: float | None = None
    executed: bool = True  # False: refused before running, safe to repeat any call


def classify(status: int, body: Any) -> Decision:
    """What an amoCRM answer means, by status first (429/403 bodies are nginx HTML)."""
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("title") or "")
    if status in (200, 201, 202, 204):
        return Decision("ok")
    if status == 429:
        return Decision("retry", "too many requests (429)", wait=BACKOFF_429_S,
                        executed=False)
    if status == 401:
        return Decision("refresh", detail or "unauthorized (401)")
    if status == 403:
        return Decision("auth", "forbidden (403): the account may be blocked for exceeding the "
                                "rate limit, or the IP is not allowed; contact amoCRM support")
    if status == 402:
        return Decision("auth", "payment required (402): the subscription has ended")
    if status >= 500:
        return Decision("retry", detail or f"server error ({status})")
    return Decision("fatal", detail or f"unexpected answer ({status})")


class AmoCRMClient:
    def __init__(self, settings: AmoCRMSettings, *, credentials: CredentialStore | None = None,
                 limiter: Limiter | None = None, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.credentials = credentials
        self.metrics = metrics
        self.limiter: Limiter = limiter or LeakyBucket.under(
            settings.requests_per_second, settings.burst, sleep=sleep,
            on_wait=metrics.limiter_waited("amocrm") if metrics else None)
        self.session = session or requests.Session()
        self.sleep = sleep
        self.base = (settings.base_url or "").rstrip("/")
        self.calls = 0

    # -- calls -----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, idempotent: bool | None = None) -> Any:
        """The decoded body; None for 204 (an empty list, or an entity that is gone).
        `idempotent` defaults to False for a POST (see the module doc), True otherwise."""
        if idempotent is None:
            idempotent = method.upper() != "POST" or path in IDEMPOTENT_POSTS
        refreshed = False
        for attempt in retrying(self.settings.max_retries, sleep=self.sleep):
            with attempt:
                try:
                    return self._once(method, path, params, json, idempotent)
                except _Unauthorized as exc:
                    if refreshed or self.settings.long_lived_token is not None \
                            or self.credentials is None:
                        raise CRMAuthError(f"amocrm: {exc.detail}; renew the token or "
                                           "re-authorize the integration", status=401) from None
                    self.credentials.refresh(exc.token, self._refresh_grant)
                    refreshed = True
                    return self._once(method, path, params, json, idempotent)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def pages(self, path: str, key: str, params: Mapping[str, Any] | None = None
              ) -> Iterator[list[dict[str, Any]]]:
        """Page by page (limit 250) until there is no next link or the answer is 204."""
        page = 1
        while True:
            body = self.request("GET", path, params={**(params or {}), "page": page,
                                                     "limit": PAGE_LIMIT})
            if not body:
                return
            items = (body.get("_embedded") or {}).get(key) or []
            yield items
            if not items or "next" not in (body.get("_links") or {}):
                return
            page += 1

    # -- transport -------------------------------------------------------------------------
    @counted_call("amocrm", rest_route)
    def _once(self, method: str, path: str, params: Mapping[str, Any] | None,
              json: Any, idempotent: bool = True) -> Any:
        token = self._token()
        self.limiter.acquire()
        self.calls += 1
        try:
            response = self.session.request(
                method, f"{self.base}{path}", params=params, json=json,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.settings.timeout_seconds)
        except requests.ConnectionError as exc:  # also ConnectTimeout: never sent
            # The English `detail` is the message's own text: logs and doctor say the same.
            call = f"amocrm {method} {path}"
            if not idempotent and not never_sent(exc):
                lost = N_("%(call)s: connection lost; not repeated (it may have run)",
                          call=call)
                raise FatalCRMError(str(lost), code="CONNECTION", message=lost) from None
            unreachable = N_("%(call)s: cannot reach the account (%(error)s)", call=call,
                             error=type(exc).__name__)
            raise RetriableCRMError(str(unreachable), code="CONNECTION",
                                    message=unreachable) from None
        except requests.Timeout as exc:  # a read timeout: the request went out
            call = f"amocrm {method} {path}"
            if not idempotent:
                unsure = N_("%(call)s: timed out; not repeated (it may have run)", call=call)
                raise FatalCRMError(str(unsure), code="TIMEOUT", message=unsure) from None
            timed_out = N_("%(call)s: timed out (%(error)s)", call=call,
                           error=type(exc).__name__)
            raise RetriableCRMError(str(timed_out), code="TIMEOUT", message=timed_out) from None
        body: Any = None
        if response.content and "json" in response.headers.get("Content-Type", ""):
            try:
                body = response.json()
            except ValueError:
                body = None
        decision = classify(response.status_code, body)
        if decision.action == "ok":
            return body
        message = f"amocrm {method} {path}: {decision.detail}"
        if decision.action == "retry" and (idempotent or not decision.executed):
            if response.status_code == 429:
                self.limiter.pause(decision.wait or BACKOFF_429_S)
            log.warning("%s; will retry", message)
            raise RetriableCRMError(message, status=response.status_code,
                                    retry_after=decision.wait)
        if decision.action == "refresh":
            raise _Unauthorized(decision.detail, token)
        if decision.action == "auth":
            raise CRMAuthError(message, status=response.status_code)
        if decision.action == "retry":
            message += "; not repeated (it may have run)"
        raise FatalCRMError(message, status=response.status_code, body=body)

    def _token(self) -> str:
        if self.settings.long_lived_token is not None:
            return self.settings.long_lived_token.get_secret_value()
        if self.credentials is None:
            raise CRMAuthError("amocrm: no long_lived_token and no OAuth credentials")
        tokens = self.credentials.load()
        if tokens is None:
            raise CRMAuthError("amocrm: not authorized yet: `loyalty-connector doctor` prints "
                               "the authorization link")
        if tokens.expiring(datetime.now(UTC)):
            tokens = self.credentials.refresh(tokens.access_token, self._refresh_grant)
        return tokens.access_token

    def exchange_code(self, code: str) -> Tokens:
        """The OAuth callback: trade an authorization code (valid 20 minutes) for tokens."""
        return self._grant({"grant_type": "authorization_code", "code": code})

    def _refresh_grant(self, refresh_token: str) -> Tokens:
        return self._grant({"grant_type": "refresh_token", "refresh_token": refresh_token})

    @counted_call("amocrm", lambda *_: "POST /oauth2/access_token")
    def _grant(self, grant: dict[str, str]) -> Tokens:
        secret = self.settings.client_secret
        if not self.settings.client_id or secret is None:
            raise CRMAuthError("amocrm: client_id and client_secret are needed for OAuth")
        payload = {"client_id": self.settings.client_id,
                   "client_secret": secret.get_secret_value(),
                   "redirect_uri": self.settings.redirect_uri, **grant}
        self.limiter.acquire_local()  # under the credential row's lock: see acquire_local
        self.calls += 1
        try:
            response = self.session.post(f"{self.base}/oauth2/access_token", json=payload,
                                         timeout=self.settings.timeout_seconds)
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise RetriableCRMError(f"amocrm oauth: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise RetriableCRMError(f"amocrm oauth: server error ({response.status_code})")
        if response.status_code != 200 or not isinstance(body, dict) \
                or "access_token" not in body:
            hint = body.get("hint") or body.get("detail") if isinstance(body, dict) else ""
            raise CRMAuthError(f"amocrm oauth refused ({response.status_code}): {hint}; "
                               "re-authorize the integration")
        access, refresh, lifetime = (body.get("access_token"), body.get("refresh_token"),
                                     str(body.get("expires_in", 86400)))
        if not (isinstance(access, str) and access and isinstance(refresh, str) and refresh
                and lifetime.isdigit() and len(lifetime) <= 9):
            raise CRMAuthError("amocrm oauth: the answer holds no usable token pair; "
                               "re-authorize the integration")
        return Tokens(access_token=access, refresh_token=refresh,
                      expires_at=datetime.now(UTC) + timedelta(seconds=int(lifetime)),
                      endpoint=self.base)


class _Unauthorized(Exception):
    call_result = "token_expired"

    def __init__(self, detail: str, token: str) -> None:
        self.detail = detail
        self.token = token
