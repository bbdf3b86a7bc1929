"""The fake portal itself answers as the Bitrix24 docs say (so the e2e tests mean something)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.portal.bitrix24 import FakeBitrix24, VirtualClock, event_body


@pytest.fixture
def portal() -> Iterator[FakeBitrix24]:
    with FakeBitrix24(clock=VirtualClock(), rate=2, burst=5) as fake:
        for n in range(1, 121):
            fake.put_deal(n, contact=n, amount="10.00")
        yield fake


def post(portal: FakeBitrix24, method: str, body: dict) -> requests.Response:
    return requests.post(portal.webhook_url + method + ".json", json=body, timeout=5)


def test_list_pages_of_50_with_next_and_total_and_the_fast_mode(portal: FakeBitrix24) -> None:
    first = post(portal, "crm.deal.list", {"select": ["ID"]}).json()
    assert (len(first["result"]), first["next"], first["total"]) == (50, 50, 120)
    assert {"start", "finish", "duration", "date_start", "operating"} <= set(first["time"])
    fast = post(portal, "crm.deal.list", {"filter": {">ID": 100}, "order": {"ID": "ASC"},
                                          "start": -1}).json()
    assert [d["ID"] for d in fast["result"]][:2] == ["101", "102"]
    assert fast["total"] == 0 and "next" not in fast


def test_batch_keeps_results_beside_errors_and_encodes_empty_maps_as_lists(
        portal: FakeBitrix24) -> None:
    body = post(portal, "batch", {"halt": 0, "cmd": {
        "a": "crm.deal.get?id=1", "b": "crm.deal.get?id=999",
        "c": "crm.deal.list?filter[>ID]=$result[a][ID]&start=-1"}}).json()
    inner = body["result"]
    assert inner["result"]["a"]["ID"] == "1"
    assert inner["result_error"]["b"] == {"error": "", "error_description": "Not found"}
    assert inner["result"]["c"][0]["ID"] == "2"  # $result[a][ID] was substituted
    assert inner["result_next"] == []
    many = post(portal, "batch", {"cmd": {f"x{i}": "crm.deal.get?id=1" for i in range(51)}})
    assert many.json()["result"]["result_error"]["x50"]["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"


def test_leaky_bucket_answers_503_query_limit_exceeded(portal: FakeBitrix24) -> None:
    statuses = [post(portal, "crm.deal.get", {"id": 1}).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [503] * 2
    refused = post(portal, "crm.deal.get", {"id": 1}).json()
    assert refused == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    portal.clock.sleep(1.0)  # drains 2 per second
    assert post(portal, "crm.deal.get", {"id": 1}).status_code == 200


def test_wrong_secret_and_unknown_method(portal: FakeBitrix24) -> None:
    wrong = requests.post(f"http://{portal.host}/rest/1/nope/crm.deal.get.json", json={"id": 1},
                          timeout=5)
    assert (wrong.status_code, wrong.json()["error"]) == (401, "NO_AUTH_FOUND")
    assert "time" not in wrong.json()  # errors carry no time object
    assert post(portal, "crm.nothing", {}).status_code == 404


def test_oauth_refresh_issues_a_new_pair_and_burns_the_old(portal: FakeBitrix24) -> None:
    pair = portal.issue_tokens()
    url = f"http://{portal.host}/oauth/token/"
    params = {"grant_type": "refresh_token", "client_id": portal.client_id,
              "client_secret": portal.client_secret, "refresh_token": pair["refresh_token"]}
    fresh = requests.get(url, params=params, timeout=5).json()
    assert fresh["access_token"] != pair["access_token"] and fresh["expires_in"] == 3600
    again = requests.get(url, params=params, timeout=5)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    portal.expire_tokens()
    expired = requests.post(f"http://{portal.host}/rest/profile.json",
                            json={"auth": fresh["access_token"]}, timeout=5)
    assert (expired.status_code, expired.json()["error"]) == (401, "expired_token")


def test_event_bodies_are_form_encoded_like_the_portal_sends_them() -> None:
    from urllib.parse import parse_qs

    body = parse_qs(event_body("ONCRMDEALUPDATE", 759, application_token="t0k").decode())
    assert body["event"] == ["ONCRMDEALUPDATE"] and body["data[FIELDS][ID]"] == ["759"]
    assert body["auth[application_token]"] == ["t0k"]
