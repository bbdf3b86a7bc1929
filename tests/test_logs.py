"""Logs: JSON lines off a terminal, readable lines on one, the request id and inbox ids on
every record, and no secret in any of them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from connector.inbox import InboxItem
from connector.logs import Throttle, configure_logging, log_context
from connector.services import Services
from connector.worker import Outcome, Worker
from tests.conftest import Clock, fresh_services
from webhooks import create_app

log = logging.getLogger("tests.logs")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)  # not a terminal: JSON
    return stream


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_extra_fields(out: io.StringIO) -> None:
    log.info("accrued %s points", "300.00", extra={"job": "expire_points"})
    with log_context(inbox_id=17):
        log.warning("second line\nstill the second record")
    first, second = records(out)
    assert first["ts"].endswith("Z") and first["level"] == "INFO"
    assert (first["logger"], first["message"], first["job"]) == (
        "tests.logs", "accrued 300.00 points", "expire_points")
    assert (second["message"], second["inbox_id"]) == (
        "second line\nstill the second record", 17)
    assert "inbox_id" not in first


def test_a_terminal_gets_readable_lines() -> None:
    stream = Terminal()
    configure_logging("INFO", stream=stream)
    with log_context(request_id="abc123"):
        log.warning("refused")
    line = stream.getvalue().rstrip("\n")
    assert line.endswith(" WARNING tests.logs: refused [request_id=abc123]")


def test_configuring_again_replaces_the_handler_and_level(out: io.StringIO) -> None:
    again = io.StringIO()
    configure_logging("WARNING", stream=again)
    log.info("dropped")
    log.warning("kept")
    assert out.getvalue() == ""
    assert [r["message"] for r in records(again)] == ["kept"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD")


SECRETS = ("w3bh00kS3cr3t", "app-token-51856fef", "access-AT-9f8e7d", "refresh-RT-1a2b3c",
           "client-secret-77", "Wh00kSecret0123456789", "B24Act10nsSecret0123",
           "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln")


def test_secrets_are_masked_wherever_they_appear(out: io.StringIO) -> None:
    webhook = "https://acme.bitrix24.ru/rest/1/w3bh00kS3cr3t/"
    log.warning("calling %scrm.deal.get.json", webhook)
    log.warning("body: %s", "event=ONCRMDEALADD&auth%5Bapplication_token%5D=app-token-51856fef"
                "&auth[application_token]=app-token-51856fef&auth[domain]=acme.bitrix24.ru")
    log.warning("oauth answer %s", {"access_token": "access-AT-9f8e7d",
                                    "refresh_token": "refresh-RT-1a2b3c", "expires_in": 3600})
    log.warning('{"client_secret": "client-secret-77", "grant_type": "refresh_token"}')
    log.warning("headers: Authorization: Bearer access-AT-9f8e7d")
    log.warning("refused POST /amocrm/webhooks/Wh00kSecret0123456789")
    log.warning("GET /bitrix24/actions/B24Act10nsSecret0123/bonus/review?deal_id=5 200")
    log.warning("token %s", SECRETS[-1])
    log.warning("request failed", extra={"url": webhook + "batch.json"})
    try:
        raise RuntimeError(f"cannot reach {webhook}")
    except RuntimeError:
        log.exception("call failed")
    text = out.getvalue()
    assert len(records(out)) == 10
    for secret in SECRETS:
        assert secret not in text
    assert "/rest/1/***/crm.deal.get.json" in text and "Bearer ***" in text
    assert "auth[application_token]=***&auth[domain]=acme.bitrix24.ru" in text
    assert "/amocrm/webhooks/***" in text
    assert "/bitrix24/actions/***/bonus/review?deal_id=5" in text
    assert "'access_token': '***', 'refresh_token': '***', 'expires_in': 3600" in text


# -- request ids ---------------------------------------------------------------------------
@pytest.fixture
def services(settings: Any, clock: Clock) -> Iterator[Services]:
    services = fresh_services(settings, clock=clock)
    yield services
    services.close()


def test_a_request_id_is_echoed_and_on_every_record_of_the_request(
        services: Services, out: io.StringIO) -> None:
    app = create_app(services=services)
    app.add_url_rule("/logs-something", "logs_something",
                     lambda: (log.warning("inside the request"), "ok")[1])
    web = app.test_client()
    given = web.get("/logs-something", headers={"X-Request-Id": "req-42.a:b"})
    made = web.get("/logs-something", headers={"X-Request-Id": "<script>" + "x" * 200})
    assert given.headers["X-Request-Id"] == "req-42.a:b"
    generated = made.headers["X-Request-Id"]
    assert len(generated) == 32 and generated.isalnum()
    log.warning("after the requests")
    inside_1, inside_2, after = records(out)
    assert (inside_1["request_id"], inside_2["request_id"]) == ("req-42.a:b", generated)
    assert "request_id" not in after


# -- inbox ids -----------------------------------------------------------------------------
class Failing:
    def process(self, items: list[InboxItem]) -> dict[int, Outcome]:
        log.info("processing a group")
        return {item.id: Outcome.retry("portal down") for item in items}


def test_the_worker_logs_with_the_inbox_ids(services: Services, out: io.StringIO) -> None:
    ids = [services.inbox.put(source="bitrix24", kind="ONCRMDEALADD", dedup_key=f"k{n}",
                              body=b"").id for n in range(2)]
    assert Worker(services.inbox, {"bitrix24": Failing()}).drain_once() == {"failed": 2}
    group, *failed = records(out)
    assert group["inbox_ids"] == ids and "inbox_id" not in group
    assert [(r["inbox_id"], r["message"].startswith(f"inbox item {r['inbox_id']} failed"))
            for r in failed] == [(ids[0], True), (ids[1], True)]


def test_throttle_passes_one_record_per_interval_and_counts_the_rest(
        out: io.StringIO) -> None:
    now = [100.0]
    noisy = logging.getLogger("tests.logs.noisy")
    throttle = Throttle(60, clock=lambda: now[0])
    noisy.addFilter(throttle)
    try:
        for depth in range(5):
            noisy.warning("Task queue depth is %d", depth)
        now[0] += 61
        noisy.warning("Task queue depth is %d", 9)
    finally:
        noisy.removeFilter(throttle)
    messages = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
    assert messages == ["Task queue depth is 0",
                        "Task queue depth is 9 (and 4 like it in the last 60 s)"]
