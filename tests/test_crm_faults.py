"""The CRM misbehaving: down for a while, slower than the client's timeout, answering
503/429/500 at random (a seeded chaos mode of the fakes). Nothing received is lost, the ledger
and the CRM fields converge, and the connector never sends faster than the CRM's limit.
Also: a call that creates something in amoCRM is not repeated when it may have run."""

from __future__ import annotations

import contextlib
import random
import time as real_time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from flask.testing import FlaskClient
from sqlalchemy import func, select
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from connector import mirror
from connector.amocrm.connector import AmoCRMConnector
from connector.bitrix24.connector import Bitrix24Connector
from connector.config import AmoCRMSettings
from connector.crm.amocrm import AmoCRMClient
from connector.crm.bitrix24 import Bitrix24Client
from connector.crm.limiter import LeakyBucket
from connector.crm.models import TriggerEvent
from connector.crm.retry import INITIAL_DELAY_S, MAX_DELAY_S
from connector.errors import CRMError, FatalCRMError
from connector.ledger.views import AccountRef
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from connector.sandbox.faults import Chaos, RequestLog
from connector.services import Services
from connector.worker import Worker
from tests.conftest import Clock, fresh_services, make_settings
from webhooks import create_app

FORM = "application/x-www-form-urlencoded"
B24_PORTAL = "acme.bitrix24.ru"
AMO_SECRET = "Wh00kSecret0123456789"
RATE = D("0.03")  # Bronze; no contact reaches Silver's 30000 below
TIMEOUT_S = 1.0  # the clients' timeout; chaos holds slow answers longer
SLOW_S = 1.6
# One event per group, so one call each: the most calls, more than the CRM's burst, so the
# client's own limiter is what keeps them under the CRM's limit; and more calls meet chaos.
ONE_BY_ONE = {"batch_size": 1}


@pytest.fixture(autouse=True)
def _repeatable() -> None:
    """Backoff jitter (tenacity, the inbox) moves the fake clock, which decides when the
    down window starts; a fixed seed makes every run meet the same faults."""
    random.seed(20240229)


@dataclass
class Deal:
    id: int
    contact: int
    amount: D
    entries: int = 1  # its accrual, and one more for the difference when the amount changes

    @property
    def cashback(self) -> D:
        return (self.amount * RATE).quantize(D("1"))  # whole amounts: exact


def time_passes(time: ManualClock) -> float:
    """A second on, so the requests before now are told apart from those after."""
    return time.advance(1)


def settle(services: Services, flush: Callable[[], object], crm: str, portal: str,
           clock: Clock, time: ManualClock, rounds: int = 40) -> int:
    """Run the inbox job until nothing is left to process or write back, moving both clocks
    on between runs as the scheduler's next runs would come; returns the runs it took."""
    for run in range(1, rounds + 1):
        Worker(services.inbox, services.processors()).drain()
        with contextlib.suppress(CRMError):  # the job fails; its next run writes back
            flush()
        depth = services.inbox.depth()
        if depth["pending"] == depth["processing"] == 0 and not mirror.dirty(
                services.db, crm, portal, 1):
            return run
        clock.advance(minutes=10)
        time.advance(600)
    raise AssertionError(f"not settled after {rounds} runs: {services.inbox.depth()}")


def assert_ledger(services: Services, crm: str, portal: str, deals: list[Deal],
                  source: Callable[[int], str]) -> None:
    """Each won deal earned exactly its cashback (one accrual, plus a difference when its
    amount changed), every account holds its deals' sum, and verify agrees."""
    by_source: dict[str, D] = {}
    accruals: Counter[str] = Counter()
    contacts = sorted({d.contact for d in deals})
    for contact in contacts:
        ref = AccountRef(crm, portal, str(contact))
        for entry in services.ledger.history(ref, limit=1000):
            assert entry.kind == "accrual" and entry.source is not None, entry
            by_source[entry.source] = by_source.get(entry.source, D(0)) + entry.points
            accruals[entry.source] += 1
        assert services.ledger.account(ref).balance == sum(
            d.cashback for d in deals if d.contact == contact)
    assert by_source == {source(d.id): d.cashback for d in deals}
    assert accruals == {source(d.id): d.entries for d in deals}  # none twice
    assert services.ledger.verify() == (len(contacts), [])
    statuses = Counter(item.status for item in services.inbox.list(limit=10_000))
    assert set(statuses) == {"done"}, statuses  # nothing dead, skipped or waiting


