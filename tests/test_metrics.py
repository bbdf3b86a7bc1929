"""GET /metrics: process counters (requests, CRM calls, limiter waits, inbox outcomes) and
values read from the database (inbox depth and age, points by kind), parsed back exactly."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.orm import Session

from connector.config import Settings
from connector.crm.amocrm import AmoCRMClient
from connector.crm.bitrix24 import Bitrix24Client
from connector.crm.limiter import LeakyBucket
from connector.errors import FatalCRMError
from connector.ledger.views import AccountRef
from connector.metrics import (
    RESCAN_AFTER,
    SETTLED_AFTER,
    DatabaseCollector,
    LedgerPoints,
    Metrics,
    database_scrapes,
    rest_route,
)
from connector.sandbox import FakeBitrix24Portal, ManualClock
from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
from connector.scheduler import Job, find_job, run_job
from connector.services import Services
from connector.worker import Worker
from tests.conftest import Clock, fresh_services, make_settings
from webhooks import create_app

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PORTAL = "acme.bitrix24.ru"
FORM = "application/x-www-form-urlencoded"
AMO_SECRET = "Wh00kSecret0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(web: FlaskClient) -> Samples:
    response = web.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.data
    return parse(response.get_data(as_text=True))


def uncached(services: Services, clock: Clock) -> Metrics:
    """Every scrape reads the database again, so a test sees each change at once."""
    services.metrics = Metrics(services.db, clock=clock, max_age=0)  # type: ignore[misc]
    return services.metrics


@pytest.fixture
def services(settings: Settings, clock: Clock) -> Iterator[Services]:
    services = fresh_services(settings, clock=clock)
    uncached(services, clock)
    yield services
    services.close()


@pytest.fixture
def web(services: Services) -> FlaskClient:
    return create_app(services=services).test_client()


# -- access --------------------------------------------------------------------------------
def test_metrics_need_the_admin_token(web: FlaskClient) -> None:
    assert web.get("/metrics").status_code == 401
    assert web.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = web.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")


def test_a_metrics_token_is_accepted_beside_the_admin_token(services: Services) -> None:
    server = services.settings.server.model_copy(
        update={"metrics_token": SecretStr("prometheus-scrape-token")})
    services.settings = services.settings.model_copy(update={"server": server})
    web = create_app(services=services).test_client()
    scraper = {"Authorization": "Bearer prometheus-scrape-token"}
    assert web.get("/metrics", headers=scraper).status_code == 200
    assert web.get("/metrics", headers=AUTH).status_code == 200


def test_metrics_are_off_without_any_token(tmp_path: Path, database_url: str) -> None:
    services = fresh_services(make_settings(tmp_path, database_url))
    try:
        response = create_app(services=services).test_client().get("/metrics", headers=AUTH)
        assert (response.status_code, response.json["error"]) == (403, "metrics_disabled")
    finally:
        services.close()


# -- HTTP requests -------------------------------------------------------------------------
def test_requests_are_counted_by_url_rule_and_status(web: FlaskClient) -> None:
    web.get("/healthz")
    web.get("/healthz")
    web.get("/no/such/page")
    web.get("/api/v1/accounts/bitrix24/p/1")  # no token: 401
    samples = scrape(web)
    assert value(samples, "loyalty_http_requests_total", endpoint="/healthz", status="200") == 2
    assert value(samples, "loyalty_http_requests_total", endpoint="unmatched",
                 status="404") == 1
    assert value(samples, "loyalty_http_requests_total",
                 endpoint="/api/v1/accounts/<crm>/<portal>/<contact_id>", status="401") == 1
    assert value(samples, "loyalty_http_request_duration_seconds_count",
                 endpoint="/healthz") == 2


# -- the ledger ----------------------------------------------------------------------------
def test_points_totals_are_the_ledger_sums_by_kind(services: Services, web: FlaskClient,
                                                   clock: Clock) -> None:
    ref = AccountRef("bitrix24", PORTAL, "7")
    accrued = services.ledger.accrue(ref, D("10000.00"), key="deal-1")
    redeemed = services.ledger.redeem(ref, D("120.50"), key="pay-1",
                                      purchase_amount=D("1000.00"))
    clock.advance(days=400)
    assert services.ledger.expire_due() == 1
    samples = scrape(web)
    assert value(samples, "loyalty_points_credited_total", kind="accrual") == \
        float(accrued.points)
    assert value(samples, "loyalty_points_debited_total", kind="redemption") == 120.5
    assert value(samples, "loyalty_points_debited_total", kind="expiry") == \
        float(accrued.points - D("120.50"))
    assert redeemed.balance == accrued.points - D("120.50")
    assert value(samples, "loyalty_ledger_entries_total", kind="expiry") == 1
    assert value(samples, "loyalty_points_credited_total", kind="bonus") == 0


def test_points_are_read_incrementally_and_stay_exact(services: Services,
                                                      clock: Clock) -> None:
    points, ref = LedgerPoints(), AccountRef("bitrix24", PORTAL, "7")

    def accrued() -> float:
        with services.db.transaction(write=False) as session:
            families = list(points(session, clock()))
        return next(sample.value for family in families for sample in family.samples
                    if family.name == "loyalty_points_credited"
                    and sample.labels["kind"] == "accrual")

    first = services.ledger.accrue(ref, D("1000.00"), key="deal-1")
    assert accrued() == float(first.points)
    assert points.settled_id == 0  # too recent to be folded in: read again next time
    clock.advance(seconds=SETTLED_AFTER.total_seconds() + 1)
    second = services.ledger.accrue(ref, D("2000.00"), key="deal-2")
    assert accrued() == float(first.points + second.points)
    assert points.settled_id == first.entry_id
    clock.advance(seconds=SETTLED_AFTER.total_seconds() + 1)
    assert accrued() == float(first.points + second.points)
    assert points.settled_id == second.entry_id
    clock.advance(seconds=RESCAN_AFTER.total_seconds())
    scanned_before = points.scanned_at
    assert accrued() == float(first.points + second.points)
    assert points.scanned_at != scanned_before and points.settled_id == second.entry_id


# -- the database read ---------------------------------------------------------------------
def test_database_values_are_cached_for_max_age(services: Services, clock: Clock) -> None:
    now = [100.0]
    collector = DatabaseCollector(services.db, database_scrapes(), clock=clock, max_age=5.0,
                                  monotonic=lambda: now[0])

    def pending() -> float:
        depth = next(m for m in collector.collect() if m.name == "loyalty_inbox_items")
        return next(s.value for s in depth.samples if s.labels["status"] == "pending")

    assert pending() == 0
    services.inbox.put(source="bitrix24", kind="ONCRMDEALADD", dedup_key="k1", body=b"")
    now[0] += 4.9
    assert pending() == 0
    now[0] += 0.1
    assert pending() == 1


def broken_read(session: Session, now: datetime) -> Iterator[Any]:
    session.execute(text("SELECT count(*) FROM no_such_table"))
    yield from ()


def test_a_failing_database_read_leaves_the_others_reported(services: Services,
                                                            clock: Clock) -> None:
    metrics = Metrics(services.db, clock=clock, max_age=0,
                      scrapes=[*database_scrapes(), broken_read])
    samples = parse(metrics.exposition().decode())
    assert value(samples, "loyalty_metrics_database_read_failed", scrape="broken_read") == 1
    assert value(samples, "loyalty_metrics_database_read_failed", scrape="job_runs") == 0
    assert value(samples, "loyalty_metrics_database_read_failed", scrape="inbox_depth") == 0
    assert value(samples, "loyalty_inbox_items", status="pending") == 0


# -- jobs ----------------------------------------------------------------------------------
def test_job_runs_whoever_ran_them(services: Services, clock: Clock) -> None:
    services.ledger.accrue(AccountRef("bitrix24", "acme", "1"), D("1000"), key="d1")
    run_job(services, find_job(services.settings, "rfm_segments"))

    def broken(_: Services) -> int:
        raise RuntimeError("the ledger is on fire")

    with pytest.raises(RuntimeError):
        run_job(services, Job("expire_points", broken, 3600))
    run_job(services, find_job(services.settings, "expire_points"))
    metrics = Metrics(services.db, clock=clock, max_age=0)
    samples = parse(metrics.exposition().decode())
    assert value(samples, "loyalty_job_runs_total", job="rfm_segments", outcome="ok") == 1
    assert value(samples, "loyalty_job_runs_total", job="expire_points", outcome="ok") == 1
    assert value(samples, "loyalty_job_runs_total", job="expire_points", outcome="failed") == 1
    assert value(samples, "loyalty_job_last_run_ok", job="expire_points") == 1
    assert value(samples, "loyalty_job_last_result", job="rfm_segments", count="new") == 1
    assert value(samples, "loyalty_job_last_duration_seconds", job="rfm_segments") >= 0


# -- the rate limiter ----------------------------------------------------------------------
def test_limiter_waits_are_counted_with_their_seconds() -> None:
    time, metrics = ManualClock(), Metrics()
    bucket = LeakyBucket(2.0, 1, clock=time.monotonic, sleep=time.sleep,
                         on_wait=metrics.limiter_waited("bitrix24"))
    for _ in range(3):
        bucket.acquire()
    samples = parse(metrics.exposition().decode())
    assert value(samples, "loyalty_crm_limiter_waits_total", crm="bitrix24") == 2
    assert value(samples, "loyalty_crm_limiter_wait_seconds_total", crm="bitrix24") == \
        pytest.approx(1.0)


def test_rest_routes_lose_their_ids() -> None:
    assert rest_route("get", "/api/v4/leads/123/notes") == "GET /api/v4/leads/{id}/notes"
    assert rest_route("PATCH", "/api/v4/contacts") == "PATCH /api/v4/contacts"


# -- Bitrix24 end to end -------------------------------------------------------------------
@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(domain=PORTAL) as fake:
        yield fake


@pytest.fixture
def b24(tmp_path: Path, database_url: str, portal: FakeBitrix24Portal,
        clock: Clock) -> Iterator[Services]:
    settings = make_settings(
        tmp_path, database_url, server={"admin_token": TOKEN},
        bitrix24={"enabled": True, "webhook_url": portal.webhook_url, "portal": PORTAL,
                  "application_token": portal.application_token,
                  "member_id": portal.member_id, "timeout_seconds": 2})
    services = fresh_services(settings, clock=clock)
    uncached(services, clock)
    yield services
    services.close()


def test_bitrix24_events_through_the_worker(b24: Services, portal: FakeBitrix24Portal,
                                            clock: Clock) -> None:
    assert b24.bitrix24 is not None  # built by Services: its client reports to b24.metrics
    b24.bitrix24.installer.install()
    anna = portal.add_contact(NAME="Anna")
    deal = portal.add_deal(contact_ids=[anna], STAGE_ID="WON", OPPORTUNITY="10000.00")
    web = create_app(services=b24).test_client()
    for event in ("ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALUPDATE"):
        body, content_type = portal.event_body(event, deal)
        assert web.post("/bitrix24/events", data=body, content_type=content_type).status_code \
            == 200
    clock.advance(seconds=90)

    before = scrape(web)
    assert value(before, "loyalty_inbox_items", status="pending") == 3
    assert value(before, "loyalty_inbox_oldest_pending_age_seconds") == 90
    assert value(before, "loyalty_http_requests_total", endpoint="/bitrix24/events",
                 status="200") == 3

    counts = Worker(b24.inbox, b24.processors(), metrics=b24.metrics).drain()
    b24.flush_crms()
    after = scrape(web)
    assert counts == {"done": 3}
    assert value(after, "loyalty_inbox_items", status="pending") == 0
    assert value(after, "loyalty_inbox_items", status="dead") == 0
    assert ("loyalty_inbox_items", frozenset({("status", "done")})) not in after
    assert value(after, "loyalty_inbox_oldest_pending_age_seconds") == 0
    assert value(after, "loyalty_inbox_items_processed_total", source="bitrix24",
                 outcome="done") == 3
    assert value(after, "loyalty_points_credited_total", kind="accrual") == 300
    # One series per method the portal saw, each with the portal's own count.
    requests = Counter(call.method for call in portal.calls if call.batch is None)
    counted = {dict(labels)["method"]: n for (name, labels), n in after.items()
               if name == "loyalty_crm_calls_total" and dict(labels)["crm"] == "bitrix24"}
    assert counted == requests and "batch" in counted
    assert {dict(labels)["result"] for (name, labels) in after
            if name == "loyalty_crm_calls_total"} == {"ok"}


def test_bitrix24_retries_are_counted_by_result(b24: Services,
                                                portal: FakeBitrix24Portal) -> None:
    time = ManualClock()
    client = Bitrix24Client(b24.settings.bitrix24, sleep=time.sleep, metrics=b24.metrics)
    contact = portal.add_contact(NAME="Anna")
    portal.fail_next(2, 500)
    client.call("crm.contact.get", {"id": contact})
    portal.fail_next(1, 400, "INVALID_ARG_VALUE")
    with pytest.raises(FatalCRMError, match="INVALID_ARG_VALUE"):
        client.call("crm.contact.get", {"id": contact})
    samples = parse(b24.metrics.exposition().decode())
    for result, count in (("retriable", 2), ("ok", 1), ("fatal", 1)):
        assert value(samples, "loyalty_crm_calls_total", crm="bitrix24",
                     method="crm.contact.get", result=result) == count


# -- amoCRM end to end ---------------------------------------------------------------------
def test_amocrm_calls_match_what_the_account_saw(tmp_path: Path, database_url: str,
                                                 clock: Clock) -> None:
    time = ManualClock()
    with FakeAmoCRM(clock=time) as account:
        settings = make_settings(
            tmp_path, database_url, server={"admin_token": TOKEN},
            amocrm={"enabled": True, "base_url": account.base_url, "subdomain": "example",
                    "webhook_secret": AMO_SECRET, "long_lived_token": "long-lived-token",
                    "timeout_seconds": 2})
        services = fresh_services(settings, clock=clock)
        try:
            metrics = uncached(services, clock)
            amo = services.settings.amocrm
            client = AmoCRMClient(amo, limiter=LeakyBucket(
                amo.requests_per_second, amo.burst, clock=time.monotonic, sleep=time.sleep),
                sleep=time.sleep, metrics=metrics)
            for code in amo.fields.values():
                account.state.custom_fields.append({
                    "id": 700000 + len(account.state.custom_fields), "code": code,
                    "type": "text", "name": code})
            account.put_contact(10971465)
            account.put_lead(1, contact=10971465, price=10000)
            account.fail_next(1, 429)
            web = create_app(services=services).test_client()
            lead = {"id": "1", "status_id": "142", "old_status_id": "20067736",
                    "pipeline_id": "3104455", "price": "0"}
            assert web.post(f"/amocrm/webhooks/{AMO_SECRET}", content_type=FORM,
                            data=webhook_body("leads", "status", [lead])).status_code == 200

            from connector.amocrm.connector import AmoCRMConnector

            services.amocrm = AmoCRMConnector(services, client=client)  # type: ignore[misc]
            assert Worker(services.inbox, services.processors(), metrics=metrics).drain() \
                == {"done": 1}
            services.flush_crms()
            response = web.get("/metrics", headers=AUTH)
            exposition = response.get_data(as_text=True)
        finally:
            services.close()
    samples = parse(exposition)
    counted = Counter({dict(labels)["method"]: int(n) for (name, labels), n in samples.items()
                       if name == "loyalty_crm_calls_total" and dict(labels)["result"] == "ok"})
    assert counted == account.state.calls
    retried = [dict(labels) for (name, labels), n in samples.items()
               if name == "loyalty_crm_calls_total" and dict(labels)["result"] == "retriable"]
    assert len(retried) == 1 and sum(counted.values()) + 1 == account.state.http_requests
    assert value(samples, "loyalty_http_requests_total", endpoint="/amocrm/webhooks/<secret>",
                 status="200") == 1
    assert AMO_SECRET not in exposition
