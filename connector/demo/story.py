"""The demo's story: seed the CRM, win two deals (points, then a tier up and its trigger), let a
robot redeem points, then show the dashboard and the customer's card page.

Each step waits until the CRM shows what the ledger holds — the values printed are read back
from the simulated CRM, not from the ledger — and prints them, in `program.language`.

A sentence naming the CRM's place ("the portal", "the account") or its deals ("deal", "lead")
is one marked string per CRM, not a word put into a sentence: Russian and Ukrainian decline
the word by its place in the sentence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import requests

from connector.demo.crms import SHOWN, TIMEOUT, SimulatedCRM
from connector.errors import LedgerError
from connector.i18n import N_, Message, Translator
from connector.ledger.views import AccountRef, AccountView
from connector.services import Services

STEP_TIMEOUT = 30.0  # seconds a step may take before the demo gives up
POLL = 0.1
ROBOT_POINTS = 500
STEPS = 7
# The values a step shows, as the CRM's form labels them.
FIELD_LABELS = {"balance": N_("balance"), "available": N_("available"), "tier": N_("tier"),
                "discount": N_("discount"), "card": N_("card")}
# The sentences that name the CRM's place or its deals, by CRM (see the module's docstring).
TEXTS: dict[str, dict[str, Message]] = {
    "bitrix24": {
        "installed": N_("`install %(crm)s` against the portal at %(url)s: %(created)s"),
        "shows": N_("the portal now shows: %(fields)s"),
        "first": N_("deal %(id)s won (%(amount)s %(currency)s): %(earned)s at %(tier)s, "
                    "written back into the portal"),
        "second": N_("deal %(id)s won: %(earned)s (at %(before)s, the rate before this "
                     "purchase); spend %(spend)s reaches %(tier)s: tier up, discount "
                     "%(discount)s%%"),
        "robot": N_("a robot on deal %(id)s redeems %(points)s: %(redeemed)s redeemed"),
        "outcome": N_("on the deal: %(text)s"),
        "card": N_("%(name)s's card page, the URL the portal holds in her card_url field: "
                   "%(url)s"),
        "settled": N_("deal %(id)s settled, written back and its trigger fired"),
    },
    "amocrm": {
        "installed": N_("`install %(crm)s` against the account at %(url)s: %(created)s"),
        "shows": N_("the account now shows: %(fields)s"),
        "first": N_("lead %(id)s won (%(amount)s %(currency)s): %(earned)s at %(tier)s, "
                    "written back into the account"),
        "second": N_("lead %(id)s won: %(earned)s (at %(before)s, the rate before this "
                     "purchase); spend %(spend)s reaches %(tier)s: tier up, discount "
                     "%(discount)s%%"),
        "robot": N_("a robot on lead %(id)s redeems %(points)s: %(redeemed)s redeemed"),
        "outcome": N_("on the lead: %(text)s"),
        "card": N_("%(name)s's card page, the URL the account holds in her card_url field: "
                   "%(url)s"),
        "settled": N_("lead %(id)s settled, written back and its trigger fired"),
    },
}


class StoryError(RuntimeError):
    """A step did not come about in time: what was awaited (`message`, shown in the
    demo's language; `str()` is English)."""

    def __init__(self, message: Message) -> None:
        super().__init__(str(message))
        self.message = message


@dataclass(frozen=True)
class Ending:
    """What the story leaves open to look at."""

    dashboard_url: str
    admin_token: str
    card_url: str | None
    fields: dict[str, Any]


def _amount(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _points(value: Decimal) -> str:
    """12 000, 750, 12 000.50: thousands apart by a space, as the CRM's own number format."""
    shown = f"{value:,.0f}" if value == value.to_integral() else f"{value:,.2f}"
    return shown.replace(",", " ")


class Story:
    def __init__(self, sim: SimulatedCRM, services: Services, base_url: str,
                 admin_token: str, echo: Callable[[str], None], t: Translator) -> None:
        self.sim, self.services, self.base_url = sim, services, base_url.rstrip("/")
        self.admin_token, self.echo, self.t = admin_token, echo, t
        settings = services.settings
        section = settings.bitrix24 if sim.crm == "bitrix24" else settings.amocrm
        self.names: dict[str, str] = dict(section.fields)
        self.portal_key = section.portal_key
        self.step_no = 0
        self.triggers_shown = 0

    # -- helpers ---------------------------------------------------------------------------
    def step(self, text: str) -> None:
        self.step_no += 1
        self.echo(f"[{self.step_no}/{STEPS}] {text}")

    def detail(self, text: str) -> None:
        self.echo(f"      {text}")

    def say(self, sentence: str, **values: Any) -> str:
        """This CRM's wording of `sentence` (TEXTS) in the program's language."""
        return Message(TEXTS[self.sim.crm][sentence].msgid, values).render(self.t)

    def points(self, value: Decimal) -> str:
        """"360 points", "360 баллов": the figure as the CRM writes it, the word agreeing."""
        return f"{_points(value)} {self.t.points_word(value)}"

    def wait(self, what: Message, condition: Callable[[], bool]) -> None:
        """Let the CRM post what it has to post until `condition` holds."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            self.sim.deliver()
            if condition():
                return
            if time.monotonic() > deadline:
                raise StoryError(N_("timed out after %(seconds)s s waiting for %(what)s",
                                    seconds=f"{STEP_TIMEOUT:.0f}", what=what))
            time.sleep(POLL)

    def account(self, contact: int) -> AccountView | None:
        try:
            return self.services.ledger.account(AccountRef(self.sim.crm, self.portal_key,
                                                           str(contact)))
        except LedgerError:
            return None

    def known(self, contact: int) -> AccountView:
        view = self.account(contact)
        if view is None:
            raise StoryError(N_("contact %(id)s has no account in the ledger", id=contact))
        return view

    def fields(self, contact: int) -> dict[str, Any]:
        return self.sim.fields(contact, self.names)

    def in_step(self, contact: int) -> bool:
        """The CRM shows the ledger's balance, available points and tier for the contact."""
        view = self.account(contact)
        if view is None:
            return False
        shown = self.fields(contact)
        return (_amount(shown.get("balance")) == view.balance
                and _amount(shown.get("available")) == view.available
                and shown.get("tier") == view.tier)

    def fired(self, transition: str) -> int:
        return sum(1 for line in self.sim.triggers(self.t) if transition in line)

    def show_triggers(self) -> None:
        """The automation fired since the last step, as the CRM recorded it."""
        fired = self.sim.triggers(self.t)
        for line in fired[self.triggers_shown:]:
            self.detail(self.t._("automation fired: %(what)s", what=line))
        self.triggers_shown = len(fired)

    def show(self, contact: int) -> dict[str, Any]:
        shown = self.fields(contact)
        listed = ", ".join(
            f"{FIELD_LABELS[key].render(self.t)} "
            f"{shown.get(key) if shown.get(key) not in (None, '') else '-'}" for key in SHOWN)
        self.detail(self.say("shows", fields=listed))
        return shown

    # -- the story -------------------------------------------------------------------------
    def play(self) -> Ending:
        sim = self.sim
        connector = self.services.bitrix24 if sim.crm == "bitrix24" else self.services.amocrm
        if connector is None:
            raise StoryError(N_("%(crm)s is not enabled in the demo's settings", crm=sim.crm))
        report = connector.installer.install()
        created = sum(1 for line in report.done if line.startswith("created contact field"))
        t = self.t
        self.step(self.say("installed", crm=sim.crm, url=sim.url, created=t.ngettext(
            "%(num)d loyalty contact field created", "%(num)d loyalty contact fields created",
            created)))
        for line in sim.admin_steps(self.base_url, t):
            self.detail(t._("set up as an admin would: %(step)s", step=line))

        seeded = sim.seed()
        anna = seeded.customer
        everyone = (anna, *seeded.others)
        self.wait(N_("the welcome bonus in every seeded contact and its trigger"),
                  lambda: all(self.in_step(c) for c in everyone)
                  and self.fired("loyalty_welcome") > 0)
        deals = (t.ngettext("%(num)d open deal", "%(num)d open deals", seeded.deals)
                 if sim.crm == "bitrix24" else
                 t.ngettext("%(num)d open lead", "%(num)d open leads", seeded.deals))
        self.step(t._("seeded %(contacts)s and %(deals)s; each new contact got the welcome "
                      "bonus", contacts=t.ngettext("%(num)d contact", "%(num)d contacts",
                                                   len(everyone)), deals=deals))
        self.detail(t._("customer: %(name)s (contact %(id)s)", name=seeded.customer_name,
                        id=anna))
        self.show(anna)
        self.show_triggers()

        for number, won in ((1, seeded.first_deal), (2, seeded.second_deal)):
            before = self.known(anna)
            sim.win(won)
            self.wait(Message(TEXTS[sim.crm]["settled"].msgid, {"id": won}),
                      lambda b=before, n=number: self._settled(anna, b)
                      and self.fired("loyalty_points_accrued") >= n)
            after = self.known(anna)
            earned = after.balance - before.balance
            if number == 1:
                self.step(self.say("first", id=won, amount=_points(after.purchase_total),
                                   currency=self.services.settings.program.currency,
                                   earned="+" + self.points(earned), tier=before.tier))
                self.show(anna)
                self.show_triggers()
                continue
            self.wait(N_("the tier-up trigger"), lambda: self.fired("loyalty_tier_up") > 0)
            self.step(self.say("second", id=won, earned="+" + self.points(earned),
                               before=before.tier, spend=_points(after.qualifying_spend),
                               tier=after.tier, discount=after.discount_percent))
            self.show(anna)
            self.show_triggers()

        before = self.known(anna)
        sim.run_robot(self.base_url, seeded.robot_deal, ROBOT_POINTS)
        self.wait(N_("the robot's redemption written back"),
                  lambda: bool(sim.robot_outcome(seeded.robot_deal))
                  and self._changed(anna, before))
        after = self.known(anna)
        self.step(self.say("robot", id=seeded.robot_deal,
                           points=self.points(Decimal(ROBOT_POINTS)),
                           redeemed=_points(before.balance - after.balance)))
        shown = self.show(anna)
        for line in sim.robot_outcome(seeded.robot_deal):
            self.detail(self.say("outcome", text=line))
        self.show_triggers()

        dashboard = f"{self.base_url}/dashboard"
        page = requests.get(dashboard, timeout=TIMEOUT,
                            headers={"Authorization": f"Bearer {self.admin_token}"})
        if page.status_code != 200:
            raise StoryError(N_("the dashboard answered %(status)s", status=page.status_code))
        self.step(t._("dashboard: %(url)s (any user name, password %(password)s)",
                      url=dashboard, password=self.admin_token))

        card_url = shown.get("card_url") or None
        if card_url:
            card = requests.get(card_url, timeout=TIMEOUT)
            if card.status_code != 200:
                raise StoryError(N_("the card page answered %(status)s",
                                    status=card.status_code))
        self.step(self.say("card", name=seeded.customer_name,
                           url=card_url or "- " + t._("(card pages are off)")))
        return Ending(dashboard, self.admin_token, card_url, shown)

    def _settled(self, contact: int, before: AccountView) -> bool:
        view = self.account(contact)
        return (view is not None and view.purchase_count > before.purchase_count
                and self.in_step(contact))

    def _changed(self, contact: int, before: AccountView) -> bool:
        view = self.account(contact)
        return view is not None and view.balance != before.balance and self.in_step(contact)