def assert_no_storm(log: RequestLog, rate: float, burst: int, down: tuple[float, float],
                    max_retries: int) -> None:
    """The CRM's bucket takes `burst` at once and `rate` a second after, so no window of W
    seconds may see more than burst + rate * W requests: not in a second, not in a minute."""
    for seconds in (1, 10, 60):
        assert log.max_in_window(seconds) <= burst + rate * seconds, seconds
    # While the CRM is down every attempt fails. One call at a time, each making at most
    # max_retries + 1 attempts at least 1, 2, 4, ... s apart (`span` in all): calls starting
    # in the window are `span` apart, plus one call that started before it.
    start, end = down
    span = sum(min(INITIAL_DELAY_S * 2 ** n, MAX_DELAY_S) for n in range(max_retries))
    calls = (end - start) // span + 1
    assert log.between(start, end) <= (max_retries + 1) * calls + max_retries


# -- Bitrix24 ------------------------------------------------------------------------------
class B24:
    """Our app, inbox, worker and write-back wired to a fake portal on a manual clock."""

    def __init__(self, tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
                 time: ManualClock, clock: Clock) -> None:
        self.portal, self.time, self.clock = portal, time, clock
        settings = make_settings(tmp_path, database_url, inbox=ONE_BY_ONE, bitrix24={
            "enabled": True, "webhook_url": portal.webhook_url, "portal": B24_PORTAL,
            "application_token": portal.application_token, "member_id": portal.member_id,
            "timeout_seconds": TIMEOUT_S})
        self.services = fresh_services(settings, clock=clock)
        b24 = settings.bitrix24
        client = Bitrix24Client(b24, limiter=LeakyBucket(
            b24.requests_per_second, b24.burst - 1, clock=time.monotonic, sleep=time.sleep),
            sleep=time.sleep, clock=time.time)
        self.connector = Bitrix24Connector(self.services, client=client)
        self.services.bitrix24 = self.connector  # type: ignore[misc]
        self.web: FlaskClient = create_app(services=self.services).test_client()

    def send(self, event: str, deal_id: int) -> int:
        body, content_type = self.portal.event_body(event, deal_id)
        return self.web.post("/bitrix24/events", data=body,
                             content_type=content_type).status_code

    def settle(self) -> int:
        return settle(self.services, self.connector.flush, "bitrix24", B24_PORTAL,
                      self.clock, self.time)

    def fields_converged(self, contacts: list[int]) -> bool:
        ids = {c: self.services.ledger.account_id(AccountRef("bitrix24", B24_PORTAL, str(c)))
               for c in contacts}
        wanted = self.connector.writeback.wanted([i for i in ids.values() if i is not None],
                                                 self.clock())
        # A field never written is unset, which is what an empty value shows.
        return all(i is not None and all((self.portal.contact(c).get(name) or "") == value
                                         for name, value in wanted[i].items())
                   for c, i in ids.items())


