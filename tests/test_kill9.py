"""kill -9 in the middle of a burst: `loyalty-connector serve` runs as a real process against a
fake Bitrix24 portal, is killed while it holds claimed events and while events are still
arriving, and is started again. Every event it acknowledged must end in the ledger exactly
once, and the events the dead process had claimed must not stay claimed forever."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
import requests
from sqlalchemy import update

from connector.bitrix24.connector import Bitrix24Connector
from connector.db import utcnow
from connector.inbox import InboxEvent
from connector.ledger.views import AccountRef
from connector.ports import free_port
from connector.sandbox import FakeBitrix24Portal
from connector.services import Services
from tests.conftest import POSTGRES_URL, fresh_services, make_settings
from tests.outage import proxy_for
from tests.test_scheduler import command

REPO = Path(__file__).resolve().parents[1]
PORTAL = "acme.bitrix24.ru"
BATCH = 8  # inbox.batch_size: small groups, so the kill lands between groups
RATE = D("0.03")  # Bronze; no contact reaches Silver's 30000 below


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    """Poll until `condition` holds; generous, since CI machines are slow and shared."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class Service:
    """`loyalty-connector serve` as a child process on a free port."""

    def __init__(self, tmp_path: Path, database_url: str, portal: FakeBitrix24Portal) -> None:
        self.tmp_path, self.database_url, self.portal = tmp_path, database_url, portal
        self.config = tmp_path / "serve.toml"
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.runs = 0
        # An editable install made before a package had its __init__.py maps it as a
        # namespace package outside the repository; the path makes the test independent.
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        portal = self.portal
        self.config.write_text(
            f'[server]\nport = {self.port}\n'
            f'[database]\nurl = "{self.database_url}"\n'
            f'[inbox]\npoll_seconds = 0.2\nbatch_size = {BATCH}\n'
            # serve's inbox worker only: the scheduler's reconcile (run at start) would
            # settle the deals without the inbox and hide a lost event.
            '[scheduler]\nenabled = false\n'
            '[program]\nlanguage = "en"\n'  # verify's line is read in English
            f'[bitrix24]\nenabled = true\nwebhook_url = "{portal.webhook_url}"\n'
            f'portal = "{PORTAL}"\nmember_id = "{portal.member_id}"\n'
            f'application_token = "{portal.application_token}"\n'
            # Longer than the test holds a request at the portal's door.
            'timeout_seconds = 120\n',
            encoding="utf-8")

    def start(self) -> None:
        # A new port each run: the killed process's socket may linger in TIME_WAIT.
        self.port = free_port()
        self.write_config()
        self.runs += 1
        log = (self.tmp_path / f"serve-{self.runs}.log").open("w", encoding="utf-8")
        self.process = subprocess.Popen([*command(), "--config", str(self.config), "serve"],
                                        cwd=self.tmp_path, stdout=log,
                                        stderr=subprocess.STDOUT, text=True, env=self.env)
        log.close()
        wait_for("serve to answer /healthz", self._healthy, timeout_s=60)

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n"
                                 + self.log())
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode

    def log(self) -> str:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace")[-3000:]
                         for path in sorted(self.tmp_path.glob("serve-*.log")))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command(), "--config", str(self.config), *args],
                              cwd=self.tmp_path, capture_output=True, text=True,
                              env=self.env, timeout=120)


@dataclass
class Deal:
    id: int
    contact: int
    amount: D

    @property
    def cashback(self) -> D:
        return (self.amount * RATE).quantize(D("1"))  # whole amounts: exact


@dataclass
class Sender:
    """Posts deal events as the portal's outgoing webhook would; remembers the answers."""

    service: Service
    portal: FakeBitrix24Portal
    acked: list[tuple[str, int]] = field(default_factory=list)
    unacked: list[tuple[str, int]] = field(default_factory=list)

    def post(self, event: str, deal_id: int) -> bool:
        body, content_type = self.portal.event_body(event, deal_id)
        try:
            status = requests.post(f"{self.service.url}/bitrix24/events", data=body,
                                   headers={"Content-Type": content_type},
                                   timeout=30).status_code
        except requests.ConnectionError:
            status = 0
        (self.acked if status == 200 else self.unacked).append((event, deal_id))
        return status == 200


@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(domain=PORTAL) as fake:
        yield fake
        fake.gate.release()


@pytest.fixture
def services(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal
             ) -> Iterator[Services]:
    """The test's own view of the service's database (and its Bitrix24 settings)."""
    services = fresh_services(make_settings(tmp_path, database_url, bitrix24={
        "enabled": True, "webhook_url": portal.webhook_url, "portal": PORTAL}))
    yield services
    services.close()


