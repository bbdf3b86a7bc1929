"""The two simulated CRMs of the demo, each with what an admin would set up in it by hand.

Each plays its CRM's side of the story through the CRM's own channels: a change in the
simulator is posted to the service as the real CRM posts it (Bitrix24's outgoing webhook
events, amoCRM's account webhook), a robot / pipeline action calls the service's URL, and what
the CRM shows is read back from the simulator's own records of the connector's calls.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import requests

from connector.i18n import N_, Translator
from connector.sandbox import FakeBitrix24Portal
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from connector.triggers import CODES
from mappings.bitrix24 import EVENTS

FORM = "application/x-www-form-urlencoded"
TIMEOUT = 10.0
# The loyalty fields a step shows, in this order (keys of [bitrix24.fields] / [amocrm.fields]).
SHOWN = ("balance", "available", "tier", "discount", "card")
# amoCRM's entities a tag goes on, as a line of the story names them.
ENTITIES = {"contacts": N_("contact"), "leads": N_("lead")}


@dataclass(frozen=True)
class Seeded:
    """Who the story is about: the customer, her deals (won in turn), the deal the robot runs
    on, and the other contacts the CRM holds."""

    customer: int
    customer_name: str
    first_deal: int
    second_deal: int
    robot_deal: int
    others: tuple[int, ...]
    deals: int  # open deals (leads) seeded, hers and the others'


class SimulatedCRM(ABC):
    crm: str  # the story's sentences name its place and deals in words of their own (TEXTS)

    def __init__(self) -> None:
        self.http = requests.Session()

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @property
    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def settings(self, public_url: str) -> dict[str, Any]:
        """The CRM's section of the settings, as an admin would fill it in."""

    @abstractmethod
    def admin_steps(self, public_url: str, t: Translator) -> list[str]:
        """What an admin does in the CRM after `install`; done here, described in return."""

    @abstractmethod
    def seed(self) -> Seeded: ...

    @abstractmethod
    def win(self, deal: int) -> None:
        """A manager moves the deal to the won stage."""

    @abstractmethod
    def run_robot(self, public_url: str, deal: int, points: int) -> None:
        """The stage's automation calls the connector to redeem `points` on the deal."""

    @abstractmethod
    def deliver(self) -> int:
        """Post what the CRM has to send (its events / webhooks); how many."""

    @abstractmethod
    def fields(self, contact: int, names: dict[str, str]) -> dict[str, Any]:
        """The contact's loyalty fields as the CRM shows them, by key."""

    @abstractmethod
    def triggers(self, t: Translator) -> list[str]:
        """The automation the connector set off, one line each, oldest first; the code or
        tag as the CRM holds it (the story looks for it in the line)."""

    @abstractmethod
    def robot_outcome(self, deal: int) -> list[str]:
        """What the robot's outcome wrote on the deal (timeline comment / lead note)."""

    def close(self) -> None:
        self.http.close()