@pytest.fixture
def b24(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[B24]:
    time = ManualClock()
    with FakeBitrix24Portal(clock=time, domain=B24_PORTAL) as portal:
        harness = B24(tmp_path, database_url, portal, time, clock)
        harness.connector.installer.install()  # the contact fields
        yield harness
        harness.services.close()


def test_bitrix24_chaos_loses_nothing_converges_and_keeps_under_the_limit(b24: B24) -> None:
    portal = b24.portal
    contacts = [portal.add_contact(NAME=f"Client {n}") for n in range(15)]
    deals = []
    for n in range(60):
        contact, amount = contacts[n % 15], D(100 * (1 + (7 * n) % 40))
        deals.append(Deal(portal.add_deal(contact_ids=[contact], STAGE_ID="WON",
                                          OPPORTUNITY=str(amount)), contact, amount))
    portal.drain_outbox()
    portal.chaos = chaos = Chaos(seed=5, errors=0.3, resets=0.1, slow=0.1,
                                 slow_seconds=SLOW_S, max_slow=2)
    for deal in deals:
        assert b24.send("ONCRMDEALADD", deal.id) == 200
    for deal in deals[::6]:  # repeated deliveries
        assert b24.send("ONCRMDEALUPDATE", deal.id) == 200
    b24.settle()

    def change(changed: list[Deal]) -> None:  # amounts change while the chaos goes on
        for deal in changed:
            deal.amount += 1000
            deal.entries += 1
            portal.update_deal(deal.id, OPPORTUNITY=str(deal.amount))
            assert b24.send("ONCRMDEALUPDATE", deal.id) == 200

    now = time_passes(b24.time)
    down = (now, now + 300)  # the portal drops every connection for five minutes
    chaos.down.append(down)
    change(deals[:5])
    b24.settle()
    portal.down()  # and then refuses connections outright
    change(deals[5:10])
    Worker(b24.services.inbox, b24.services.processors()).drain()
    assert b24.services.inbox.depth()["pending"] == 5
    portal.up()
    b24.settle()

    assert {"error", "reset", "slow", "down"} <= set(chaos.counts), chaos.counts
    assert_ledger(b24.services, "bitrix24", B24_PORTAL, deals,
                  lambda deal_id: f"bitrix24:{B24_PORTAL}:deal:{deal_id}")
    assert b24.fields_converged(contacts)
    assert portal.limit_errors == 0  # the portal's own bucket never had to refuse
    settings = b24.services.settings.bitrix24
    assert_no_storm(portal.request_log, settings.requests_per_second, settings.burst, down,
                    settings.max_retries)


# -- amoCRM --------------------------------------------------------------------------------
class Amo:
    def __init__(self, tmp_path: Path, database_url: str, account: FakeAmoCRM,
                 time: ManualClock, clock: Clock) -> None:
        self.account, self.time, self.clock = account, time, clock
        triggers = {"loyalty_points_accrued": {"salesbot_id": 4242, "note": True}}
        settings = make_settings(tmp_path, database_url, inbox=ONE_BY_ONE, amocrm={
            "enabled": True, "base_url": account.base_url, "subdomain": "example",
            "webhook_secret": AMO_SECRET, "long_lived_token": "long-lived-token",
            "timeout_seconds": TIMEOUT_S, "triggers": triggers})
        self.services = fresh_services(settings, clock=clock)
        amo = settings.amocrm
        self.portal = amo.portal_key
        client = AmoCRMClient(amo, limiter=LeakyBucket(
            amo.requests_per_second, amo.burst, clock=time.monotonic, sleep=time.sleep),
            sleep=time.sleep)
        self.connector = AmoCRMConnector(self.services, client=client)
        self.services.amocrm = self.connector  # type: ignore[misc]
        self.web: FlaskClient = create_app(services=self.services).test_client()
        for code in amo.fields.values():  # created by `install amocrm`
            account.state.custom_fields.append({"id": 700000 + len(
                account.state.custom_fields), "code": code, "type": "text", "name": code})

    def hook(self, *lead_ids: int) -> int:
        items = [{"id": str(lead_id), "status_id": "142", "pipeline_id": "3104455",
                  "old_status_id": "20067736", "price": "0"} for lead_id in lead_ids]
        return self.web.post(f"/amocrm/webhooks/{AMO_SECRET}",
                             data=webhook_body("leads", "status", items),
                             content_type=FORM).status_code

    def settle(self) -> int:
        return settle(self.services, self.connector.flush, "amocrm", self.portal, self.clock,
                      self.time)

    def fields_converged(self, contacts: list[int]) -> bool:
        ids = {c: self.services.ledger.account_id(AccountRef("amocrm", self.portal, str(c)))
               for c in contacts}
        wanted = self.connector.writeback.wanted([i for i in ids.values() if i is not None],
                                                 self.clock())
        return all(i is not None and all((self.account.field_value(c, code) or "") == value
                                         for code, value in wanted[i].items())
                   for c, i in ids.items())


@pytest.fixture
def amo(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[Amo]:
    time = ManualClock()
    with FakeAmoCRM(clock=time) as account:
        harness = Amo(tmp_path, database_url, account, time, clock)
        yield harness
        harness.services.close()


def test_amocrm_chaos_loses_nothing_converges_and_keeps_under_the_limit(amo: Amo) -> None:
    account = amo.account
    contacts = list(range(10971465, 10971477))
    deals = []
    for n, contact in enumerate(contacts * 4):
        if n < len(contacts):
            account.put_contact(contact)
        amount = D(100 * (1 + (7 * n) % 40))
        account.put_lead(n + 1, contact=contact, price=int(amount))
        deals.append(Deal(n + 1, contact, amount))
    account.chaos = chaos = Chaos(seed=3, errors=0.3, resets=0.1, slow=0.1,
                                  slow_seconds=SLOW_S, max_slow=2)
    # The first Salesbot run answers after the client gave up; it ran all the same.
    account.delay_next(1, SLOW_S, path="/api/v2/salesbot/run")
    for first in range(0, len(deals), 4):  # amoCRM sends several leads in one webhook
        assert amo.hook(*(d.id for d in deals[first:first + 4])) == 200
    for deal in deals[::7]:
        assert amo.hook(deal.id) == 200
    amo.settle()

    def change(changed: list[Deal]) -> None:
        for deal in changed:
            deal.amount += 1000
            deal.entries += 1
            account.put_lead(deal.id, contact=deal.contact, price=int(deal.amount))
            assert amo.hook(deal.id) == 200

    now = time_passes(amo.time)
    down = (now, now + 300)
    chaos.down.append(down)
    change(deals[:5])
    amo.settle()
    account.down()
    change(deals[5:10])
    Worker(amo.services.inbox, amo.services.processors()).drain()
    assert amo.services.inbox.depth()["pending"] == 5
    account.up()
    amo.settle()

    assert {"error", "reset", "slow", "down"} <= set(chaos.counts), chaos.counts
    assert_ledger(amo.services, "amocrm", amo.portal, deals,
                  lambda lead_id: f"amocrm:{amo.portal}:lead:{lead_id}")
    assert amo.fields_converged(contacts)
    assert account.state.too_many == 0  # the account's own limit never had to refuse
    settings = amo.services.settings.amocrm
    assert_no_storm(account.request_log, settings.requests_per_second, settings.burst, down,
                    settings.max_retries)
    # A bot run or note that may have run is not sent again: at most one per accrual entry
    # (a changed amount is an accrual of its own, and a transition of its own).
    accruals = Counter({c: len(amo.services.ledger.history(
        AccountRef("amocrm", amo.portal, str(c)), limit=1000)) for c in contacts})
    with amo.services.db.transaction(write=False) as session:
        sent = session.scalar(select(func.count()).select_from(TriggerEvent)
                              .where(TriggerEvent.status == "sent"))
    for runs in (Counter(r["entity_id"] for r in account.state.salesbot_runs),
                 Counter(n["entity_id"] for n in account.state.notes)):
        assert sent <= runs.total() and all(runs[c] <= accruals[c] for c in runs), runs


# -- amoCRM: what is repeated after which failure ------------------------------------------
AMO_URL = "https://example.amocrm.ru"


def amo_client(**overrides: Any) -> AmoCRMClient:
    settings = AmoCRMSettings.model_validate({
        "enabled": True, "base_url": AMO_URL, "long_lived_token": "t" * 40,
        "webhook_secret": AMO_SECRET, "max_retries": 3, **overrides})
    time = ManualClock()  # backoff and the 429 pause take no real time
    return AmoCRMClient(settings, limiter=LeakyBucket(
        settings.requests_per_second, settings.burst, clock=time.monotonic, sleep=time.sleep),
        sleep=time.sleep)


def refused() -> requests.ConnectionError:
    """How requests reports a refused connection (urllib3 could not connect)."""
    return requests.ConnectionError(MaxRetryError(
        None, "/", NewConnectionError(None, "[Errno 111] Connection refused")))  # type: ignore[arg-type]


def reset() -> requests.ConnectionError:
    """How requests reports a connection dropped after the request went out."""
    return requests.ConnectionError(ProtocolError("Connection aborted.",
                                                  ConnectionResetError(104, "reset")))


NOTE = ("POST", "/api/v4/contacts/notes")
BOT = ("POST", "/api/v2/salesbot/run")


@pytest.mark.parametrize(("call", "failure", "repeated"), [
    pytest.param(NOTE, requests.ReadTimeout("read timed out"), False, id="note-read-timeout"),
    pytest.param(BOT, requests.ReadTimeout("read timed out"), False, id="bot-read-timeout"),
    pytest.param(BOT, reset(), False, id="bot-connection-reset"),
    pytest.param(BOT, 502, False, id="bot-502"),
    pytest.param(BOT, 500, False, id="bot-500"),
    pytest.param(BOT, refused(), True, id="bot-connection-refused"),  # never reached amoCRM
    pytest.param(BOT, requests.ConnectTimeout("connect timed out"), True,
                 id="bot-connect-timeout"),
    pytest.param(BOT, 429, True, id="bot-429"),  # refused by the gateway before it ran
    pytest.param(("POST", "/api/v4/webhooks"), requests.ReadTimeout("read timed out"), True,
                 id="webhook-upsert-read-timeout"),
    pytest.param(("GET", "/api/v4/leads"), requests.ReadTimeout("read timed out"), True,
                 id="get-read-timeout"),
    pytest.param(("PATCH", "/api/v4/contacts"), reset(), True, id="patch-connection-reset"),
    pytest.param(("PATCH", "/api/v4/contacts"), 503, True, id="patch-503"),
])
def test_amocrm_repeats_a_post_only_when_it_cannot_have_run(
        call: tuple[str, str], failure: Exception | int, repeated: bool) -> None:
    method, path = call
    client = amo_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        if isinstance(failure, int):
            mock.add(method, f"{AMO_URL}{path}", status=failure, body="<html></html>",
                     content_type="text/html")
        else:
            mock.add(method, f"{AMO_URL}{path}", body=failure)
        mock.add(method, f"{AMO_URL}{path}", json={"ok": True}, status=200)
        if repeated:
            assert client.request(method, path, json=[{"entity_id": 1}]) == {"ok": True}
            assert len(mock.calls) == 2
        else:
            with pytest.raises(FatalCRMError, match="not repeated"):
                client.request(method, path, json=[{"entity_id": 1}])
            assert len(mock.calls) == 1


def test_amocrm_slow_bot_run_runs_once_and_a_refused_note_is_sent_once() -> None:
    with FakeAmoCRM() as account:
        bot = [{"bot_id": 4242, "entity_id": 10971465, "entity_type": 1}]
        client = amo_client(base_url=account.base_url, long_lived_token="long-lived-token",
                            timeout_seconds=0.5)
        account.delay_next(1, 1.5)  # answered after the client gave up; it ran all the same
        with pytest.raises(FatalCRMError, match="timed out; not repeated"):
            client.request("POST", "/api/v2/salesbot/run", json=bot)
        deadline = real_time.monotonic() + 20
        while not account.state.salesbot_runs and real_time.monotonic() < deadline:
            real_time.sleep(0.05)
        assert account.state.salesbot_runs == bot
        real_time.sleep(0.5)  # a repeat, if one were sent, would land by now
        assert account.state.calls["POST /api/v2/salesbot/run"] == 1

        account.down()
        client.sleep = lambda _: account.up()  # back by the first retry
        note = [{"entity_id": 10971465, "note_type": "common", "params": {"text": "hi"}}]
        client.request("POST", "/api/v4/contacts/notes", json=note)
        assert account.state.notes == note


def test_chaos_is_reproducible_and_the_log_counts_sliding_windows() -> None:
    def verdicts(seed: int) -> list[str]:
        chaos = Chaos(seed=seed, errors=0.3, resets=0.1, slow=0.1, slow_seconds=1,
                      down=[(50, 60)])
        return [chaos.draw(float(t))[0] for t in range(100)]

    assert verdicts(1) == verdicts(1) != verdicts(2)
    assert set(verdicts(1)[50:60]) == {"down"}
    log = RequestLog()
    for at in (0, 0.5, 1, 59.9, 60, 61, 200):
        log.add(at)
    assert log.max_in_window(60) == 4  # 0.5, 1, 59.9, 60 (or 1 ... 61)
    assert log.between(0, 60) == 4 and len(log) == 7
