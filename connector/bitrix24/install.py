"""`loyalty-connector install bitrix24`: contact fields, event handlers, robots, triggers,
the "Loyalty" tab in contact and deal cards.

Safe to run again: what exists is recognised, not duplicated. Event binding, robots,
triggers and the tab's placements need an application context; with an inbound webhook
those steps are printed as manual instructions instead: the outgoing webhook, a "Track
incoming webhook" trigger per transition (its code goes to bitrix24.triggers), and the
"Webhook" automation rule's URL.
"""

from __future__ import annotations

from typing import Any

from connector.bitrix24.robots import ROBOTS
from connector.bitrix24.tab import PLACEMENTS, TAB_PATH, TITLES
from connector.crm.bitrix24 import Bitrix24Client
from connector.errors import FatalCRMError
from connector.reports import InstallReport
from connector.services import Services
from connector.triggers import CODES, NAMES
from mappings.bitrix24 import EVENTS

# USER_TYPE_ID and labels of the contact fields (crm.contact.userfield.add).
FIELD_TYPES = {
    "balance": ("double", "Баллы лояльности", "Loyalty points"),
    "available": ("double", "Баллы к списанию", "Points available to spend"),
    "tier": ("string", "Уровень лояльности", "Loyalty tier"),
    "discount": ("double", "Скидка по программе, %", "Loyalty discount, %"),
    "expiring_points": ("double", "Сгорающие баллы", "Points expiring soon"),
    "expiring_date": ("date", "Дата сгорания баллов", "Points expire on"),
    "segment": ("string", "RFM-сегмент", "RFM segment"),
    "card": ("string", "Карта лояльности", "Loyalty card"),
    "card_url": ("url", "Страница карты лояльности", "Loyalty card page"),
    "referral_code": ("string", "Код «Приведи друга»", "Referral code"),
    "referred_by": ("string", "Пришёл по коду друга", "Referred by code"),
    "perks": ("string", "Привилегии уровня", "Tier perks"),
}
# Fields people (or web forms, robots) fill in; the rest only the connector writes.
USER_EDITED = ("referred_by",)
APP_ONLY = {"WRONG_AUTH_TYPE", "ACCESS_DENIED", "INVALID_CREDENTIALS"}
UF_PREFIX = "UF_CRM_"


