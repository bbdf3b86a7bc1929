"""Authorizing the connector in an amoCRM account (OAuth 2.0, authorization code).

The connector starts every authorization: `install amocrm` and `doctor` print the link
https://www.amocrm.ru/oauth?client_id=...&state=...&mode=post_message with a fresh `state`
(single-use, 30 minutes; see connector.crm.oauth_states). amoCRM sends the administrator back
to the redirect URI with `code`, `state` and `referer` (the account's host, e.g.
example.amocrm.ru), sometimes also `client_id`, `from_widget` and `platform`. Tokens are kept
only for a state issued here, the configured integration and the configured account; any
other callback is refused and changes nothing. That includes a code sent without our state
(amoCRM's own install button, `from_widget`): anyone holding such a code could otherwise
replace the stored tokens with another account's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlencode

from connector.config import AmoCRMSettings
from connector.crm.oauth_states import LIFETIME
from connector.errors import CRMError
from connector.services import Services

log = logging.getLogger(__name__)
CRM = "amocrm"
AUTHORIZE_URL = "https://www.amocrm.ru/oauth"
# post_message: amoCRM redirects in the window the link was opened in (popup would redirect
# the opener, and a link pasted from a terminal has none).
MODE = "post_message"


class Refused(Exception):
    """A callback the connector does not act on: HTTP `status`, a stable `code`, `detail`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def uses_oauth(settings: AmoCRMSettings) -> bool:
    return settings.enabled and settings.long_lived_token is None


def needs_authorization(services: Services) -> bool:
    """OAuth is configured, and there are no tokens yet or they were revoked."""
    if not uses_oauth(services.settings.amocrm):
        return False
    state = services.amocrm_credentials.status()
    return state is None or state[0] == "revoked"


def authorization_url(services: Services) -> str:
    """The consent link for the configured integration, with a state issued just now."""
    settings = services.settings.amocrm
    state = services.oauth_states.issue(CRM, settings.portal_key)
    return f"{AUTHORIZE_URL}?" + urlencode({"client_id": settings.client_id or "",
                                            "state": state, "mode": MODE})


def authorize_hint(services: Services) -> str:
    minutes = int(LIFETIME.total_seconds() // 60)
    return (f"open {authorization_url(services)} as an account administrator and allow access "
            f"(the link works once, within {minutes} minutes)")


def same_account(referer: str, settings: AmoCRMSettings) -> bool:
    """amoCRM's `referer` is the account's host, and must be the configured account's: the
    host of base_url (https://example.amocrm.ru), or, when base_url leads elsewhere (a
    proxy), amocrm.subdomain on amocrm.ru. Exact: `example.amocrm.ru.evil.ru` is not it."""
    subdomain = settings.account_subdomain.lower()
    host = settings.portal_key if settings.portal_key.startswith(f"{subdomain}.") \
        else f"{subdomain}.amocrm.ru"
    return referer.strip().lower() == host


def authorize(services: Services, args: Mapping[str, str]) -> int:
    """Act on the redirect URI's query: check it, trade the code for tokens, keep them and
    make the events that waited on the old credentials due now (their count is returned).
    Raises Refused, having changed nothing unless the state was valid."""
    settings = services.settings.amocrm
    connector = services.amocrm
    if connector is None or not uses_oauth(settings):
        raise Refused(400, "invalid_request", "amocrm OAuth is not configured here")
    if args.get("error"):
        raise Refused(400, "access_denied", "access was not allowed in amoCRM; run "
                                            "`loyalty-connector doctor` for a new link")
    code, state = args.get("code", ""), args.get("state", "")
    if not code:
        raise Refused(400, "invalid_request", "expected ?code=...&state=...&referer=...")
    if args.get("client_id") not in (None, settings.client_id):
        raise Refused(403, "wrong_integration", "client_id is not this integration's")
    if not same_account(args.get("referer", ""), settings):
        raise Refused(403, "wrong_account", "referer is not the configured amoCRM account")
    if not state or not services.oauth_states.consume(CRM, settings.portal_key, state):
        raise Refused(403, "invalid_state", "unknown, expired or already used state; start "
                                            "the authorization with `loyalty-connector "
                                            "doctor` or `install amocrm`")
    try:
        tokens = connector.client.exchange_code(code)
    except CRMError as exc:
        raise Refused(400, "authorization_failed", exc.detail) from None
    services.amocrm_credentials.save(tokens)
    woken = services.inbox.wake_deferred(CRM, settings.portal_key)
    log.info("amocrm authorized for %s; %d deferred event(s) due now", settings.portal_key,
             woken)
    return woken