def inbox_ids(services: Services, status: str) -> set[int]:
    return {item.id for item in services.inbox.list(status=status, limit=10_000)}


def test_kill_9_mid_burst_then_restart_processes_every_acknowledged_event_once(
        tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
        services: Services) -> None:
    Bitrix24Connector(services).installer.install()  # the contact fields write-back fills
    rng = random.Random(9)
    contacts = [portal.add_contact(NAME=f"Client {n}") for n in range(12)]
    deals: list[Deal] = []
    for n in range(48):  # four deals a contact, at most 4000 each
        contact, amount = contacts[n % 12], D(100 * (1 + (7 * n) % 40))
        deals.append(Deal(portal.add_deal(contact_ids=[contact], STAGE_ID="WON",
                                          OPPORTUNITY=str(amount)), contact, amount))
    portal.drain_outbox()  # the test posts the events itself
    first = [("ONCRMDEALADD", d.id) for d in deals[:36]]
    first += [("ONCRMDEALUPDATE", d.id) for d in deals[:36:6]]  # repeats for the same deal
    rng.shuffle(first)
    second = [("ONCRMDEALADD", d.id) for d in deals[36:]]
    second += [("ONCRMDEALUPDATE", d.id) for d in deals[:3]]
    rng.shuffle(second)

    service = Service(tmp_path, database_url, portal)
    sender = Sender(service, portal)
    try:
        # Requests to the portal wait at its door, so the test decides when the service
        # is inside a call with a group of events claimed.
        portal.gate.hold()
        service.start()
        arrived = portal.gate.arrived
        for event, deal_id in first:
            assert sender.post(event, deal_id)
        wait_for("the first group's fetch", lambda: portal.gate.waiting == 1)
        # One request at a time until two groups or more are done and a full group is
        # inside its fetch. (A group smaller than a claim is written back before it is
        # settled, a request of its own: how many requests that takes depends on how the
        # events met the claims.)
        for passed in range(1, 40):
            claimed = inbox_ids(services, "processing")
            depth = services.inbox.depth()
            if len(claimed) == BATCH and depth["done"] >= 2 * BATCH + 1:
                break
            portal.gate.allow(1)
            wait_for("the next request", lambda n=passed: portal.gate.arrived == arrived + n + 1
                     and portal.gate.waiting == 1)
        assert len(claimed) == BATCH and depth["done"] >= 2 * BATCH + 1, depth
        assert depth["pending"] > 0  # partly drained

        for event, deal_id in second[:5]:
            assert sender.post(event, deal_id)

        def keep_sending() -> None:
            for event, deal_id in second[5:]:
                sender.post(event, deal_id)
                time.sleep(0.05)

        rest = threading.Thread(target=keep_sending)
        rest.start()
        wait_for("events arriving during the kill", lambda: len(sender.acked) >= len(first) + 7
                 or not rest.is_alive())
        service.kill()
        rest.join(timeout=60)
        portal.gate.release()

        # The dead process's group is still claimed, under its lease.
        assert inbox_ids(services, "processing") == claimed
        service.start()
        wait_for("the inbox drained up to the dead process's claim", lambda: (
            services.inbox.depth()["pending"] == 0
            and inbox_ids(services, "processing") == claimed))
        # A live worker's lease is respected; once it runs out (inbox.lease_seconds,
        # stood in for here by moving it back) the group is taken up again.
        with services.db.transaction() as session:
            session.execute(update(InboxEvent).where(InboxEvent.id.in_(claimed))
                            .values(locked_until=utcnow() - timedelta(seconds=1)))
        # The portal never re-sends; an event the service did not acknowledge is the
        # sender's to deliver again.
        retried, sender.unacked = sender.unacked, []
        for event, deal_id in retried:
            assert sender.post(event, deal_id)
        # Acknowledged means stored: once nothing is pending or claimed, all of it was
        # processed (an event cut off by the kill may be stored once more than acknowledged).
        wait_for("the whole inbox processed", lambda: (
            (depth := services.inbox.depth())["pending"] == depth["processing"] == 0
            and sum(depth.values()) >= len(sender.acked)), timeout_s=120)

        ledger = services.ledger
        fields = Bitrix24Connector(services).writeback
        refs = {c: AccountRef("bitrix24", PORTAL, str(c)) for c in contacts}

        def written() -> bool:  # the contact fields converge to the ledger
            ids = {c: ledger.account_id(ref) for c, ref in refs.items()}
            wanted = fields.wanted([i for i in ids.values() if i is not None], utcnow())
            balance = services.settings.bitrix24.fields["balance"]
            return all(i is not None and portal.contact(c).get(balance) ==
                       wanted[i][balance] for c, i in ids.items())

        wait_for("the write-back", written)
        assert service.stop() == 0, service.log()
    except AssertionError as exc:  # what the service said is the first thing to read
        raise AssertionError(f"{exc}\n--- serve log ---\n{service.log()}") from exc
    finally:
        portal.gate.release()
        service.stop()

    assert Counter(deal_id for _, deal_id in sender.acked) == Counter(
        deal_id for _, deal_id in first + second)
    accruals: dict[str, list[D]] = {}
    for contact, ref in refs.items():
        history = ledger.history(ref, limit=1000)
        assert {entry.kind for entry in history} == {"accrual"}
        for entry in history:
            accruals.setdefault(entry.source or entry.key, []).append(entry.points)
        assert ledger.account(ref).balance == sum(d.cashback for d in deals
                                                  if d.contact == contact)
    assert accruals == {f"bitrix24:{PORTAL}:deal:{d.id}": [d.cashback]
                        for d in deals}  # one accrual per won deal, none twice
    assert sum(sum(points) for points in accruals.values()) == sum(d.cashback for d in deals)
    assert {item.status for item in services.inbox.list(limit=1000)} == {"done"}
    verify = service.cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout == f"checked {len(contacts)} accounts, 0 mismatches\n"