class Bitrix24Installer:
    def __init__(self, services: Services, client: Bitrix24Client) -> None:
        self.services = services
        self.client = client
        self.settings = services.settings.bitrix24
        base = services.settings.server.public_url.rstrip("/")
        self.events_url = f"{base}/bitrix24/events"
        self.robots_url = f"{base}/bitrix24/robots"
        # The secret is the admin's to paste: install never prints it.
        self.actions_url = f"{base}/bitrix24/actions/<actions_secret>"
        self.tab_url = f"{base}{TAB_PATH}"
        self.webhook_mode = self.settings.webhook_url is not None

    def install(self) -> InstallReport:
        report = InstallReport()
        self._fields(report)
        if self.webhook_mode:
            self._manual_steps(report)
            return report
        try:
            self._events(report)
            self._robots(report)
            self._triggers(report)
            self._placements(report)
        except FatalCRMError as exc:
            if exc.code.upper() not in APP_ONLY:
                raise
            report.done.append(f"the portal refused an app-only method ({exc.code})")
            self._manual_steps(report)
        return report

    def uninstall(self) -> InstallReport:
        report = InstallReport()
        if not self.webhook_mode:
            for code in ROBOTS:
                if self._try("bizproc.robot.delete", {"CODE": code}):
                    report.done.append(f"removed robot {code}")
            for code in CODES:
                if self._try("crm.automation.trigger.delete", {"CODE": code}):
                    report.done.append(f"removed trigger {code}")
            for event in EVENTS:
                if self._try("event.unbind", {"event": event, "handler": self.events_url}):
                    report.done.append(f"unbound {event}")
            for placement in PLACEMENTS:
                if self._unbind_tab(placement):
                    report.done.append(f"removed tab {placement}")
        names = set(self.settings.fields.values())
        for existing in list(self.client.pages("crm.contact.userfield.list")):
            if existing.get("FIELD_NAME") in names:
                self.client.call("crm.contact.userfield.delete", {"id": existing["ID"]})
                report.done.append(f"removed contact field {existing['FIELD_NAME']}")
        deal_fields = {name for name, *_ in self.deal_fields()}
        for existing in list(self.client.pages("crm.deal.userfield.list")):
            if existing.get("FIELD_NAME") in deal_fields:
                self.client.call("crm.deal.userfield.delete", {"id": existing["ID"]})
                report.done.append(f"removed deal field {existing['FIELD_NAME']}")
        return report

    def _try(self, method: str, params: dict[str, Any]) -> bool:
        try:
            self.client.call(method, params)
        except FatalCRMError:
            return False  # already gone
        return True

    def _unbind_tab(self, placement: str) -> bool:
        try:
            found = self.client.call("placement.unbind", {"PLACEMENT": placement,
                                                          "HANDLER": self.tab_url}).result
        except FatalCRMError:
            return False
        return isinstance(found, dict) and bool(found.get("count"))

    def _fields(self, report: InstallReport) -> None:
        existing = {item.get("FIELD_NAME")
                    for item in self.client.pages("crm.contact.userfield.list")}
        for key, name in self.settings.fields.items():
            if name in existing:
                report.done.append(f"contact field {name} exists")
                continue
            kind, ru, en = FIELD_TYPES[key]
            label = {"ru": ru, "en": en}
            self.client.call("crm.contact.userfield.add", {"fields": {
                "FIELD_NAME": name.removeprefix(UF_PREFIX), "USER_TYPE_ID": kind,
                "XML_ID": f"LOYALTY_{key.upper()}", "EDIT_FORM_LABEL": label,
                "LIST_COLUMN_LABEL": label, "LIST_FILTER_LABEL": label, "SHOW_FILTER": "Y",
                "EDIT_IN_LIST": "Y" if key in USER_EDITED else "N"}})
            report.done.append(f"created contact field {name} ({kind})")
        self._deal_field(report)

    def deal_fields(self) -> list[tuple[str, str, str, dict[str, str]]]:
        """(name, type, XML_ID, label) of the deal fields the connector reads: promo_code
        (read when the deal is won) and nps (a 0-10 answer, read on every deal event); ''
        in the settings leaves one out."""
        fields = [(self.settings.promo_code_field, "string", "LOYALTY_PROMO_CODE",
                   {"ru": "Промокод", "en": "Promo code"}),
                  (self.settings.nps_field, "integer", "LOYALTY_NPS",
                   {"ru": "Оценка NPS (0-10)", "en": "NPS score (0-10)"})]
        return [field for field in fields if field[0]]

    def _deal_field(self, report: InstallReport) -> None:
        """The deal fields managers or web forms fill (crm.deal.userfield.add, the contact
        variant's format)."""
        wanted = self.deal_fields()
        if not wanted:
            return
        existing = {item.get("FIELD_NAME") for item in
                    self.client.pages("crm.deal.userfield.list")}
        for name, kind, xml_id, label in wanted:
            if name in existing:
                report.done.append(f"deal field {name} exists")
                continue
            self.client.call("crm.deal.userfield.add", {"fields": {
                "FIELD_NAME": name.removeprefix(UF_PREFIX), "USER_TYPE_ID": kind,
                "XML_ID": xml_id, "EDIT_FORM_LABEL": label,
                "LIST_COLUMN_LABEL": label, "LIST_FILTER_LABEL": label, "SHOW_FILTER": "Y",
                "EDIT_IN_LIST": "Y"}})
            report.done.append(f"created deal field {name} ({kind})")

    def _events(self, report: InstallReport) -> None:
        bound = {(str(item.get("event", "")).upper(), item.get("handler"))
                 for item in self.client.call("event.get", {}).result or []}
        for event in EVENTS:
            if (event, self.events_url) in bound:
                report.done.append(f"event {event} already bound")
                continue
            self.client.call("event.bind", {"event": event, "handler": self.events_url})
            report.done.append(f"bound {event} -> {self.events_url}")

    def _robots(self, report: InstallReport) -> None:
        existing = set(self.client.call("bizproc.robot.list", {}).result or [])
        for code, definition in ROBOTS.items():
            if code in existing:
                report.done.append(f"robot {code} exists")
                continue
            self.client.call("bizproc.robot.add", {
                "CODE": code, "HANDLER": self.robots_url, "USE_SUBSCRIPTION": "Y",
                "DOCUMENT_TYPE": ["crm", "CCrmDocumentDeal", "DEAL"], **definition})
            report.done.append(f"registered robot {code}")

    def _triggers(self, report: InstallReport) -> None:
        existing = {item.get("CODE") for item in
                    self.client.call("crm.automation.trigger.list", {}).result or []}
        for code in CODES:
            if code in existing:
                report.done.append(f"trigger {code} exists")
                continue
            self.client.call("crm.automation.trigger.add", {"CODE": code, "NAME": NAMES[code]})
            report.done.append(f"registered trigger {code}")

    def _placements(self, report: InstallReport) -> None:
        bound = {(item.get("placement"), item.get("handler"))
                 for item in self.client.call("placement.get", {}).result or []}
        for placement in PLACEMENTS:
            if (placement, self.tab_url) in bound:
                report.done.append(f"tab {placement} exists")
                continue
            # A repeat after a lost answer would be refused as "already binded": sent once.
            self.client.call("placement.bind", {
                "PLACEMENT": placement, "HANDLER": self.tab_url, "TITLE": TITLES["en"],
                "LANG_ALL": {lang: {"TITLE": title} for lang, title in TITLES.items()}},
                idempotent=False)
            report.done.append(f"registered tab {placement} -> {self.tab_url}")

    def _manual_steps(self, report: InstallReport) -> None:
        events = ", ".join(e for e in EVENTS if not e.startswith("ONAPP"))
        report.manual += [
            "Developer resources > Other > Outgoing webhook: handler URL "
            f"{self.events_url}, events {events}.",
            "Copy the webhook's application token into LOYALTY_BITRIX24__APPLICATION_TOKEN "
            "(bitrix24.application_token) and restart the service.",
            "The Loyalty tab in contact and deal cards needs an application: create a "
            "local app (client_id, client_secret) with the crm, bizproc and placement "
            "scopes (its robots need bizproc) and run install again with it.",
        ]
        self._trigger_codes(report)
        self._webhook_robot(report)

    def _trigger_codes(self, report: InstallReport) -> None:
        """A webhook cannot register triggers: each transition fires a trigger the admin adds
        in the portal, by the code Bitrix24 generates for it (crm.automation.trigger)."""
        configured = self.settings.triggers
        for code in CODES:
            if code in configured:
                report.done.append(f"trigger {code} fires the portal trigger with code "
                                   f"{configured[code].code}")
        missing = [code for code in CODES if code not in configured]
        if not missing:
            return
        report.manual.append(
            "Triggers: CRM > Deals > Automation rules; on the stage a mailing starts from, "
            "under Triggers click + and choose \"Track incoming webhook\"; the URL it shows "
            "ends in code=...: paste that code into config.toml as below and restart the "
            "service.")
        report.manual += [f"{NAMES[code]}: [bitrix24.triggers.{code}] code = \"...\""
                          for code in missing]

    def _webhook_robot(self, report: InstallReport) -> None:
        if self.settings.actions_secret is None:
            report.manual.append(
                "Robots without an app: set bitrix24.actions_secret (16+ letters and digits, "
                "LOYALTY_BITRIX24__ACTIONS_SECRET) and run install again for the URL of the "
                "\"Webhook\" automation rule.")
            return
        report.manual.append(
            "Robots: CRM > Deals > Automation rules; on a stage click + (add automation rule) "
            f"and choose \"Webhook\"; as its URL give {self.actions_url}/accrue, "
            f"{self.actions_url}/bonus/<name> or {self.actions_url}/redeem/<points|max>, "
            "followed by ?deal_id={{ID}} (insert the deal's ID field). The outcome is written "
            "to the deal's timeline.")