class SimulatedBitrix24(SimulatedCRM):
    """A Bitrix24 portal connected by an inbound webhook, as in README's webhook setup."""

    crm = "bitrix24"

    def __init__(self) -> None:
        super().__init__()
        self.portal = FakeBitrix24Portal()
        self.actions_secret = secrets.token_hex(12)
        # The codes Bitrix24 would generate for the admin's "Track incoming webhook" triggers.
        self.trigger_codes = {code: f"demo{n:02d}" for n, code in enumerate(CODES)}

    def start(self) -> None:
        self.portal.start()

    def stop(self) -> None:
        self.portal.stop()

    @property
    def url(self) -> str:
        return self.portal.url

    def settings(self, public_url: str) -> dict[str, Any]:
        return {"enabled": True, "webhook_url": self.portal.webhook_url,
                "portal": self.portal.url, "member_id": self.portal.member_id,
                "application_token": self.portal.application_token,
                "actions_secret": self.actions_secret,
                "triggers": {code: {"code": value} for code, value in self.trigger_codes.items()}}

    def admin_steps(self, public_url: str, t: Translator) -> list[str]:
        events = [e for e in EVENTS if not e.startswith("ONAPP")]
        for event in events:
            self.portal.bind_event(event, f"{public_url}/bitrix24/events")
        for code in self.trigger_codes.values():
            self.portal.add_webhook_trigger(code)
        events_url = f"{public_url}/bitrix24/events"
        actions_url = f"{public_url}/bitrix24/actions/<secret>/redeem/..."
        return [t.ngettext("outgoing webhook: %(num)d event -> %(url)s",
                           "outgoing webhook: %(num)d events -> %(url)s", len(events),
                           url=events_url),
                t.ngettext("%(num)d \"Track incoming webhook\" trigger, its code in "
                           "[bitrix24.triggers]",
                           "%(num)d \"Track incoming webhook\" triggers, their codes in "
                           "[bitrix24.triggers]", len(self.trigger_codes)),
                t._("\"Webhook\" automation rule -> %(url)s", url=actions_url)]

    def seed(self) -> Seeded:
        anna = self.portal.add_contact(NAME="Anna", LAST_NAME="Smirnova",
                                       PHONE="+79990000001")
        others = (self.portal.add_contact(NAME="Boris", LAST_NAME="Ivanov"),
                  self.portal.add_contact(NAME="Vera", LAST_NAME="Orlova"))
        deal = self._open_deal
        seeded = Seeded(anna, "Anna Smirnova", deal(anna, "12000.00", "Sofa"),
                        deal(anna, "25000.00", "Kitchen"), deal(anna, "2000.00", "Lamp"), others,
                        deals=4)
        deal(others[0], "4500.00", "Chairs")
        return seeded

    def _open_deal(self, contact: int, amount: str, title: str) -> int:
        return self.portal.add_deal(contact_ids=[contact], TITLE=title, STAGE_ID="NEW",
                                    OPPORTUNITY=amount, CURRENCY_ID="RUB")

    def win(self, deal: int) -> None:
        self.portal.update_deal(deal, STAGE_ID="WON")

    def run_robot(self, public_url: str, deal: int, points: int) -> None:
        # The "Webhook" rule calls the URL the admin typed, {{ID}} filled in.
        answer = self.http.get(f"{public_url}/bitrix24/actions/{self.actions_secret}/redeem/"
                               f"{points}", params={"deal_id": deal}, timeout=TIMEOUT)
        answer.raise_for_status()

    def deliver(self) -> int:
        sent = 0
        for event in self.portal.drain_outbox():
            self.http.post(event.handler, data=event.body, timeout=TIMEOUT,
                           headers={"Content-Type": event.content_type}).raise_for_status()
            sent += 1
        return sent

    def fields(self, contact: int, names: dict[str, str]) -> dict[str, Any]:
        shown = self.portal.contact(contact)
        return {key: shown.get(name) for key, name in names.items()}

    def triggers(self, t: Translator) -> list[str]:
        by_code = {value: code for code, value in self.trigger_codes.items()}
        return [t._("trigger %(name)s (code %(code)s) on %(target)s",
                    name=by_code.get(fired["code"], fired["code"]), code=fired["code"],
                    target=fired["target"]) for fired in self.portal.fired_webhook_triggers]

    def robot_outcome(self, deal: int) -> list[str]:
        return [c["comment"] for c in self.portal.timeline_comments
                if (c["entity_type"], c["entity_id"]) == ("deal", deal)]


