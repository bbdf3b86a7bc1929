"""Bitrix24 end to end: the fake portal (a real local HTTP server speaking the documented
formats and enforcing its leaky bucket) emits events to the handlers bound to it; they are
posted to our Flask app, and the worker reads and writes the portal over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from connector.bitrix24.connector import Bitrix24Connector
from connector.bitrix24.install import FIELD_TYPES
from connector.bitrix24.robots import ROBOTS
from connector.config import Settings
from connector.crm.bitrix24 import Bitrix24Client
from connector.crm.limiter import LeakyBucket
from connector.crm.models import TriggerEvent
from connector.ledger.views import AccountRef
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.services import Services
from connector.triggers import CODES, NAMES, POINTS_ACCRUED, TIER_UP, WELCOME
from connector.worker import Worker
from mappings.bitrix24 import EVENTS
from tests.conftest import Clock, count_settles, fresh_services, make_settings

EVENTS_URL = "http://127.0.0.1:8080/bitrix24/events"
ACTIONS_SECRET = "Act10nsSecret0123456789"


class Harness:
    """Our service (app, inbox, worker) wired to one fake portal."""

    def __init__(self, portal: FakeBitrix24Portal, services: Services, time: ManualClock,
                 clock: Clock) -> None:
        self.portal, self.services, self.time, self.clock = portal, services, time, clock
        settings = services.settings.bitrix24
        self.client = Bitrix24Client(
            settings, credentials=services.bitrix24_credentials,
            limiter=LeakyBucket(settings.requests_per_second, settings.burst - 1,
                                clock=time.monotonic, sleep=time.sleep),
            sleep=time.sleep)
        self.connector = Bitrix24Connector(services, client=self.client)
        services.bitrix24 = self.connector  # type: ignore[misc]
        self.web: FlaskClient = create_app_client(services)

    def deliver(self) -> list[int]:
        """Post what the portal emitted to its bound handlers (the outgoing webhook)."""
        return [self.post("/bitrix24/events", event.body, event.content_type)
                for event in self.portal.drain_outbox()]

    def send(self, event: str, entity_id: int | None, **overrides: Any) -> int:
        body, content_type = self.portal.event_body(event, entity_id, **overrides)
        return self.post("/bitrix24/events", body, content_type)

    def robot(self, code: str, deal_id: int, properties: dict[str, str], **kw: Any) -> int:
        body, content_type = self.portal.robot_body(code, f"DEAL_{deal_id}", properties, **kw)
        return self.post("/bitrix24/robots", body, content_type)

    def post(self, path: str, body: bytes, content_type: str) -> int:
        return self.web.post(path, data=body, content_type=content_type).status_code

    def process(self) -> dict[str, int]:
        self.deliver()
        counts = Worker(self.services.inbox, self.services.processors()).drain()
        return {**counts, **self.connector.flush()}

    def ref(self, contact_id: int) -> AccountRef:
        return AccountRef("bitrix24", self.services.settings.bitrix24.portal_key,
                          str(contact_id))

    def balance(self, contact_id: int) -> D:
        return self.services.ledger.account(self.ref(contact_id)).balance

    def field(self, contact_id: int, name: str) -> Any:
        return self.portal.contact(contact_id).get(self.services.settings.bitrix24.fields[name])

    def writes(self, contact_id: int) -> list[dict[str, Any]]:
        return self.portal.contact_updates.get(contact_id, [])

    def won(self, contact_id: int | None, amount: str) -> int:
        return self.portal.add_deal(contact_ids=[contact_id] if contact_id else None,
                                    STAGE_ID="WON", OPPORTUNITY=amount)


def create_app_client(services: Services) -> FlaskClient:
    from webhooks import create_app

    return create_app(services=services).test_client()


def b24_settings(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, *,
                 language: str = "ru", **extra: Any) -> Settings:
    # The fake portal is served at http://127.0.0.1:PORT, its events name that domain.
    bitrix24 = {"enabled": True, "webhook_url": portal.webhook_url, "portal": portal.url,
                "application_token": portal.application_token, "member_id": portal.member_id,
                "timeout_seconds": 2, **extra}
    return make_settings(tmp_path, database_url, bitrix24=bitrix24,
                         program={"welcome_bonus": "100", "bonuses": {"review": "50"},
                                  "language": language})


def bind_events(portal: FakeBitrix24Portal) -> FakeBitrix24Portal:
    """The outgoing webhook an admin sets up (install's manual step): every event but ONAPP*."""
    for event in EVENTS:
        if not event.startswith("ONAPP"):
            portal.bind_event(event, EVENTS_URL)
    return portal


@pytest.fixture
def portal(portal: FakeBitrix24Portal) -> FakeBitrix24Portal:
    return bind_events(portal)


@pytest.fixture
def h(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
      clock: Clock) -> Iterator[Harness]:
    services = fresh_services(b24_settings(tmp_path, database_url, portal), clock=clock)
    harness = Harness(portal, services, time, clock)
    harness.connector.installer.install()  # creates the contact fields
    yield harness
    services.close()


def test_deal_won_lost_won_again_with_new_amount_then_deleted(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.won(anna, "10000.00")
    h.process()
    assert h.balance(anna) == D("400.00")  # the welcome bonus and 3% at Bronze
    assert h.field(anna, "balance") == "400" and h.field(anna, "tier") == "Bronze"
    assert len(h.field(anna, "card")) == 10

    h.portal.update_deal(deal, STAGE_ID="LOSE")
    h.process()
    assert h.balance(anna) == D("100.00") and h.field(anna, "balance") == "100"

    h.portal.update_deal(deal, STAGE_ID="WON", OPPORTUNITY="20000.00")
    h.process()
    assert h.balance(anna) == D("700.00")

    h.portal.delete_deal(deal)
    h.process()
    view = h.services.ledger.account(h.ref(anna))
    assert (view.balance, view.purchase_count) == (D("100.00"), 0)
    assert h.services.ledger.verify() == (1, [])


def test_a_changed_amount_adjusts_by_the_difference(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.won(anna, "10000.00")
    h.process()
    h.portal.update_deal(deal, OPPORTUNITY="12000.00")
    h.process()
    assert h.balance(anna) == D("460.00")
    [_, accrual, difference] = reversed(h.services.ledger.history(h.ref(anna)))
    assert (accrual.points, difference.points) == (D("300.00"), D("60.00"))


def test_duplicate_and_out_of_order_events_change_nothing(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.won(anna, "10000.00")
    h.portal.drain_outbox()  # lost; sent again below, twice and out of order
    for event in ("ONCRMDEALUPDATE", "ONCRMDEALUPDATE", "ONCRMDEALADD"):
        assert h.send(event, deal) == 200
    counts = h.process()
    assert counts["done"] >= 3 and h.balance(anna) == D("300.00")
    gets = [c for c in h.portal.calls_of("crm.deal.get") if c.batch]
    assert len(gets) == 1  # one batch read for the three events
    h.send("ONCRMDEALUPDATE", deal)  # a late duplicate
    h.process()
    assert [e.kind for e in h.services.ledger.history(h.ref(anna))] == ["accrual"]


def test_forged_and_malformed_requests_leave_nothing(h: Harness) -> None:
    assert h.send("ONCRMDEALUPDATE", 1, application_token="f" * 32) == 401
    assert h.send("ONCRMDEALUPDATE", 1, member_id="0" * 32) == 401
    malformed = h.web.post("/bitrix24/events", data=b"event=ONCRMDEALUPDATE&data[FIELDS][ID]=",
                           content_type="application/x-www-form-urlencoded")
    assert malformed.status_code == 400 and malformed.json["error"] == "invalid_event"
    assert h.services.inbox.list() == []


def test_deal_without_contact_is_skipped_with_the_reason(h: Harness) -> None:
    deal = h.won(None, "500.00")
    h.process()
    [item] = [i for i in h.services.inbox.list() if i.kind == "ONCRMDEALADD"]
    assert item.status == "skipped" and f"deal {deal}: deal has no contact" == item.last_error


def test_portal_errors_for_a_while_lose_nothing_and_converge(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    for _ in range(5):
        h.won(anna, "1000.00")
    h.portal.fail_next(2, 503)  # absorbed by the client's own retries
    h.process()
    assert h.balance(anna) == D("250.00")  # 100 welcome + 5 x 30
    h.won(anna, "1000.00")
    h.portal.fail_next(40, 500)  # longer than the client retries: the inbox retries later
    counts = h.process()
    assert counts.get("failed", 0) >= 1 and h.balance(anna) == D("250.00")
    failed = [i for i in h.services.inbox.list() if i.status == "pending"]
    assert failed and all("INTERNAL_SERVER_ERROR" in (i.last_error or "") for i in failed)
    h.portal.faults.clear()
    h.portal.reset_next(1)  # and a dropped connection on the way back
    h.clock.advance(minutes=5)
    h.process()
    assert h.balance(anna) == D("280.00") and h.portal.limit_errors == 0


def test_portal_timeouts_and_outages_are_retried_then_converge(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    h.won(anna, "10000.00")
    h.portal.delay_next(1, 2.5)  # beyond the client's 2 s timeout, then answers again
    h.process()
    assert h.balance(anna) == D("400.00")
    h.won(anna, "10000.00")
    h.deliver()
    h.portal.down()
    assert h.process().get("failed", 0) >= 1
    h.portal.up()
    h.clock.advance(minutes=5)
    h.process()
    assert h.balance(anna) == D("700.00")


def test_robot_redemption_is_capped_and_answered_once(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    h.process()
    h.services.ledger.adjust(h.ref(anna), D("4900"), key="seed", reason="test funds")
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    body, content_type = h.portal.robot_body("loyalty_redeem", f"DEAL_{deal}",
                                             {"amount": "900"})
    assert h.post("/bitrix24/robots", body, content_type) == 200
    assert h.post("/bitrix24/robots", body, content_type) == 200  # delivered twice
    h.process()
    [answer] = h.portal.bizproc_events
    values = answer["return_values"]
    assert (values["redeemed"], values["balance"]) == ("500.00", "4500.00")
    # The robot speaks program.language, Russian here; its success stays "ok".
    assert values["message"].startswith("ограничено: с 900,00 до 500,00")
    assert h.balance(anna) == D("4500.00")


def test_robots_accrue_a_named_bonus_and_read_the_balance(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.portal.add_deal(contact_ids=[anna], OPPORTUNITY="1000.00")
    orphan = h.portal.add_deal(OPPORTUNITY="1000.00")
    h.robot("loyalty_accrue", deal, {"bonus": "review", "comment": "отзыв на сайте"})
    h.robot("loyalty_balance", orphan, {})
    h.process()
    h.robot("loyalty_balance", deal, {})
    h.process()
    accrued, orphaned, balance = (e["return_values"] for e in h.portal.bizproc_events)
    assert accrued["accrued"] == "50.00"
    assert orphaned["message"] == ("в сделке нет контакта: добавьте его, чтобы начислять и "
                                   "списывать баллы")
    assert balance["balance"] == "150.00" and balance["tier"] == "Bronze"


def test_write_back_is_coalesced_and_its_echo_causes_no_loop(h: Harness) -> None:
    anna = h.portal.add_contact(NAME="Anna")
    for _ in range(30):
        h.won(anna, "1000.00")
    h.process()
    assert len(h.writes(anna)) == 1  # a welcome bonus and thirty accruals, one write
    assert h.field(anna, "balance") == "1000"
    for _ in range(3):  # the portal echoes our own write as ONCRMCONTACTUPDATE
        h.process()
    assert len(h.writes(anna)) == 1
    balance_field = h.services.settings.bitrix24.fields["balance"]
    h.portal.update_contact(anna, **{balance_field: "1000000"})  # a manager typed over it
    h.process()
    assert h.writes(anna)[-1] == {balance_field: "1000"}
    h.process()
    assert len(h.writes(anna)) == 2


def app_harness(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
                time: ManualClock, clock: Clock, *, install: bool = True,
                language: str = "ru", adjust: Callable[[Settings], Settings] | None = None,
                **extra: Any) -> Harness:
    """An OAuth app setup: installed by ONAPPINSTALL, its tokens kept in the database;
    `adjust` changes the settings before the services are built."""
    settings = b24_settings(tmp_path, database_url, portal, webhook_url=None,
                            application_token=None, client_id=portal.client_id,
                            client_secret=portal.client_secret, oauth_url=portal.oauth_url,
                            language=language, **extra)
    if adjust is not None:
        settings = adjust(settings)
    h = Harness(portal, fresh_services(settings, clock=clock), time, clock)
    if not install:
        return h
    body, content_type = portal.install_body()
    assert h.post("/bitrix24/events", body, content_type) == 200
    h.process()
    return h


@contextmanager
def installed_app(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
                  time: ManualClock, clock: Clock, **kwargs: Any) -> Iterator[Harness]:
    """An app setup installed through and through: fields, event handlers, robots, triggers,
    tabs; closed on leaving."""
    h = app_harness(tmp_path, database_url, portal, time, clock, **kwargs)
    h.connector.installer.install()
    yield h
    h.services.close()


def test_welcome_bonus_once_and_triggers_fire_on_deals_once(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    h = app_harness(tmp_path, database_url, portal, time, clock)
    h.connector.installer.install()  # fields, handlers, robots, triggers
    anna = h.portal.add_contact(NAME="Anna", BIRTHDATE="1990-05-01")
    h.send("ONCRMCONTACTADD", anna)  # delivered twice
    h.process()
    assert h.balance(anna) == D("100.00")
    assert h.services.ledger.account(h.ref(anna)).birthday.isoformat() == "1990-05-01"
    assert h.portal.fired_triggers == []  # no deal yet: a trigger has nothing to run on
    deal = h.won(anna, "40000.00")
    h.process()
    fired = {(t["code"], str(t["owner_id"])) for t in h.portal.fired_triggers}
    assert fired == {("loyalty_points_accrued", str(deal)), ("loyalty_tier_up", str(deal))}
    h.send("ONCRMDEALUPDATE", deal)
    h.process()
    assert len(h.portal.fired_triggers) == 2  # once per transition
    with h.services.db.transaction(write=False) as session:
        welcome = session.scalar(select(TriggerEvent).where(TriggerEvent.code == WELCOME))
        assert welcome is not None and welcome.status == "skipped"
        assert welcome.last_error == "the contact has no deal to run the trigger on"
    h.services.close()


def test_a_webhook_setup_fires_the_portal_triggers_by_their_codes_once(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    # The admin put two "Track incoming webhook" triggers on the won stage and pasted their
    # codes; the welcome transition has none.
    portal.add_webhook_trigger("c5u4m", "WON")
    portal.add_webhook_trigger("nwly5", "WON")
    settings = b24_settings(tmp_path, database_url, portal, triggers={
        POINTS_ACCRUED: {"code": "c5u4m"}, TIER_UP: {"code": "nwly5"}})
    h = Harness(portal, fresh_services(settings, clock=clock), time, clock)
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.won(anna, "40000.00")
    report = h.process()
    assert (report["triggers_sent"], report["triggers_skipped"]) == (2, 1)
    assert h.portal.calls_of("crm.automation.trigger.execute") == []
    assert sorted((t["code"], t["target"], t["auth"]) for t in h.portal.fired_webhook_triggers) \
        == [("c5u4m", f"DEAL_{deal}", "webhook"), ("nwly5", f"DEAL_{deal}", "webhook")]
    h.send("ONCRMDEALUPDATE", deal)
    h.process()
    assert len(h.portal.fired_webhook_triggers) == 2  # once per transition
    with h.services.db.transaction(write=False) as session:
        welcome = session.scalar(select(TriggerEvent).where(TriggerEvent.code == WELCOME))
    assert welcome is not None and (welcome.status, welcome.last_error) == (
        "skipped", "no portal trigger code for loyalty_welcome: set "
                   "[bitrix24.triggers.loyalty_welcome] code")
    h.services.close()


def test_an_app_fires_a_transition_with_a_code_by_the_portal_trigger_and_the_rest_its_own(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    portal.add_webhook_trigger("nwly5", "WON")
    h = app_harness(tmp_path, database_url, portal, time, clock,
                    triggers={TIER_UP: {"code": "nwly5"}})
    h.connector.installer.install()
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.won(anna, "40000.00")
    h.process()
    assert [(t["code"], t["target"], t["auth"]) for t in h.portal.fired_webhook_triggers] == [
        ("nwly5", f"DEAL_{deal}", "oauth")]
    assert sorted(t["code"] for t in h.portal.fired_triggers) == [POINTS_ACCRUED, WELCOME]
    h.services.close()


def test_a_code_no_portal_trigger_has_is_recorded_as_failed_with_what_to_check(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    portal.add_webhook_trigger("c5u4m", "WON", category_id=7)  # on another funnel's stage
    settings = b24_settings(tmp_path, database_url, portal,
                            triggers={POINTS_ACCRUED: {"code": "c5u4m"}})
    h = Harness(portal, fresh_services(settings, clock=clock), time, clock)
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.won(anna, "1000.00")
    assert h.process()["triggers_failed"] == 1
    assert h.portal.fired_webhook_triggers == []
    with h.services.db.transaction(write=False) as session:
        accrued = session.scalar(select(TriggerEvent).where(
            TriggerEvent.code == POINTS_ACCRUED))
    assert accrued is not None and accrued.status == "failed"
    assert accrued.last_error is not None and accrued.last_error.startswith(
        f"the portal ran no trigger with code c5u4m on deal {deal}")
    h.services.close()


def test_reconcile_converges_when_every_event_was_lost(h: Harness) -> None:
    anna, boris = h.portal.add_contact(NAME="Anna"), h.portal.add_contact(NAME="Boris")
    h.won(anna, "10000.00")
    h.won(boris, "5000.00")
    late = h.portal.add_deal(contact_ids=[boris], OPPORTUNITY="5000.00")
    h.portal.drain_outbox()  # every event lost
    report = h.connector.reconcile()
    assert (report.deals, report.changed) == (3, 2)
    assert (h.balance(anna), h.balance(boris)) == (D("300.00"), D("150.00"))
    h.time.advance(3600)
    assert h.connector.reconcile().changed == 0  # nothing new since the cursor
    h.portal.update_deal(late, STAGE_ID="WON")  # won later, event lost again
    h.portal.drain_outbox()
    assert h.connector.reconcile().changed == 1
    assert h.balance(boris) == D("300.00")


def test_a_burst_never_trips_the_portal_limit(h: Harness) -> None:
    contacts = [h.portal.add_contact(NAME=f"Client {n}") for n in range(300)]
    for contact in contacts:
        h.won(contact, "1000.00")
    h.portal.drain_outbox()
    for contact in contacts:  # only the deal events this time
        h.send("ONCRMDEALADD", contact)
    h.process()
    assert h.portal.limit_errors == 0
    assert sum(len(v) for v in h.portal.contact_updates.values()) == 300
    assert h.services.ledger.verify() == (300, [])
    # 300 events: 6 batch reads and 6 batch writes, not 600 calls
    assert len(h.portal.calls_of("batch")) == 12


def test_a_client_faster_than_the_portal_backs_off_and_loses_nothing(
        tmp_path: Path, database_url: str, time: ManualClock, clock: Clock) -> None:
    # The portal's real bucket is smaller than configured (another app shares it).
    with FakeBitrix24Portal(clock=time, requests_per_second=2, burst=3) as portal:
        services = fresh_services(b24_settings(tmp_path, database_url, portal), clock=clock)
        h = Harness(portal, services, time, clock)
        for n in range(120):
            contact = portal.add_contact(NAME=f"Client {n}")
            deal = h.won(contact, "1000.00")
            h.send("ONCRMDEALADD", deal)
        h.process()
        assert portal.limit_errors > 0  # QUERY_LIMIT_EXCEEDED was answered...
        assert services.ledger.verify() == (120, [])  # ...and every event still landed
        assert all(item.status == "done" for item in services.inbox.list(limit=200))
        services.close()


def test_app_install_refresh_and_uninstall(tmp_path: Path, database_url: str,
                                          portal: FakeBitrix24Portal, time: ManualClock,
                                          clock: Clock) -> None:
    h = app_harness(tmp_path, database_url, portal, time, clock)
    first = h.connector.installer.install()
    assert len(portal.robots) == len(ROBOTS) and len(portal.triggers) == len(CODES)
    ours = [b for b in portal.bound_events if b["handler"] == EVENTS_URL]
    assert len(ours) == len(EVENTS)
    again = h.connector.installer.install()
    assert all("exists" in line or "already" in line for line in again.lines())
    assert first.lines() != again.lines()
    portal.expire_tokens()  # the access token expires: refreshed once, the calls go on
    refreshes = portal.oauth_requests
    h.connector.installer.uninstall()
    assert portal.oauth_requests == refreshes + 1
    assert (portal.robots, portal.triggers) == ({}, {})
    assert not [b for b in portal.bound_events if b["handler"] == EVENTS_URL]
    h.services.close()


def test_webhook_setup_prints_the_manual_steps(h: Harness) -> None:
    report = h.connector.installer.install()
    assert any("Outgoing webhook" in line for line in report.lines())
    # The scopes README's table names for a local app: its robots need bizproc.
    assert any("with the crm, bizproc and placement scopes" in step for step in report.manual)
    assert h.portal.calls_of("event.bind") == []
    # Every transition without a code: where to click, and the key its code goes to.
    assert any("under Triggers click + and choose \"Track incoming webhook\"" in step
               for step in report.manual)
    assert [step for step in report.manual if "[bitrix24.triggers." in step] == [
        f"{NAMES[code]}: [bitrix24.triggers.{code}] code = \"...\"" for code in CODES]
    assert any("set bitrix24.actions_secret" in step for step in report.manual)


def test_webhook_setup_with_codes_and_an_actions_secret_prints_what_is_left(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    settings = b24_settings(tmp_path, database_url, portal, actions_secret=ACTIONS_SECRET,
                            triggers={code: {"code": "c5u4m"} for code in CODES
                                      if code != WELCOME})
    h = Harness(portal, fresh_services(settings, clock=clock), time, clock)
    report = h.connector.installer.install()
    assert f"trigger {TIER_UP} fires the portal trigger with code c5u4m" in report.done
    assert [step for step in report.manual if "[bitrix24.triggers." in step] == [
        f"{NAMES[WELCOME]}: [bitrix24.triggers.{WELCOME}] code = \"...\""]
    [robot] = [step for step in report.manual if "\"Webhook\"" in step]
    assert "http://127.0.0.1:8080/bitrix24/actions/<actions_secret>/accrue" in robot
    assert "?deal_id={{ID}}" in robot and ACTIONS_SECRET not in "\n".join(report.lines())
    h.services.close()


def test_install_finds_its_fields_beyond_the_first_page_of_user_fields(h: Harness) -> None:
    h.connector.installer.uninstall()  # the harness installed; start from a busy portal
    for n in range(60):  # a portal with many fields of its own: ours land on page two
        h.portal.add_userfield(f"SHOP_{n}")
    first = h.connector.installer.install()
    again = h.connector.installer.install()
    assert sum("created contact field" in line for line in first.lines()) == len(FIELD_TYPES)
    assert sum(line.startswith("contact field") and line.endswith("exists")
               for line in again.lines()) == len(FIELD_TYPES)
    h.connector.installer.uninstall()
    names = [f["FIELD_NAME"] for f in h.portal.store.userfields.values()]
    assert len(names) == 60 and not any("LOYALTY" in name for name in names)


def test_a_burst_of_edits_to_one_deal_is_settled_once_per_group(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    settles = count_settles(h.services.ledger, monkeypatch)
    anna = h.portal.add_contact(NAME="Anna")
    deal = h.won(anna, "10000.00")
    for _ in range(4):
        h.send("ONCRMDEALUPDATE", deal)
    counts = h.process()
    assert counts["done"] >= 5 and len(settles) == 1  # the deal's events, one settle
    assert h.balance(anna) == D("400.00")


@pytest.fixture
def attacker(time: ManualClock) -> Iterator[FakeBitrix24Portal]:
    """Another portal: its own tokens, application token and REST endpoint."""
    with FakeBitrix24Portal(clock=time, domain="evil.example",
                            application_token="e" * 32) as fake:
        yield fake


def test_a_forged_install_is_refused_and_the_genuine_one_still_works(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
        attacker: FakeBitrix24Portal, time: ManualClock, clock: Clock) -> None:
    h = app_harness(tmp_path, database_url, portal, time, clock, install=False)
    credentials = h.services.bitrix24_credentials
    # From another domain: refused at the door like a wrong token, nothing stored.
    body, content_type = attacker.install_body()
    assert h.post("/bitrix24/events", body, content_type) == 401
    assert h.services.inbox.list() == []
    # Naming our portal, with the attacker's tokens and endpoint: stored, but the portal
    # itself does not know the token, so nothing is kept and the attacker is never called.
    body, content_type = attacker.install_body(domain=portal.domain)
    assert h.post("/bitrix24/events", body, content_type) == 200
    assert h.process()["skipped"] == 1
    [forged] = h.services.inbox.list()
    assert "does not confirm its access token" in (forged.last_error or "")
    assert credentials.status() is None
    assert [c.status for c in portal.calls_of("app.info")] == [401]
    # The genuine install is accepted and confirmed with the portal.
    body, content_type = portal.install_body()
    assert h.post("/bitrix24/events", body, content_type) == 200
    h.process()
    assert credentials.status() == ("active", None)
    assert [c.status for c in portal.calls_of("app.info")] == [401, 200]
    # The attacker's deal events are refused whatever domain they name; no points moved.
    anna = portal.add_contact(NAME="Anna")
    h.process()
    fake_deal = attacker.add_deal(contact_ids=[anna], STAGE_ID="WON", OPPORTUNITY="299990")
    for domain in (attacker.domain, portal.domain):
        body, content_type = attacker.event_body("ONCRMDEALUPDATE", fake_deal, domain=domain)
        assert h.post("/bitrix24/events", body, content_type) == 401
    h.process()
    assert h.balance(anna) == D("100.00")  # the welcome bonus alone
    assert (attacker.http_requests, attacker.oauth_requests) == (0, 0)
    h.services.close()


def test_an_employees_token_cannot_install_the_app_over_the_admins(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    """Any employee holds a token of this app (the card tab's AUTH_ID): an ONAPPINSTALL
    carrying one, with an application token of the employee's choosing, keeps nothing."""
    h = app_harness(tmp_path, database_url, portal, time, clock)
    credentials = h.services.bitrix24_credentials
    employee = portal.add_user("Ivan")
    tab_token = portal.issue_tokens(employee)  # what the tab receives as AUTH_ID
    body, content_type = portal.install_body(access_token=tab_token["access_token"],
                                             refresh_token=tab_token["refresh_token"],
                                             application_token="f" * 32)
    assert h.post("/bitrix24/events", body, content_type) == 200
    assert h.process()["skipped"] == 1
    [refused, *_] = h.services.inbox.list()
    assert "NOT_ADMIN" in (refused.last_error or "")
    assert credentials.application_token() == portal.application_token
    anna = portal.add_contact(NAME="Anna")
    assert h.send("ONCRMCONTACTADD", anna, application_token="f" * 32) == 401
    h.services.close()


def test_an_install_with_another_apps_token_keeps_nothing(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    h = app_harness(tmp_path, database_url, portal, time, clock, install=False)
    body, content_type = portal.install_body()  # an administrator's token...
    assert h.post("/bitrix24/events", body, content_type) == 200
    real_id, portal.client_id = portal.client_id, "local.0000000000other.00000000"
    h.process()  # ...that app.info says is another app's
    portal.client_id = real_id
    assert h.services.bitrix24_credentials.status() is None
    [refused] = h.services.inbox.list()
    assert "WRONG_APP" in (refused.last_error or "")
    h.services.close()


def test_calls_go_to_the_configured_portal_never_to_a_named_endpoint(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
        attacker: FakeBitrix24Portal, time: ManualClock, clock: Clock) -> None:
    h = app_harness(tmp_path, database_url, portal, time, clock, install=False)
    # A genuine install whose client_endpoint was changed on the way: the tokens are kept
    # (the portal confirms them), the endpoint is not.
    body, content_type = portal.install_body(client_endpoint=attacker.rest_url)
    assert h.post("/bitrix24/events", body, content_type) == 200
    h.process()
    tokens = h.services.bitrix24_credentials.load()
    assert tokens is not None and tokens.endpoint == portal.rest_url
    anna = portal.add_contact(NAME="Anna")
    h.won(anna, "1000.00")
    portal.expire_tokens()  # the refresh goes to oauth_url, the calls after it to the portal
    h.process()
    assert h.balance(anna) == D("130.00")  # the welcome bonus and 3% at Bronze
    assert portal.oauth_requests == 1
    assert (attacker.http_requests, attacker.oauth_requests) == (0, 0)
    h.services.close()


def test_reinstall_after_uninstall_brings_a_new_application_token(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal, time: ManualClock,
        clock: Clock) -> None:
    h = app_harness(tmp_path, database_url, portal, time, clock)
    credentials = h.services.bitrix24_credentials
    body, content_type = portal.uninstall_body()
    assert h.post("/bitrix24/events", body, content_type) == 200
    h.process()
    assert credentials.status() == ("revoked", "the application was uninstalled from the portal")
    old_token, portal.application_token = portal.application_token, "b" * 32
    body, content_type = portal.install_body()
    assert h.post("/bitrix24/events", body, content_type) == 200
    h.process()
    assert credentials.status() == ("active", None)
    assert credentials.application_token() == "b" * 32
    anna = portal.add_contact(NAME="Anna")
    assert h.send("ONCRMCONTACTADD", anna) == 200  # the new token
    assert h.send("ONCRMCONTACTADD", anna, application_token=old_token) == 401
    h.process()
    assert h.balance(anna) == D("100.00")
    h.services.close()


def test_an_install_stored_before_the_domain_check_is_ignored_by_the_worker(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
        attacker: FakeBitrix24Portal, time: ManualClock, clock: Clock) -> None:
    h = app_harness(tmp_path, database_url, portal, time, clock, install=False)
    body, content_type = attacker.install_body()  # evil.example, straight into the inbox
    h.services.inbox.put(source="bitrix24", kind="ONAPPINSTALL", dedup_key="old-forged",
                         body=body, content_type=content_type, portal=attacker.domain)
    assert h.process()["skipped"] == 1
    [item] = h.services.inbox.list()
    assert "not the configured portal" in (item.last_error or "")
    assert h.services.bitrix24_credentials.status() is None
    assert portal.calls_of("app.info") == [] and attacker.http_requests == 0
    h.services.close()
