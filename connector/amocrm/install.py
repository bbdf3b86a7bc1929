"""`loyalty-connector install amocrm`: contact custom fields and the account webhook.

Safe to run again: fields are recognised by code, and POST /api/v4/webhooks updates a hook
with the same destination instead of adding a second one.
"""

from __future__ import annotations

from typing import Any

from connector.config import Settings
from connector.crm.amocrm import AmoCRMClient
from connector.reports import InstallReport
from connector.services import Services

# type, name of each contact field; managers read them, only the API writes them.
FIELD_TYPES = {
    "balance": ("numeric", "Баллы лояльности"),
    "available": ("numeric", "Баллы к списанию"),
    "tier": ("text", "Уровень лояльности"),
    "discount": ("numeric", "Скидка по программе, %"),
    "expiring_points": ("numeric", "Сгорающие баллы"),
    "expiring_date": ("date", "Дата сгорания баллов"),
    "segment": ("text", "RFM-сегмент"),
    "card": ("text", "Карта лояльности"),
    "card_url": ("url", "Страница карты лояльности"),
    "referral_code": ("text", "Код «Приведи друга»"),
    "referred_by": ("text", "Пришёл по коду друга"),
    "perks": ("text", "Привилегии уровня"),
}
# Fields managers (or forms, the Salesbot) fill in; the rest only the API writes.
USER_EDITED = ("referred_by",)
HOOK_EVENTS = ["add_lead", "update_lead", "status_lead", "delete_lead", "restore_lead",
               "add_contact", "update_contact"]


def hook_events(settings: Settings) -> list[str]:
    """The webhook's events: a deleted contact matters only when it is to be erased."""
    erase = settings.privacy.erase_on_contact_delete
    return HOOK_EVENTS + (["delete_contact"] if erase else [])


class AmoCRMInstaller:
    def __init__(self, services: Services, client: AmoCRMClient) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.amocrm
        secret = self.settings.webhook_secret
        base = services.settings.server.public_url.rstrip("/")
        self.destination = f"{base}/amocrm/webhooks/{secret.get_secret_value() if secret else ''}"

    def fields(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for page in self.client.pages("/api/v4/contacts/custom_fields", "custom_fields"):
            found.update({f["code"]: f for f in page if f.get("code")})
        return found

    def install(self) -> InstallReport:
        report = InstallReport()
        existing = self.fields()
        missing = []
        for key, code in self.settings.fields.items():
            if code in existing:
                report.done.append(f"contact field {code} exists")
                continue
            kind, name = FIELD_TYPES[key]
            missing.append({"name": name, "type": kind, "code": code,
                            "is_api_only": key not in USER_EDITED,
                            "sort": 500 + len(missing)})
        if missing:
            self.client.request("POST", "/api/v4/contacts/custom_fields", json=missing)
            report.done += [f"created contact field {f['code']} ({f['type']})" for f in missing]
        self._lead_field(report)
        events = hook_events(self.services.settings)
        self.client.request("POST", "/api/v4/webhooks", json={
            "destination": self.destination, "settings": events, "sort": 10})
        report.done.append(f"webhook {', '.join(events)} -> "
                           f"{self.destination.rsplit('/', 1)[0]}/<webhook_secret>")
        actions = f"{self.destination.rsplit('/webhooks/', 1)[0]}/actions/<webhook_secret>"
        report.manual.append("Digital pipeline (optional): add the stage action "
                             f"\"send webhook\" with {actions}/bonus/<name>, "
                             f"{actions}/redeem/<points|max>, {actions}/referral/<code> or "
                             f"{actions}/promo/<code>, {actions}/nps/<0-10> "
                             "(amocrm.webhook_secret).")
        return report

    def lead_fields(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for page in self.client.pages("/api/v4/leads/custom_fields", "custom_fields"):
            found.update({f["code"]: f for f in page if f.get("code")})
        return found

    def wanted_lead_fields(self) -> list[tuple[str, str, str]]:
        """(code, type, name) of the lead fields the connector reads: promo_code (read when
        the lead is won) and nps (a 0-10 answer, read on every lead event)."""
        fields = [(self.settings.promo_code_field, "text", "Промокод"),
                  (self.settings.nps_field, "numeric", "Оценка NPS (0-10)")]
        return [field for field in fields if field[0]]

    def _lead_field(self, report: InstallReport) -> None:
        """The lead fields managers, forms or the Salesbot fill."""
        wanted = self.wanted_lead_fields()
        if not wanted:
            return
        existing = self.lead_fields()
        missing = []
        for code, kind, name in wanted:
            if code in existing:
                report.done.append(f"lead field {code} exists")
                continue
            missing.append({"name": name, "type": kind, "code": code, "is_api_only": False,
                            "sort": 510 + len(missing)})
        if missing:
            self.client.request("POST", "/api/v4/leads/custom_fields", json=missing)
            report.done += [f"created lead field {f['code']} ({f['type']})" for f in missing]

    def uninstall(self) -> InstallReport:
        report = InstallReport()
        hooks = self.client.request("GET", "/api/v4/webhooks") or {}
        if any(h.get("destination") == self.destination
               for h in (hooks.get("_embedded") or {}).get("webhooks") or []):
            self.client.request("DELETE", "/api/v4/webhooks",
                                json={"destination": self.destination})
            report.done.append("removed the account webhook")
        existing = self.fields()
        for code in self.settings.fields.values():
            if code in existing:
                self.client.request("DELETE",
                                    f"/api/v4/contacts/custom_fields/{existing[code]['id']}")
                report.done.append(f"removed contact field {code}")
        existing_leads = self.lead_fields()
        for code, *_ in self.wanted_lead_fields():
            if (field := existing_leads.get(code)) is not None:
                self.client.request("DELETE", f"/api/v4/leads/custom_fields/{field['id']}")
                report.done.append(f"removed lead field {code}")
        return report