@pytest.mark.skipif(POSTGRES_URL is None, reason="a PostgreSQL outage needs "
                                                 "LOYALTY_TEST_DATABASE_URL")
def test_a_postgres_outage_of_seconds_heals_at_once(tmp_path: Path,
                                                     portal: FakeBitrix24Portal) -> None:
    """PostgreSQL goes away for a few seconds (a proxy the test cuts: the shared server stays
    up) while `serve` holds a claimed group: requests get 503 with Retry-After, never 200;
    the group is given back as soon as the database answers, not after the 15-minute lease;
    every event is applied once."""
    assert POSTGRES_URL is not None
    services = fresh_services(make_settings(tmp_path, POSTGRES_URL, bitrix24={
        "enabled": True, "webhook_url": portal.webhook_url, "portal": PORTAL}))
    Bitrix24Connector(services).installer.install()
    contacts = [portal.add_contact(NAME=f"Client {n}") for n in range(4)]
    deals = [Deal(portal.add_deal(contact_ids=[contacts[n % 4]], STAGE_ID="WON",
                                  OPPORTUNITY=str(D(100 * (n + 1)))), contacts[n % 4],
                  D(100 * (n + 1))) for n in range(16)]
    portal.drain_outbox()
    with proxy_for(POSTGRES_URL) as proxy:
        service = Service(tmp_path, proxy.url_for(POSTGRES_URL), portal)
        sender = Sender(service, portal)
        try:
            portal.gate.hold()
            service.start()
            for deal in deals[:BATCH]:
                assert sender.post("ONCRMDEALADD", deal.id)
            wait_for("the first group's fetch", lambda: portal.gate.waiting == 1)
            claimed = inbox_ids(services, "processing")
            assert claimed  # a group is inside its fetch
            proxy.cut()  # PostgreSQL is away
            for deal in deals[BATCH:]:
                body, content_type = portal.event_body("ONCRMDEALADD", deal.id)
                answer = requests.post(f"{service.url}/bitrix24/events", data=body,
                                       headers={"Content-Type": content_type}, timeout=30)
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "5"
                assert answer.json()["error"] == "database_unavailable"
            portal.gate.release()  # the group's fetch returns; its ledger writes fail
            time.sleep(3)
            assert inbox_ids(services, "processing") == claimed  # still away: still held
            proxy.restore()
            wait_for("the claims given back and processed", lambda: not (
                inbox_ids(services, "processing") & claimed), timeout_s=60)
            for deal in deals[BATCH:]:  # the CRM delivers again after Retry-After
                assert sender.post("ONCRMDEALADD", deal.id)
            wait_for("the whole inbox processed", lambda: (
                (depth := services.inbox.depth())["pending"] == depth["processing"] == 0
                and depth["done"] == len(deals)), timeout_s=60)
            assert service.stop() == 0
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- serve log ---\n{service.log()}") from exc
        finally:
            portal.gate.release()
            service.stop()
    log = service.log()
    assert "Traceback" not in log, log
    assert log.count("database unavailable (") == 1  # the 503s: one line, not one each
    assert "given back" in log and "the database answers again" in log
    for contact in contacts:
        ref = AccountRef("bitrix24", PORTAL, str(contact))
        assert services.ledger.account(ref).balance == sum(
            d.cashback for d in deals if d.contact == contact)
    services.close()