class SimulatedAmoCRM(SimulatedCRM):
    """An amoCRM account connected by a long-lived token (a private integration)."""

    crm = "amocrm"
    PIPELINE, FIRST_STAGE, WON = 3104455, 20067736, 142

    def __init__(self) -> None:
        super().__init__()
        self.account = FakeAmoCRM()
        self.webhook_secret = secrets.token_hex(12)
        self._pending: list[tuple[str, str, dict[str, Any]]] = []

    def start(self) -> None:
        self.account.__enter__()

    def stop(self) -> None:
        self.account.__exit__(None, None, None)

    @property
    def url(self) -> str:
        return self.account.base_url

    def settings(self, public_url: str) -> dict[str, Any]:
        return {"enabled": True, "base_url": self.account.base_url,
                "subdomain": self.account.subdomain, "long_lived_token": "long-lived-token",
                "webhook_secret": self.webhook_secret}

    def admin_steps(self, public_url: str, t: Translator) -> list[str]:
        actions_url = f"{public_url}/amocrm/actions/<secret>/redeem/..."
        return [t._("digital pipeline action \"send webhook\" -> %(url)s", url=actions_url)]

    def seed(self) -> Seeded:
        account = self.account
        anna, boris, vera = 10971465, 10971466, 10971467
        for contact, name in ((anna, "Anna Smirnova"), (boris, "Boris Ivanov"),
                              (vera, "Vera Orlova")):
            account.put_contact(contact, name=name)
            self._pending.append(("contacts", "add", {"id": str(contact), "name": name,
                                                      "type": "contact"}))
        leads = (5001, 5002, 5003)
        for lead, price in zip(leads, (12000, 25000, 2000), strict=True):
            self._open_lead(lead, anna, price)
        self._open_lead(5004, boris, 4500)
        return Seeded(anna, "Anna Smirnova", *leads, others=(boris, vera), deals=len(leads) + 1)

    def _open_lead(self, lead: int, contact: int, price: int) -> None:
        self.account.put_lead(lead, contact=contact, price=price, status=self.FIRST_STAGE,
                              pipeline=self.PIPELINE)
        self._pending.append(("leads", "add", self._status(lead, self.FIRST_STAGE, price)))

    def _status(self, lead: int, status: int, price: int) -> dict[str, Any]:
        return {"id": str(lead), "status_id": str(status), "old_status_id": str(self.FIRST_STAGE),
                "pipeline_id": str(self.PIPELINE), "price": str(price)}

    def win(self, deal: int) -> None:
        lead = self.account.state.leads[deal]
        contact = lead["_embedded"]["contacts"][0]["id"]
        self.account.put_lead(deal, contact=contact, price=lead["price"], status=self.WON,
                              pipeline=self.PIPELINE)
        self._pending.append(("leads", "status", self._status(deal, self.WON, lead["price"])))

    def run_robot(self, public_url: str, deal: int, points: int) -> None:
        lead = self.account.state.leads[deal]
        body = webhook_body("leads", "status", [self._status(deal, lead["status_id"],
                                                             lead["price"])],
                            subdomain=self.account.subdomain)
        answer = self.http.post(f"{public_url}/amocrm/actions/{self.webhook_secret}/redeem/"
                                f"{points}", data=body, headers={"Content-Type": FORM},
                                timeout=TIMEOUT)
        answer.raise_for_status()

    def deliver(self) -> int:
        # The account webhook `install amocrm` registered: amoCRM posts to its destination.
        hooks = [h["destination"] for h in self.account.state.webhooks if not h["disabled"]]
        pending, self._pending = self._pending, []
        for entity, action, item in pending:
            for destination in hooks:
                self.http.post(destination, data=webhook_body(
                    entity, action, [item], subdomain=self.account.subdomain),
                    headers={"Content-Type": FORM}, timeout=TIMEOUT).raise_for_status()
        return len(pending) if hooks else 0

    def fields(self, contact: int, names: dict[str, str]) -> dict[str, Any]:
        return {key: self.account.field_value(contact, code) for key, code in names.items()}

    def triggers(self, t: Translator) -> list[str]:
        return [t._("tag %(tag)s on %(entity)s %(id)s", tag=tag,
                    entity=ENTITIES[entity].render(t) if entity in ENTITIES else entity[:-1],
                    id=entity_id) for entity, entity_id, tag in self.account.state.tags_added]

    def robot_outcome(self, deal: int) -> list[str]:
        return [str((note.get("params") or {}).get("text", "")) for note in
                self.account.state.notes if int(note.get("entity_id", 0)) == deal]


def simulated(crm: str) -> SimulatedCRM:
    return SimulatedBitrix24() if crm == "bitrix24" else SimulatedAmoCRM()
