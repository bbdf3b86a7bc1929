"""Bitrix24 end to end: events and robots into our Flask app, the worker against a fake portal
(a real local HTTP server) speaking the documented formats and enforcing its leaky bucket."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from connector.bitrix24.connector import Bitrix24Connector
from connector.config import Settings
from connector.crm.bitrix24 import Bitrix24Client
from connector.crm.limiter import LeakyBucket
from connector.ledger.views import AccountRef
from connector.services import Services
from connector.worker import Worker
from tests.conftest import Clock, fresh_services, make_settings
from tests.portal.bitrix24 import FakeBitrix24, VirtualClock, event_body, robot_body
from webhooks import create_app

APP_TOKEN = "51856fefc120afa4b628cc82d3935cce"
PORTAL = "acme.bitrix24.ru"
FORM = "application/x-www-form-urlencoded"
ANNA = AccountRef("bitrix24", PORTAL, "7")


class Harness:
    """Our service (app, inbox, worker) wired to one fake portal."""

    def __init__(self, portal: FakeBitrix24, services: Services, time: VirtualClock,
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
        self.web: FlaskClient = create_app(services=services).test_client()

    def send(self, event: str, entity_id: int | None, **kwargs: Any) -> int:
        body = event_body(event, entity_id, application_token=APP_TOKEN, domain=PORTAL,
                          **kwargs)
        return self.web.post("/bitrix24/events", data=body, content_type=FORM).status_code

    def robot(self, code: str, deal_id: int, token: str, **properties: str) -> int:
        body = robot_body(code, deal_id, properties, event_token=token,
                          application_token=APP_TOKEN, domain=PORTAL)
        return self.web.post("/bitrix24/robots", data=body, content_type=FORM).status_code

    def process(self) -> dict[str, int]:
        counts = Worker(self.services.inbox, self.services.processors()).drain()
        return {**counts, **self.connector.flush()}

    def balance(self, ref: AccountRef = ANNA) -> D:
        return self.services.ledger.account(ref).balance

    def field(self, contact_id: int, name: str) -> Any:
        return self.portal.state.contacts[contact_id].get(
            self.services.settings.bitrix24.fields[name])


def b24_settings(tmp_path: Path, database_url: str, portal: FakeBitrix24,
                 **extra: Any) -> Settings:
    bitrix24 = {"enabled": True, "webhook_url": portal.webhook_url, "portal": PORTAL,
                "application_token": APP_TOKEN, "timeout_seconds": 2, **extra}
    return make_settings(tmp_path, database_url, bitrix24=bitrix24,
                         program={"welcome_bonus": "100", "bonuses": {"review": "50"}})


@pytest.fixture
def time() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def portal(time: VirtualClock) -> Iterator[FakeBitrix24]:
    with FakeBitrix24(clock=time) as fake:
        yield fake


@pytest.fixture
def h(tmp_path: Path, database_url: str, portal: FakeBitrix24, time: VirtualClock,
      clock: Clock) -> Iterator[Harness]:
    services = fresh_services(b24_settings(tmp_path, database_url, portal), clock=clock)
    yield Harness(portal, services, time, clock)
    services.close()


def setup_fields(h: Harness) -> None:
    h.connector.installer.install()


def test_deal_won_lost_won_again_with_new_amount_then_deleted(h: Harness) -> None:
    setup_fields(h)
    h.portal.put_contact(7)
    h.portal.put_deal(42, contact=7, amount="10000.00")
    assert h.send("ONCRMDEALADD", 42) == 200
    h.process()
    assert h.balance() == D("300.00")  # 3% at Bronze
    assert h.field(7, "balance") == "300"
    assert h.field(7, "tier") == "Bronze" and len(h.field(7, "card")) == 10

    h.portal.put_deal(42, contact=7, amount="10000.00", won=False, lost=True)
    h.send("ONCRMDEALUPDATE", 42)
    h.process()
    assert h.balance() == 0 and h.field(7, "balance") == "0"

    h.portal.put_deal(42, contact=7, amount="20000.00")
    h.send("ONCRMDEALUPDATE", 42)
    h.process()
    assert h.balance() == D("600.00")

    del h.portal.state.deals[42]
    h.send("ONCRMDEALDELETE", 42)
    h.process()
    view = h.services.ledger.account(ANNA)
    assert (view.balance, view.purchase_count) == (0, 0)
    assert h.services.ledger.verify() == (1, [])


def test_duplicate_and_out_of_order_events_change_nothing(h: Harness) -> None:
    h.portal.put_contact(7)
    h.portal.put_deal(42, contact=7, amount="10000.00")
    for event in ("ONCRMDEALUPDATE", "ONCRMDEALUPDATE", "ONCRMDEALADD"):  # ADD arrives last
        h.send(event, 42)
    counts = h.process()
    assert counts["done"] == 3 and h.balance() == D("300.00")
    assert h.portal.state.calls["batch"] >= 1 and h.portal.state.calls["crm.deal.get"] == 1
    h.send("ONCRMDEALUPDATE", 42)  # a late duplicate
    h.process()
    assert h.balance() == D("300.00")
    assert [e.kind for e in h.services.ledger.history(ANNA)] == ["accrual"]


def test_forged_and_malformed_requests_leave_nothing(h: Harness) -> None:
    forged = event_body("ONCRMDEALUPDATE", 42, application_token="f" * 32, domain=PORTAL)
    assert h.web.post("/bitrix24/events", data=forged, content_type=FORM).status_code == 401
    malformed = h.web.post("/bitrix24/events", data=b"event=ONCRMDEALUPDATE&data[FIELDS][ID]=",
                           content_type=FORM)
    assert malformed.status_code == 400 and malformed.json["error"] == "invalid_event"
    assert h.services.inbox.list() == [] and h.portal.state.http_requests == 0


def test_deal_without_contact_is_skipped_with_the_reason(h: Harness) -> None:
    h.portal.put_deal(43, contact=None, amount="500.00")
    h.send("ONCRMDEALADD", 43)
    assert h.process()["skipped"] == 1
    [item] = h.services.inbox.list()
    assert item.status == "skipped" and "no contact" in (item.last_error or "")


def test_portal_errors_for_a_while_lose_nothing_and_converge(h: Harness) -> None:
    h.portal.put_contact(7)
    for deal_id in range(1, 6):
        h.portal.put_deal(deal_id, contact=7, amount="1000.00")
        h.send("ONCRMDEALADD", deal_id)
    h.portal.fail_next(2, 503)  # absorbed by the client's own retries
    h.process()
    assert h.balance() == D("150.00")
    h.portal.put_deal(6, contact=7, amount="1000.00")
    h.send("ONCRMDEALADD", 6)
    h.portal.fail_next(40, 500)  # longer than the client retries: the inbox retries later
    counts = h.process()
    assert counts.get("failed") == 1 and h.balance() == D("150.00")
    [failed] = [i for i in h.services.inbox.list() if i.status == "pending"]
    assert "INTERNAL_SERVER_ERROR" in (failed.last_error or "")
    h.portal.state.calls.clear()
    h.portal._faults.clear()
    h.clock.advance(minutes=5)
    h.process()
    assert h.balance() == D("180.00") and h.portal.state.limit_errors == 0


def test_portal_timeouts_are_retried_then_converge(h: Harness) -> None:
    h.portal.put_contact(7)
    h.portal.put_deal(42, contact=7, amount="10000.00")
    h.send("ONCRMDEALADD", 42)
    h.portal.delay_next(1, 2.5)  # beyond the client's 2 s timeout, then answers again
    h.process()
    assert h.balance() == D("300.00")


def test_robot_redemption_is_capped_and_answered(h: Harness) -> None:
    h.portal.put_contact(7)
    h.services.ledger.adjust(ANNA, D("5000"), key="seed", reason="test funds")
    h.portal.put_deal(50, contact=7, amount="1000.00", won=False)
    assert h.robot("loyalty_redeem", 50, "tok-1", amount="900") == 200
    assert h.robot("loyalty_redeem", 50, "tok-1", amount="900") == 200  # delivered twice
    h.process()
    [answer] = h.portal.state.bizproc_events
    assert answer["EVENT_TOKEN"] == "tok-1"
    values = answer["RETURN_VALUES"]
    assert (values["redeemed"], values["balance"]) == ("500.00", "4500.00")
    assert "capped" in values["message"]
    assert h.balance() == D("4500.00")


def test_robots_accrue_a_named_bonus_and_read_the_balance(h: Harness) -> None:
    h.portal.put_contact(7)
    h.portal.put_deal(50, contact=7, amount="1000.00", won=False)
    h.portal.put_deal(51, contact=None, amount="1000.00", won=False)
    h.robot("loyalty_accrue", 50, "tok-a", bonus="review", comment="отзыв на сайте")
    h.robot("loyalty_balance", 51, "tok-b")
    h.process()
    h.robot("loyalty_balance", 50, "tok-c")
    h.process()
    answers = {e["EVENT_TOKEN"]: e["RETURN_VALUES"] for e in h.portal.state.bizproc_events}
    assert answers["tok-a"]["accrued"] == "50.00"
    assert "no contact" in answers["tok-b"]["message"]
    assert answers["tok-c"]["balance"] == "50.00" and answers["tok-c"]["tier"] == "Bronze"


def test_write_back_is_coalesced_and_its_echo_causes_no_loop(h: Harness) -> None:
    setup_fields(h)
    h.portal.put_contact(7)
    for deal_id in range(1, 31):
        h.portal.put_deal(deal_id, contact=7, amount="1000.00")
        h.send("ONCRMDEALADD", deal_id)
    h.process()
    assert len(h.portal.state.contact_updates) == 1  # thirty accruals, one write
    assert h.field(7, "balance") == "900"
    for _ in range(3):  # the echoes of our own write
        h.send("ONCRMCONTACTUPDATE", 7)
        h.process()
    assert len(h.portal.state.contact_updates) == 1
    h.portal.state.contacts[7][h.services.settings.bitrix24.fields["balance"]] = "1000000"
    h.send("ONCRMCONTACTUPDATE", 7)  # a manager typed over the balance
    h.process()
    assert h.portal.state.contact_updates[-1] == (7, {"UF_CRM_LOYALTY_BALANCE": "900"})
    h.send("ONCRMCONTACTUPDATE", 7)
    h.process()
    assert len(h.portal.state.contact_updates) == 2


def test_new_contact_gets_the_welcome_bonus_once_and_triggers_fire_on_deals(h: Harness) -> None:
    setup_fields(h)
    h.connector.installer.settings = h.connector.installer.settings  # app-only steps skipped
    h.portal.state.triggers.update({code: code for code in (
        "loyalty_welcome", "loyalty_points_accrued", "loyalty_tier_up")})
    h.portal.put_contact(7, BIRTHDATE="1990-05-01T00:00:00+03:00")
    h.send("ONCRMCONTACTADD", 7)
    h.send("ONCRMCONTACTADD", 7)
    h.process()
    assert h.balance() == D("100.00")
    assert h.services.ledger.account(ANNA).birthday.isoformat() == "1990-05-01"
    # no deal yet: the welcome trigger cannot run
    assert h.portal.state.fired_triggers == []
    h.portal.put_deal(60, contact=7, amount="40000.00")
    h.send("ONCRMDEALADD", 60)
    h.process()
    fired = {(t["CODE"], t["OWNER_ID"]) for t in h.portal.state.fired_triggers}
    assert fired == {("loyalty_points_accrued", "60"), ("loyalty_tier_up", "60")}
    h.send("ONCRMDEALUPDATE", 60)
    h.process()
    assert len(h.portal.state.fired_triggers) == 2  # once per transition


def test_reconcile_converges_when_every_event_was_lost(h: Harness) -> None:
    for contact in (7, 8):
        h.portal.put_contact(contact)
    h.portal.put_deal(1, contact=7, amount="10000.00")
    h.portal.put_deal(2, contact=8, amount="5000.00")
    h.portal.put_deal(3, contact=8, amount="5000.00", won=False)
    report = h.connector.reconcile()
    assert (report.deals, report.changed) == (3, 2)
    assert (h.balance(), h.balance(AccountRef("bitrix24", PORTAL, "8"))) == (D("300.00"),
                                                                            D("150.00"))
    assert h.connector.reconcile().changed == 0  # nothing new since the cursor
    h.portal.put_deal(3, contact=8, amount="5000.00")  # won later, event lost again
    assert h.connector.reconcile().changed == 1
    assert h.balance(AccountRef("bitrix24", PORTAL, "8")) == D("300.00")


def test_a_burst_never_trips_the_portal_limit(h: Harness) -> None:
    for contact in range(1, 301):
        h.portal.put_contact(contact)
        h.portal.put_deal(contact, contact=contact, amount="1000.00")
        h.send("ONCRMDEALADD", contact)
    h.process()
    assert h.portal.state.limit_errors == 0
    assert len(h.portal.state.contact_updates) == 300
    assert h.services.ledger.verify() == (300, [])
    # 300 events: 6 fetch batches, 6 write batches, 6 trigger batches; not 900 calls
    assert h.portal.state.calls["batch"] == 18
    assert h.portal.state.http_requests == 18


def test_install_is_idempotent_and_uninstall_removes_it(tmp_path: Path, database_url: str,
                                                         portal: FakeBitrix24,
                                                         time: VirtualClock,
                                                         clock: Clock) -> None:
    settings = b24_settings(tmp_path, database_url, portal, webhook_url=None,
                            client_id=portal.client_id, client_secret=portal.client_secret,
                            oauth_url=f"http://{portal.host}/oauth/token/")
    services = fresh_services(settings, clock=clock)
    h = Harness(portal, services, time, clock)
    tokens = portal.issue_tokens()
    assert h.send("ONAPPINSTALL", None, tokens=tokens) == 200
    h.process()
    first = h.connector.installer.install()
    assert len(portal.state.userfields) == 7 and len(portal.state.robots) == 3
    assert len(portal.state.triggers) == 6 and len(portal.state.bound_events) == 8
    again = h.connector.installer.install()
    assert all("exists" in line or "already" in line for line in again.lines())
    assert first.lines() != again.lines()
    portal.expire_tokens()  # the access token expires: refreshed once, the call goes on
    h.connector.installer.uninstall()
    assert portal.refreshes == 2
    assert (portal.state.userfields, portal.state.robots, portal.state.triggers,
            portal.state.bound_events) == ([], {}, {}, [])
    services.close()


def test_webhook_setup_prints_the_manual_steps(h: Harness) -> None:
    report = h.connector.installer.install()
    assert any("Outgoing webhook" in line for line in report.lines())
    assert h.portal.state.calls["event.bind"] == 0


def test_a_client_faster_than_the_portal_backs_off_and_loses_nothing(
        tmp_path: Path, database_url: str, time: VirtualClock, clock: Clock) -> None:
    # The portal's real bucket is smaller than configured (another app shares it).
    with FakeBitrix24(clock=time, rate=2, burst=3) as portal:
        services = fresh_services(b24_settings(tmp_path, database_url, portal), clock=clock)
        h = Harness(portal, services, time, clock)
        for contact in range(1, 121):
            portal.put_contact(contact)
            portal.put_deal(contact, contact=contact, amount="1000.00")
            h.send("ONCRMDEALADD", contact)
        h.process()
        assert portal.state.limit_errors > 0  # QUERY_LIMIT_EXCEEDED was answered...
        assert services.ledger.verify() == (120, [])  # ...and every event still landed
        assert all(item.status == "done" for item in services.inbox.list(limit=200))
        services.close()
