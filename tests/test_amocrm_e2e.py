"""amoCRM end to end: webhooks into our Flask app, the worker against a fake account (a real
local HTTP server) speaking API v4, HAL lists, 204s, HTML 429s and single-use refresh tokens."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from time import monotonic, sleep
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from connector.amocrm.authorization import authorization_url, same_account
from connector.amocrm.connector import AmoCRMConnector
from connector.amocrm.install import FIELD_TYPES
from connector.config import AmoCRMSettings, Settings
from connector.crm.amocrm import AmoCRMClient
from connector.crm.credentials import Tokens
from connector.crm.limiter import LeakyBucket
from connector.crm.models import OAuthState, TriggerEvent
from connector.db import utcnow
from connector.errors import CRMAuthError, RetriableCRMError
from connector.ledger.views import AccountRef
from connector.lifecycle import birthday_bonuses
from connector.sandbox import ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from connector.services import Services
from connector.triggers import TIER_UP, WELCOME
from connector.worker import Worker
from tests.conftest import Clock, count_settles, fresh_services, make_settings
from tests.test_concurrency import in_parallel
from webhooks import create_app

SECRET = "Wh00kSecret0123456789"
FORM = "application/x-www-form-urlencoded"
PORTAL = "127.0.0.1"
ANNA = AccountRef("amocrm", PORTAL, "10971465")


def amo_settings(tmp_path: Path, database_url: str, account: FakeAmoCRM, *,
                 language: str = "en", **extra: Any) -> Settings:
    """English notes and tasks by default, as the tests read them; `language`: another
    program.language."""
    amocrm = {"enabled": True, "base_url": account.base_url, "subdomain": "example",
              "webhook_secret": SECRET,
              "long_lived_token": "long-lived-token", "timeout_seconds": 2, **extra}
    return make_settings(tmp_path, database_url, amocrm=amocrm,
                         program={"welcome_bonus": "100", "language": language},
                         server={"metrics_token": "metrics-token-0123456789"})


class Harness:
    def __init__(self, account: FakeAmoCRM, services: Services, time: ManualClock,
                 clock: Clock) -> None:
        self.account, self.services, self.time, self.clock = account, services, time, clock
        self.client = self.new_client()
        self.connector = AmoCRMConnector(services, client=self.client)
        services.amocrm = self.connector  # type: ignore[misc]
        self.web: FlaskClient = create_app(services=services).test_client()
        for code in services.settings.amocrm.fields.values():
            account.state.custom_fields.append({"id": 700000 + len(
                account.state.custom_fields), "code": code, "type": "text", "name": code})

    def new_client(self) -> AmoCRMClient:
        settings = self.services.settings.amocrm
        return AmoCRMClient(settings, credentials=self.services.amocrm_credentials,
                            limiter=LeakyBucket(settings.requests_per_second, settings.burst,
                                                clock=self.time.monotonic,
                                                sleep=self.time.sleep),
                            sleep=self.time.sleep)

    def hook(self, entity: str, action: str, *items: dict[str, Any],
             secret: str = SECRET, headers: dict[str, str] | None = None) -> int:
        return self.web.post(f"/amocrm/webhooks/{secret}", data=webhook_body(
            entity, action, list(items)), content_type=FORM, headers=headers).status_code

    def authorize(self) -> Any:
        """The administrator opens the link `install`/`doctor` prints and allows access; amoCRM
        redirects to the callback."""
        query = self.account.consent(authorization_url(self.services))
        return self.web.get("/amocrm/oauth/callback", query_string=query)

    def process(self) -> dict[str, int]:
        counts = Worker(self.services.inbox, self.services.processors()).drain()
        return {**counts, **self.connector.flush()}

    def balance(self, ref: AccountRef = ANNA) -> D:
        return self.services.ledger.account(ref).balance


@contextmanager
def running(settings: Settings, account: FakeAmoCRM, time: ManualClock,
            clock: Clock) -> Iterator[Harness]:
    """A harness on fresh services with these settings, closed on leaving."""
    services = fresh_services(settings, clock=clock)
    yield Harness(account, services, time, clock)
    services.close()


@pytest.fixture
def h(tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
      clock: Clock) -> Iterator[Harness]:
    with running(amo_settings(tmp_path, database_url, account), account, time, clock) as h:
        yield h


def status(lead_id: int, status_id: int = 142) -> dict[str, Any]:
    return {"id": str(lead_id), "status_id": str(status_id), "old_status_id": "20067736",
            "pipeline_id": "3104455", "price": "0"}


def test_lead_won_unwon_rewon_with_new_price_deleted(h: Harness) -> None:
    h.account.put_contact(10971465)
    h.account.put_lead(1, contact=10971465, price=10000)
    assert h.hook("leads", "status", status(1)) == 200
    h.process()
    assert h.balance() == D("300.00")
    assert h.account.field_value(10971465, "LOYALTY_BALANCE") == "300"

    h.account.put_lead(1, contact=10971465, price=10000, status=143)
    h.hook("leads", "status", status(1, 143))
    h.process()
    assert h.balance() == 0 and h.account.field_value(10971465, "LOYALTY_BALANCE") == "0"

    h.account.put_lead(1, contact=10971465, price=20000)
    h.hook("leads", "update", status(1))
    h.process()
    assert h.balance() == D("600.00")

    del h.account.state.leads[1]
    h.hook("leads", "delete", {"id": "1"})
    h.process()
    assert h.balance() == 0 and h.services.ledger.account(ANNA).purchase_count == 0
    assert h.services.ledger.verify() == (1, [])


def test_duplicate_and_out_of_order_webhooks_change_nothing(h: Harness) -> None:
    h.account.put_contact(10971465)
    h.account.put_lead(1, contact=10971465, price=10000)
    request = {"X-Amocrm-Requestid": "423651ce-905d-4833-9db0-a21f44575517"}
    assert h.hook("leads", "status", status(1), headers=request) == 200
    assert h.hook("leads", "status", status(1), headers=request) == 200  # a re-delivery
    h.hook("leads", "add", status(1, 20067736))  # an old "add" arriving late
    h.process()
    assert len(h.services.inbox.list()) == 2 and h.balance() == D("300.00")
    assert h.account.state.calls["GET /api/v4/leads"] == 1  # one filtered read for both


def test_wrong_secret_and_malformed_bodies_store_nothing(h: Harness) -> None:
    assert h.hook("leads", "status", status(1), secret="WrongSecret0123456789") == 404
    bad = h.web.post(f"/amocrm/webhooks/{SECRET}", data=b"hello=world", content_type=FORM)
    assert bad.status_code == 400 and bad.json["error"] == "invalid_webhook"
    assert h.web.post(f"/amocrm/webhooks/{SECRET}", json={"leads": 1}).status_code == 415
    other = webhook_body("leads", "status", [status(1)], subdomain="someone-else")
    assert h.web.post(f"/amocrm/webhooks/{SECRET}", data=other,
                      content_type=FORM).status_code == 400
    assert h.services.inbox.list() == [] and h.account.state.http_requests == 0


def test_429_and_5xx_bursts_lose_nothing_and_converge(h: Harness) -> None:
    h.account.put_contact(10971465)
    for lead_id in range(1, 4):
        h.account.put_lead(lead_id, contact=10971465, price=1000)
        h.hook("leads", "status", status(lead_id))
    h.account.fail_next(2, 429)  # HTML, no Retry-After: backed off and retried
    h.process()
    assert h.balance() == D("90.00")
    h.account.put_lead(4, contact=10971465, price=1000)
    h.hook("leads", "status", status(4))
    h.account.fail_next(20, 502)  # longer than the client retries: the inbox keeps it
    h.process()
    assert h.balance() == D("90.00")
    h.account._faults.clear()
    h.clock.advance(minutes=5)
    h.process()
    assert h.balance() == D("120.00")


def test_blocked_account_stops_calls_and_keeps_events(h: Harness) -> None:
    h.account.put_contact(10971465)
    h.account.put_lead(1, contact=10971465, price=1000)
    h.hook("leads", "status", status(1))
    h.account.blocked = True
    assert h.process().get("deferred") == 1
    assert h.account.state.http_requests == 1  # 403 is not retried
    h.account.blocked = False
    h.clock.advance(minutes=6)
    h.process()
    assert h.balance() == D("30.00")


def test_write_back_echo_causes_no_loop(h: Harness) -> None:
    h.account.put_contact(10971465)
    for lead_id in range(1, 11):
        h.account.put_lead(lead_id, contact=10971465, price=1000)
        h.hook("leads", "status", status(lead_id))
    h.process()
    assert len(h.account.state.contact_patches) == 1  # ten accruals, one write
    echo = {"id": "10971465", "type": "contact", "custom_fields": {"0": {
        "id": "700000", "code": "LOYALTY_BALANCE", "values": {"0": {"value": "300"}}}}}
    for _ in range(3):
        h.hook("contacts", "update", echo)
        h.process()
    assert len(h.account.state.contact_patches) == 1
    edited = {**echo, "custom_fields": {"0": {"id": "700000", "code": "LOYALTY_BALANCE",
                                              "values": {"0": {"value": "999"}}}}}
    h.hook("contacts", "update", edited)
    h.process()
    assert h.account.state.contact_patches[-1] == [{"id": 10971465, "custom_fields_values": [
        {"field_code": "LOYALTY_BALANCE", "values": [{"value": "300"}]}]}]


def test_new_contact_gets_the_welcome_bonus_once(h: Harness) -> None:
    h.account.put_contact(10971465)
    contact = {"id": "10971465", "name": "Анна", "type": "contact"}
    h.hook("contacts", "add", contact)
    h.hook("contacts", "add", contact)
    h.process()
    assert h.balance() == D("100.00")


def test_pipeline_action_grants_a_bonus_and_redeems_with_a_note(h: Harness) -> None:
    h.account.put_contact(10971465)
    h.account.put_lead(5, contact=10971465, price=1000, status=20067736)
    body = webhook_body("leads", "status", [status(5, 20067736)])
    bonus = h.web.post(f"/amocrm/actions/{SECRET}/bonus/welcome", data=body, content_type=FORM)
    redeem = h.web.post(f"/amocrm/actions/{SECRET}/redeem/max", data=body, content_type=FORM)
    assert bonus.status_code == redeem.status_code == 200
    assert h.web.post(f"/amocrm/actions/{SECRET}/explode", data=body,
                      content_type=FORM).status_code == 404
    h.process()
    assert h.balance() == D("0.00")  # 100 granted, then all of it redeemed (cap 500)
    texts = [note["params"]["text"] for note in h.account.state.notes]
    assert texts == ["Loyalty: bonus welcome +100.00 points, balance 100.00",
                     "Loyalty: redeemed 100.00 points, balance 0.00"]


METRICS = {"Authorization": "Bearer metrics-token-0123456789"}  # /healthz shows its checks


def oauth(tmp_path: Path, database_url: str, account: FakeAmoCRM, clock: Clock) -> Services:
    settings = amo_settings(tmp_path, database_url, account, long_lived_token=None,
                            client_id=account.client_id, client_secret=account.client_secret,
                            redirect_uri="https://loyalty.example/amocrm/oauth/callback")
    return fresh_services(settings, clock=clock)


def test_two_workers_refresh_once_and_both_continue(tmp_path: Path, database_url: str,
                                                    account: FakeAmoCRM, time: ManualClock,
                                                    clock: Clock) -> None:
    services = oauth(tmp_path, database_url, account, clock)
    h = Harness(account, services, time, clock)
    callback = h.authorize()
    assert callback.status_code == 200 and account.state.refreshes == 1
    account.put_lead(1, contact=None, price=10)
    account.expire_tokens()
    workers = [h.new_client(), h.new_client()]
    start = threading.Barrier(2)
    answers: list[Any] = []

    def work(client: AmoCRMClient) -> None:
        start.wait()
        answers.append(client.request("GET", "/api/v4/leads/1"))

    threads = [threading.Thread(target=work, args=(client,)) for client in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [answer["id"] for answer in answers] == [1, 1]
    assert account.state.refreshes == 2  # exactly one refresh for both workers
    services.close()


def test_revoked_refresh_token_stops_calls_and_keeps_events(tmp_path: Path, database_url: str,
                                                            account: FakeAmoCRM,
                                                            time: ManualClock,
                                                            clock: Clock) -> None:
    services = oauth(tmp_path, database_url, account, clock)
    h = Harness(account, services, time, clock)
    services.amocrm_credentials.save(Tokens("stale", "revoked-refresh",
                                            utcnow() - timedelta(hours=1), account.base_url))
    account.put_contact(10971465)
    account.put_lead(1, contact=10971465, price=10000)
    h.hook("leads", "status", status(1))
    assert h.process().get("deferred") == 1
    [item] = services.inbox.list()
    assert item.status == "pending" and "re-authorize" in (item.last_error or "")
    assert services.amocrm_credentials.status()[0] == "revoked"
    with pytest.raises(CRMAuthError, match="re-authorize"):
        h.client.request("GET", "/api/v4/leads/1")
    calls = account.state.http_requests
    h.process()
    assert account.state.http_requests == calls  # no retry storm while revoked
    callback = h.authorize()
    assert callback.status_code == 200 and callback.json["events_resumed"] == 1
    [item] = services.inbox.list()
    assert item.next_attempt_at <= clock.now  # due now, not after the 5-minute auth delay
    assert h.process().get("done") == 1  # the clock has not moved
    assert h.balance() == D("300.00")
    services.close()


@pytest.fixture
def ho(tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
       clock: Clock) -> Iterator[Harness]:
    """The harness with OAuth configured and nothing authorized yet."""
    services = oauth(tmp_path, database_url, account, clock)
    yield Harness(account, services, time, clock)
    services.close()


def stored_tokens(h: Harness) -> Tokens | None:
    return h.services.amocrm_credentials.load()


@pytest.mark.parametrize(("change", "status", "error"), [
    ({"state": None}, 403, "invalid_state"),
    ({"state": None, "from_widget": "1"}, 403, "invalid_state"),
    ({"state": "a-state-never-issued"}, 403, "invalid_state"),
    ({"referer": "another.amocrm.ru"}, 403, "wrong_account"),
    ({"client_id": "another-integration"}, 403, "wrong_integration"),
    ({"code": None}, 400, "invalid_request"),
    ({"error": "access_denied", "code": None}, 400, "access_denied"),
], ids=["no-state", "from-widget-without-state", "unknown-state", "other-account",
        "other-integration", "no-code", "access-denied"])
def test_oauth_callback_refused_changes_nothing(ho: Harness, change: dict[str, str | None],
                                                status: int, error: str) -> None:
    query = ho.account.consent(authorization_url(ho.services))
    for key, value in change.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    refused = ho.web.get("/amocrm/oauth/callback", query_string=query)
    assert (refused.status_code, refused.json["error"]) == (status, error)
    assert refused.json["detail"]
    assert stored_tokens(ho) is None and ho.account.state.refreshes == 0  # no code traded
    assert "code" not in query or query["code"] not in refused.get_data(as_text=True)


def test_oauth_state_is_single_use_and_expires(ho: Harness) -> None:
    first = ho.account.consent(authorization_url(ho.services))
    assert ho.web.get("/amocrm/oauth/callback", query_string=first).status_code == 200
    tokens = stored_tokens(ho)
    assert tokens is not None
    ho.account.codes.add("code-replayed")  # a valid code, the used state
    replay = ho.web.get("/amocrm/oauth/callback", query_string={**first,
                                                                "code": "code-replayed"})
    assert (replay.status_code, replay.json["error"]) == (403, "invalid_state")
    assert stored_tokens(ho) == tokens and "code-replayed" in ho.account.codes
    late = ho.account.consent(authorization_url(ho.services))
    ho.clock.advance(minutes=31)
    expired = ho.web.get("/amocrm/oauth/callback", query_string=late)
    assert (expired.status_code, expired.json["error"]) == (403, "invalid_state")
    assert stored_tokens(ho) == tokens


def test_oauth_refused_referer_leaves_the_state_usable(ho: Harness) -> None:
    query = ho.account.consent(authorization_url(ho.services))
    wrong = ho.web.get("/amocrm/oauth/callback",
                       query_string={**query, "referer": "example.kommo.com.evil.ru"})
    assert wrong.status_code == 403 and stored_tokens(ho) is None
    assert ho.web.get("/amocrm/oauth/callback", query_string=query).status_code == 200


def test_oauth_state_is_stored_only_as_a_hash(ho: Harness) -> None:
    url = authorization_url(ho.services)
    state = ho.account.consent(url)["state"]
    assert len(state) >= 40  # 256 random bits
    with ho.services.db.transaction(write=False) as session:
        rows = session.execute(select(OAuthState.crm, OAuthState.portal,
                                      OAuthState.state_hash)).all()
    assert rows == [("amocrm", PORTAL, hashlib.sha256(state.encode()).hexdigest())]
    assert "mode=post_message" in url and f"client_id={ho.account.client_id}" in url


def test_two_callbacks_with_one_state_pass_once(ho: Harness) -> None:
    states = ho.services.oauth_states
    for _ in range(5):
        state = states.issue("amocrm", PORTAL)
        passed = in_parallel(2, lambda _, state=state: states.consume("amocrm", PORTAL, state))
        assert sorted(passed, key=str) == [False, True]
    assert not states.consume("amocrm", "other.amocrm.ru", states.issue("amocrm", PORTAL))


def test_referer_must_be_the_configured_account_host() -> None:
    settings = AmoCRMSettings(base_url="https://example.amocrm.ru")
    assert same_account("example.amocrm.ru", settings)
    assert same_account("Example.AmoCRM.ru", settings)
    for other in ("example.kommo.com", "evil.amocrm.ru", "example.amocrm.ru.evil.ru", "",
                  "example"):
        assert not same_account(other, settings), other
    proxied = AmoCRMSettings(base_url="https://amo-proxy.internal", subdomain="example")
    assert same_account("example.amocrm.ru", proxied)
    for other in ("another.amocrm.ru", "example", "example.evil.ru", "example.kommo.com"):
        assert not same_account(other, proxied), other


def test_install_is_idempotent_and_uninstall_removes_it(h: Harness) -> None:
    h.account.state.custom_fields.clear()
    first = h.connector.installer.install()
    codes = {f["code"] for f in h.account.state.custom_fields}
    assert codes == set(h.services.settings.amocrm.fields.values())
    # Only the connector writes them; a referral code is typed in by people.
    assert all(f["is_api_only"] is (f["code"] != "LOYALTY_REFERRED_BY")
               for f in h.account.state.custom_fields)
    [hook] = h.account.state.webhooks
    assert hook["destination"].endswith(f"/amocrm/webhooks/{SECRET}")
    assert {"status_lead", "delete_lead", "update_contact"} <= set(hook["settings"])
    again = h.connector.installer.install()
    assert len(h.account.state.custom_fields) == len(FIELD_TYPES)
    assert len(h.account.state.webhooks) == 1
    assert sum("contact field" in line and "exists" in line for line in again.lines()) \
        == len(FIELD_TYPES)
    assert "lead field LOYALTY_PROMO_CODE exists" in again.lines()
    assert SECRET not in "\n".join(first.lines())  # the report can be pasted anywhere
    h.connector.installer.uninstall()
    assert (h.account.state.custom_fields, h.account.state.webhooks) == ([], [])


def test_reconcile_converges_when_every_webhook_was_lost(h: Harness) -> None:
    h.account.put_contact(10971465)
    h.account.put_lead(1, contact=10971465, price=10000)
    h.account.put_lead(2, contact=10971465, price=5000, status=143)
    h.account.put_lead(3, contact=None, price=700)
    report = h.connector.reconcile()
    assert (report.deals, report.changed, report.without_contact) == (3, 1, 1)
    assert h.balance() == D("300.00")
    assert h.connector.reconcile().changed == 0
    h.account.put_lead(2, contact=10971465, price=5000)  # won later, the hook was lost
    assert h.connector.reconcile().changed == 1
    assert h.balance() == D("450.00")


@pytest.mark.parametrize(("leads", "requests"), [(250, 1), (251, 2), (600, 3)])
def test_reconcile_reads_250_leads_with_their_contacts_per_request(
        h: Harness, leads: int, requests: int) -> None:
    h.account.put_contact(10971465)
    for lead in range(1, leads + 1):
        h.account.put_lead(lead, contact=10971465, price=1000)
    before = h.account.state.http_requests
    report = h.connector.reconcile(full=True)
    assert report.deals == leads and report.calls == requests  # the fewest: leads / 250
    assert h.account.state.http_requests - before == requests


def test_marketing_triggers_tag_run_a_salesbot_and_note_once(
        tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock) -> None:
    triggers = {"loyalty_points_accrued": {"tag": "points", "lead_tag": True},
                "loyalty_tier_up": {"tag": "vip", "salesbot_id": 4242, "note": True},
                "loyalty_welcome": False}
    services = fresh_services(amo_settings(tmp_path, database_url, account,
                                           triggers=triggers), clock=clock)
    h = Harness(account, services, time, clock)
    account.put_contact(10971465)
    account.put_lead(1, contact=10971465, price=40000)
    h.hook("leads", "status", status(1))
    h.hook("contacts", "add", {"id": "10971465", "type": "contact"})
    counts = h.process()
    assert counts["amocrm_triggers_sent"] == 2
    assert sorted(account.state.tags_added) == [("contacts", 10971465, "points"),
                                                ("contacts", 10971465, "vip"),
                                                ("leads", 1, "points")]
    assert account.state.salesbot_runs == [{"bot_id": 4242, "entity_id": 10971465,
                                            "entity_type": 1}]
    assert [n["params"]["text"] for n in account.state.notes] == ["Loyalty: tier upgraded"]
    h.hook("leads", "update", status(1))
    h.process()
    assert len(account.state.tags_added) == 3  # once per transition
    with services.db.transaction(write=False) as session:
        welcome = session.scalar(select(TriggerEvent).where(TriggerEvent.code == WELCOME))
        assert welcome is not None and welcome.status == "skipped"  # turned off
    services.close()


def test_healthz_reports_revoked_credentials(tmp_path: Path, database_url: str,
                                            account: FakeAmoCRM, time: ManualClock,
                                            clock: Clock) -> None:
    services = oauth(tmp_path, database_url, account, clock)
    h = Harness(account, services, time, clock)
    checks = h.web.get("/healthz", headers=METRICS).json["checks"]
    assert checks["amocrm"].startswith("not authorized yet")
    assert h.authorize().status_code == 200
    checks = h.web.get("/healthz", headers=METRICS).json["checks"]
    assert checks == {"database": "ok", "amocrm": "ok"}
    services.amocrm_credentials.revoke("amocrm oauth refused (401): Token has been revoked")
    response = h.web.get("/healthz", headers=METRICS)
    assert response.status_code == 503
    assert response.json["checks"]["amocrm"].startswith("revoked: amocrm oauth refused")
    services.close()


def test_birthday_from_the_configured_field_earns_the_birthday_bonus(
        tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock) -> None:
    clock = Clock(datetime(2027, 5, 16, 21, 30, tzinfo=UTC))  # May 17 in Moscow
    settings = make_settings(tmp_path, database_url, amocrm={
        **amo_settings(tmp_path, database_url, account).amocrm.model_dump(),
        "birthday_field_id": 555}, program={"welcome_bonus": "100", "birthday_bonus": "200"})
    services = fresh_services(settings, clock=clock)
    h = Harness(account, services, time, clock)
    try:
        account.put_contact(10971465)
        midnight = int(datetime(1990, 5, 17, tzinfo=ZoneInfo("Europe/Moscow")).timestamp())
        born = {"0": {"id": "555", "name": "День рождения",
                      "values": {"0": {"value": str(midnight)}}}}
        h.hook("contacts", "add", {"id": "10971465", "type": "contact", "custom_fields": born})
        h.process()
        assert services.ledger.account(ANNA).birthday == date(1990, 5, 17)
        assert birthday_bonuses(services) == 1
        assert h.balance() == D("300.00")  # welcome 100 + birthday 200
        # A later edit of the field in amoCRM moves the birthday.
        moved = {"0": {"id": "555", "values": {"0": {"value": "1990-06-01"}}}}
        h.hook("contacts", "update", {"id": "10971465", "type": "contact",
                                      "custom_fields": moved})
        h.process()
        assert services.ledger.account(ANNA).birthday == date(1990, 6, 1)
    finally:
        services.close()


def test_a_salesbot_run_is_never_repeated_when_the_note_after_it_fails(
        tmp_path: Path, database_url: str, account: FakeAmoCRM, time: ManualClock,
        clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    triggers = {"loyalty_tier_up": {"salesbot_id": 4242, "note": True}}
    services = fresh_services(amo_settings(tmp_path, database_url, account,
                                           triggers=triggers), clock=clock)
    h = Harness(account, services, time, clock)
    request = h.client.request

    def notes_throttled(method: str, path: str, **kwargs: Any) -> Any:
        if path == "/api/v4/contacts/notes":
            raise RetriableCRMError("amocrm POST notes: too many requests (429)", status=429)
        return request(method, path, **kwargs)

    monkeypatch.setattr(h.client, "request", notes_throttled)
    account.put_contact(10971465)
    account.put_lead(1, contact=10971465, price=40000)
    h.hook("leads", "status", status(1))
    h.process()
    h.process()
    assert len(account.state.salesbot_runs) == 1  # the bot ran; the failed note sent nothing
    with services.db.transaction(write=False) as session:
        tier_up = session.scalar(select(TriggerEvent).where(TriggerEvent.code == TIER_UP))
    assert tier_up is not None and tier_up.status == "failed"
    assert (tier_up.last_error or "").startswith("partly sent, not repeated: ")
    services.close()


def test_a_pipeline_action_whose_note_timed_out_is_not_written_twice(h: Harness) -> None:
    h.account.put_contact(10971465)
    h.account.put_lead(5, contact=10971465, price=1000, status=20067736)
    body = webhook_body("leads", "status", [status(5, 20067736)])
    h.web.post(f"/amocrm/actions/{SECRET}/bonus/welcome", data=body, content_type=FORM)
    # The note is written but answered after the client gave up (timeout_seconds = 2).
    h.account.delay_next(1, 3.0, path="/api/v4/leads/notes")
    counts = h.process()
    assert counts.get("done") == 1 and h.balance() == D("100.00")
    h.process()
    deadline = monotonic() + 10
    while not h.account.state.notes and monotonic() < deadline:
        sleep(0.1)  # the slow answer's work finishes in the fake after the client gave up
    assert len(h.account.state.notes) == 1
    assert all(item.status == "done" for item in h.services.inbox.list())


def test_hooks_naming_one_lead_in_a_group_settle_it_once(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    settles = count_settles(h.services.ledger, monkeypatch)
    h.account.put_contact(10971465)
    h.account.put_lead(1, contact=10971465, price=10000)
    for action in ("status", "update", "update"):
        h.hook("leads", action, status(1))
    counts = h.process()
    assert counts["done"] == 3 and len(settles) == 1
    assert h.balance() == D("300.00")
