"""The Bitrix24 client: the retry decision as a table, then calls through `responses`."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from connector.config import Bitrix24Settings
from connector.crm.bitrix24 import Bitrix24Client, classify
from connector.crm.limiter import LeakyBucket
from connector.errors import CRMAuthError, FatalCRMError, RetriableCRMError

HOOK = "https://acme.bitrix24.ru/rest/1/s3cr3tcode/"


@pytest.mark.parametrize(
    ("status", "body", "action", "executed"),
    [
        (200, {"result": {"ID": "1"}}, "ok", True),
        (503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
         "retry", False),
        (429, {"error": "QUERY_LIMIT_EXCEEDED"}, "retry", False),
        (429, {"error": "OPERATION_TIME_LIMIT"}, "retry", False),
        (503, {"error": "OVERLOAD_LIMIT"}, "retry", False),
        (401, {"error": "expired_token"}, "refresh", False),
        (401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
         "auth", False),
        (401, {"error": "invalid_token"}, "auth", False),
        (403, {"error": "insufficient_scope"}, "fatal", True),
        (500, {"error": "INTERNAL_SERVER_ERROR"}, "retry", True),
        (400, {"error": "", "error_description": "Not found"}, "fatal", True),
        (502, None, "retry", True),
        (503, None, "retry", False),
        (404, None, "fatal", True),
    ],
    ids=["ok", "limit-503", "limit-429-old-portal", "operating-limit", "overload",
         "expired-token", "wrong-webhook", "invalid-token", "scope", "server-error",
         "not-found-empty-code", "html-502", "html-503", "html-404"],
)
def test_classify(status: int, body: Any, action: str, executed: bool) -> None:
    decision = classify(status, body)
    assert (decision.action, decision.executed) == (action, executed)


def test_operating_limit_waits_until_reset() -> None:
    decision = classify(429, {"error": "OPERATION_TIME_LIMIT"}, now=1000.0,
                        operating_reset_at=1042.0)
    assert decision.wait == 42.0


def client(**overrides: Any) -> tuple[Bitrix24Client, list[float]]:
    slept: list[float] = []
    settings = Bitrix24Settings.model_validate({"webhook_url": HOOK, "max_retries": 3,
                                                **overrides})
    limiter = LeakyBucket(1000, 1000, sleep=slept.append)
    return Bitrix24Client(settings, limiter=limiter, sleep=slept.append), slept


@responses.activate(registry=responses.registries.OrderedRegistry)
def test_retries_limit_and_server_errors_then_succeeds() -> None:
    url = HOOK + "crm.deal.get.json"
    responses.post(url, status=503, json={"error": "QUERY_LIMIT_EXCEEDED",
                                          "error_description": "Too many requests"})
    responses.post(url, status=500, body="<html>oops</html>")
    responses.post(url, json={"result": {"ID": "5"}, "time": {"operating_reset_at": 1}},
                   match=[matchers.json_params_matcher({"id": 5})])
    b24, slept = client()
    assert b24.call("crm.deal.get", {"id": 5}).result == {"ID": "5"}
    assert b24.calls == 3 and len(slept) >= 2


@responses.activate
def test_gives_up_after_max_retries_with_a_retriable_error() -> None:
    responses.post(HOOK + "crm.deal.get.json", status=502, body="bad gateway")
    b24, _ = client(max_retries=2)
    with pytest.raises(RetriableCRMError):
        b24.call("crm.deal.get", {"id": 1})
    assert b24.calls == 3


@responses.activate
def test_client_errors_are_not_retried_and_secrets_stay_out() -> None:
    responses.post(HOOK + "crm.deal.get.json", status=400,
                   json={"error": "", "error_description": "Not found"})
    responses.post(HOOK + "profile.json", status=401,
                   json={"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
    b24, _ = client()
    with pytest.raises(FatalCRMError) as fatal:
        b24.call("crm.deal.get", {"id": 1})
    with pytest.raises(CRMAuthError) as auth:
        b24.call("profile")
    assert b24.calls == 2
    for error in (fatal.value, auth.value):
        assert "s3cr3tcode" not in str(error)


@responses.activate
def test_trigger_execution_is_not_repeated_after_a_timeout() -> None:
    responses.post(HOOK + "crm.automation.trigger.execute.json",
                   body=requests.ReadTimeout("read timed out"))
    b24, _ = client()
    with pytest.raises(FatalCRMError, match="not repeated"):
        b24.call("crm.automation.trigger.execute", {"CODE": "x", "OWNER_TYPE_ID": 2,
                                                    "OWNER_ID": 1})
    assert b24.calls == 1


@responses.activate
def test_batch_keeps_successes_beside_failures() -> None:
    envelope = {"result": {
        "result": {"d1": {"ID": "1"}, "d3": {"ID": "3"}},
        "result_error": {"d2": {"error": "", "error_description": "Not found"}},
        "result_total": [], "result_next": [], "result_time": []}, "time": {}}
    responses.post(HOOK + "batch.json", json=envelope)
    b24, _ = client()
    result = b24.batch({f"d{i}": ("crm.deal.get", {"id": i}) for i in (1, 2, 3)})
    sent = json.loads(responses.calls[0].request.body)
    assert sent == {"halt": 0, "cmd": {"d1": "crm.deal.get?id=1", "d2": "crm.deal.get?id=2",
                                       "d3": "crm.deal.get?id=3"}}
    assert set(result.results) == {"d1", "d3"}
    assert result.errors["d2"]["error_description"] == "Not found"
    with pytest.raises(ValueError):
        b24.batch({str(i): ("crm.deal.get", {"id": i}) for i in range(51)})


@responses.activate
def test_list_all_uses_the_fast_method() -> None:
    """Pages chained in a batch by $result references; the first counts the rows."""
    responses.post(HOOK + "batch.json", json={"result": {
        "result": {"p0": [{"ID": str(i)} for i in range(1, 51)], "p1": [{"ID": "51"}]},
        "result_error": {"p2": {"error": "", "error_description": "past the end"}},
        "result_total": {"p0": 51, "p1": 0}, "result_next": {"p0": 50}, "result_time": []}})
    b24, _ = client()
    totals: list[int] = []
    ids = [item["ID"] for item in b24.list_all("crm.deal.list", filter={"=STAGE_SEMANTIC_ID": "S"},
                                               select=["TITLE"], on_total=totals.append)]
    assert ids == [str(i) for i in range(1, 52)] and totals == [51]
    batch = json.loads(responses.calls[0].request.body)
    assert batch["halt"] == 1 and len(batch["cmd"]) == 50
    assert batch["cmd"]["p0"] == ("crm.deal.list?order[ID]=ASC&filter[%3DSTAGE_SEMANTIC_ID]=S"
                                  "&filter[%3EID]=0&start=0&select[0]=TITLE&select[1]=ID")
    # %24result%5Bp0%5D%5B49%5D%5BID%5D is $result[p0][49][ID] once parse_str has read it
    assert batch["cmd"]["p1"] == ("crm.deal.list?order[ID]=ASC&filter[%3DSTAGE_SEMANTIC_ID]=S"
                                  "&filter[%3EID]=%24result%5Bp0%5D%5B49%5D%5BID%5D&start=-1"
                                  "&select[0]=TITLE&select[1]=ID")
    assert len(responses.calls) == 1


def test_leaky_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = LeakyBucket(2, 5, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        assert bucket.acquire() == 0
    bucket.acquire()
    assert sum(slept) == pytest.approx(0.5)
    bucket.pause(3)
    bucket.acquire()
    assert now[0] == pytest.approx(3.5)


def test_leaky_bucket_never_spins_on_float_residue_of_a_large_clock() -> None:
    now = [1_795_417_200.0]  # an epoch-sized clock: tiny sleeps do not move it

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = LeakyBucket(7, 7, clock=lambda: now[0], sleep=sleep)
    for _ in range(200):
        bucket.acquire()
    assert 200 / 7 - 2 < now[0] - 1_795_417_200.0 < 200 / 7


def test_both_clients_keep_one_request_under_the_crms_bucket() -> None:
    """Requests that left on time can arrive closer together: amoCRM's bucket (7, burst 7)
    must still hold the first 7 that arrive at once, so the clients send at most 6 at once."""
    from connector.config import AmoCRMSettings, Bitrix24Settings
    from connector.crm.amocrm import AmoCRMClient

    now = [0.0]
    amo = AmoCRMClient(AmoCRMSettings(base_url="https://acme.amocrm.ru"))
    b24 = Bitrix24Client(Bitrix24Settings(webhook_url="https://acme.bitrix24.ru/rest/1/x/"))
    for client, crm_burst in ((amo, 7), (b24, 50)):
        bucket = LeakyBucket.under(client.limiter.rate, crm_burst, clock=lambda: now[0],
                                   sleep=lambda s: now.__setitem__(0, now[0] + s))
        assert client.limiter.burst == bucket.burst == crm_burst - 1
        unwaited = 0
        while bucket.acquire() == 0:
            unwaited += 1
        assert unwaited == crm_burst - 1


@responses.activate(registry=responses.registries.OrderedRegistry)
def test_pages_without_a_total_follow_next_one_page_a_request() -> None:
    url = HOOK + "crm.contact.userfield.list.json"
    responses.post(url, json={"result": [{"ID": str(i)} for i in range(50)], "next": 50})
    responses.post(url, json={"result": [{"ID": "50"}]})
    b24, _ = client()
    assert len(list(b24.pages("crm.contact.userfield.list"))) == 51
    assert json.loads(responses.calls[1].request.body) == {"start": 50}
