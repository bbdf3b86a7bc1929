"""Whether each enabled CRM can be called, from its stored credentials: one judgement for
GET /healthz and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass, field

from connector.i18n import N_, Message
from connector.services import Services


@dataclass(frozen=True)
class CRMStatus:
    """`detail` in English (GET /healthz, language-neutral); `text` the same, marked for the
    dashboard to show in the program's language."""

    crm: str
    ok: bool
    detail: str
    text: Message = field(compare=False, repr=False)


def _status(crm: str, ok: bool, text: Message) -> CRMStatus:
    return CRMStatus(crm, ok, str(text), text)


def crm_statuses(services: Services) -> list[CRMStatus]:
    """Each enabled CRM's stored credentials. Revoked credentials stop every call to that CRM
    until an admin re-authorizes; an OAuth setup without tokens has not been authorized."""
    b24, amo = services.settings.bitrix24, services.settings.amocrm
    found = []
    for crm, enabled, uses_oauth, store in (
            ("bitrix24", b24.enabled, b24.webhook_url is None, services.bitrix24_credentials),
            ("amocrm", amo.enabled, amo.long_lived_token is None, services.amocrm_credentials)):
        if not enabled:
            continue
        state = store.status()
        if state and state[0] == "revoked":
            found.append(_status(crm, False, N_("revoked: %(reason)s", reason=state[1]) if
                                 state[1] else N_("revoked: no reason given")))
        elif uses_oauth and state is None:
            found.append(_status(crm, False, N_("not authorized yet: install the app / open "
                                                "the authorization link")))
        else:
            found.append(_status(crm, True, N_("OAuth tokens active") if uses_oauth
                                 else N_("static credentials (no OAuth)")))
    return found
