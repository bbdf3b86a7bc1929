"""Whether each enabled CRM can be called, from its stored credentials: one judgement for
GET /healthz and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from connector.services import Services


@dataclass(frozen=True)
class CRMStatus:
    crm: str
    ok: bool
    detail: str


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
            found.append(CRMStatus(crm, False, f"revoked: {state[1] or 'no reason given'}"))
        elif uses_oauth and state is None:
            found.append(CRMStatus(crm, False, "not authorized yet: install the app / open "
                                               "the authorization link"))
        else:
            found.append(CRMStatus(crm, True, "OAuth tokens active" if uses_oauth
                                   else "static credentials (no OAuth)"))
    return found
