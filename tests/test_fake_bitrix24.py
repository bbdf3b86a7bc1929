"""The fake portal itself answers as the Bitrix24 docs say (so the e2e tests mean something)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from connector import sandbox as fakes
from connector.sandbox import FakeBitrix24Portal, ManualClock

TIME_KEYS = {"start", "finish", "duration", "processing", "date_start", "date_finish",
             "operating", "operating_reset_at"}

@pytest.fixture
def b24_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def b24(b24_clock: ManualClock) -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal(clock=b24_clock) as fake:
        yield fake


def call(b24: FakeBitrix24Portal, method: str, **params: Any) -> requests.Response:
    return requests.post(b24.webhook_url + method, json=params, timeout=5)


def app_call(b24: FakeBitrix24Portal, token: str, method: str,
             **params: Any) -> requests.Response:
    return requests.post(f"{b24.rest_url}{method}.json", json={**params, "auth": token},
                         timeout=5)


# -- batch -------------------------------------------------------------------------------------
def test_batch_envelope_keeps_results_beside_a_failing_command(
        b24: FakeBitrix24Portal) -> None:
    contact = b24.add_contact(NAME="Ann")
    deal = b24.add_deal(OPPORTUNITY="1500", STAGE_ID="WON", contact_ids=[contact])

    response = call(b24, "batch", halt=0, cmd={
        "deal": f"crm.deal.get?id={deal}",
        "missing": "crm.deal.get?id=999",
        "contact": "crm.contact.get?id=$result[deal][CONTACT_ID]",
        "deals": "crm.deal.list?filter[=STAGE_SEMANTIC_ID]=S&select[]=ID",
    })

    assert response.status_code == 200  # batch.md: the batch itself never fails
    body = response.json()
    assert set(body) == {"result", "time"} and set(body["time"]) == TIME_KEYS
    envelope = body["result"]
    assert set(envelope) == {"result", "result_error", "result_total", "result_next",
                             "result_time"}
    assert envelope["result"]["deal"]["OPPORTUNITY"] == "1500.00"
    assert envelope["result"]["contact"]["NAME"] == "Ann"  # $result[..] reference resolved
    assert envelope["result"]["deals"] == [{"ID": str(deal)}]
    assert "missing" not in envelope["result"]
    assert envelope["result_error"] == {"missing": {"error": "", "error_description":
                                                    "Not found"}}
    assert envelope["result_total"] == {"deals": 1}
    assert envelope["result_next"] == []  # PHP json_encode of an empty array
    assert set(envelope["result_time"]) == {"deal", "contact", "deals"}
    assert b24.http_requests == 1
    assert [(c.method, c.status, c.batch) for c in b24.calls] == [
        ("batch", 200, None), ("crm.deal.get", 200, "deal"), ("crm.deal.get", 400, "missing"),
        ("crm.contact.get", 200, "contact"), ("crm.deal.list", 200, "deals")]


def test_batch_halt_stops_at_the_first_error(b24: FakeBitrix24Portal) -> None:
    deal = b24.add_deal()
    envelope = call(b24, "batch", halt=1, cmd={
        "a": "crm.deal.get?id=999", "b": f"crm.deal.get?id={deal}"}).json()["result"]
    assert envelope["result"] == [] and list(envelope["result_error"]) == ["a"]


def test_batch_over_fifty_commands_fails_only_the_extra_ones(
        b24: FakeBitrix24Portal) -> None:
    b24.add_deal()
    cmd = {f"c{i}": "crm.deal.get?id=1" for i in range(52)}
    envelope = call(b24, "batch", cmd=cmd).json()["result"]
    assert len(envelope["result"]) == 50
    assert envelope["result_error"] == {
        name: {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
               "error_description": "Max batch length exceeded"} for name in ("c50", "c51")}


def test_batch_in_batch_and_form_encoded_commands(b24: FakeBitrix24Portal) -> None:
    deal = b24.add_deal(TITLE="A&B")
    response = requests.post(b24.webhook_url + "batch", timeout=5, data={
        "cmd[0]": f"crm.deal.get?id={deal}", "cmd[1]": "batch?cmd[x]=server.time"})
    envelope = response.json()["result"]
    assert envelope["result"][0]["TITLE"] == "A&B"  # keys 0..n come back as a JSON list
    assert envelope["result_error"]["1"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"


# -- lists -------------------------------------------------------------------------------------
def test_list_pages_by_fifty_with_next_and_total(b24: FakeBitrix24Portal) -> None:
    for i in range(120):
        b24.add_contact(NAME=f"c{i}")
    first = call(b24, "crm.contact.list", order={"ID": "ASC"}, select=["ID"]).json()
    assert (len(first["result"]), first["next"], first["total"]) == (50, 50, 120)
    last = call(b24, "crm.contact.list", order={"ID": "ASC"}, start=100).json()
    assert len(last["result"]) == 20 and "next" not in last and last["total"] == 120
    assert set(last["time"]) == TIME_KEYS


def test_fast_listing_with_start_minus_one_has_no_count(b24: FakeBitrix24Portal) -> None:
    for _ in range(120):
        b24.add_deal()
    seen: list[int] = []
    last_id = 0
    while True:  # settings/performance/huge-data.md
        page = requests.get(b24.webhook_url + "crm.deal.list.json", timeout=5, params={
            "order[ID]": "ASC", "filter[>ID]": last_id, "select[]": "ID", "start": -1}).json()
        assert page["total"] == 0 and "next" not in page
        seen += [int(item["ID"]) for item in page["result"]]
        if len(page["result"]) < 50:
            break
        last_id = seen[-1]
    assert seen == list(range(1, 121))


def test_list_filters_use_the_documented_prefixes(b24: FakeBitrix24Portal,
                                                  b24_clock: ManualClock) -> None:
    old = b24.add_deal(STAGE_ID="WON", CATEGORY_ID=1)
    b24_clock.advance(3600)
    won = b24.add_deal(STAGE_ID="WON", CATEGORY_ID=2)
    b24.add_deal(STAGE_ID="LOSE", CATEGORY_ID=2)
    b24.add_deal(STAGE_ID="WON", CATEGORY_ID=3)
    assert b24.deal(old)["STAGE_ID"] == "C1:WON"
    since = b24.deal(won)["DATE_MODIFY"]
    assert since == "2026-11-23T11:00:00+03:00"

    result = call(b24, "crm.deal.list", filter={
        ">=DATE_MODIFY": since, "=STAGE_SEMANTIC_ID": "S", "@CATEGORY_ID": [1, 2]},
        select=["ID", "STAGE_ID"]).json()["result"]
    assert result == [{"ID": str(won), "STAGE_ID": "C2:WON"}]
    bad = call(b24, "crm.deal.list", filter="oops")
    assert bad.status_code == 400
    assert bad.json() == {"error": "", "error_description": "Parameter 'filter' must be array."}


def test_multifields_only_when_selected_in_lists(b24: FakeBitrix24Portal) -> None:
    contact = b24.add_contact(PHONE="+79990000001", EMAIL=["a@example.com"])
    listed = call(b24, "crm.contact.list", filter={"PHONE": "+79990000001"}).json()
    assert "PHONE" not in listed["result"][0]
    listed = call(b24, "crm.contact.list", select=["ID", "PHONE"]).json()["result"][0]
    assert listed["PHONE"][0] | {"ID": ""} == {"ID": "", "VALUE_TYPE": "WORK",
                                               "VALUE": "+79990000001", "TYPE_ID": "PHONE"}
    got = call(b24, "crm.contact.get", id=contact).json()["result"]
    assert got["EMAIL"][0]["VALUE"] == "a@example.com" and got["HAS_EMAIL"] == "Y"


# -- writes ------------------------------------------------------------------------------------
def test_userfield_prefix_and_contact_update(b24: FakeBitrix24Portal,
                                            b24_clock: ManualClock) -> None:
    contact = b24.add_contact(PHONE=["+1", "+2"])
    added = call(b24, "crm.contact.userfield.add", fields={
        "FIELD_NAME": "LOYALTY_BALANCE", "USER_TYPE_ID": "double", "LABEL": "Points"})
    assert isinstance(added.json()["result"], int)
    fields = call(b24, "crm.contact.userfield.list",
                  filter={"FIELD_NAME": "UF_CRM_LOYALTY_BALANCE"}).json()
    assert fields["total"] == 1 and fields["result"][0]["USER_TYPE_ID"] == "double"
    phones = b24.contact(contact)["PHONE"]

    b24_clock.advance(90)
    form = {"id": contact, "fields[UF_CRM_LOYALTY_BALANCE]": "150.5",
            "fields[UF_CRM_UNKNOWN]": "x", "fields[PHONE][0][ID]": phones[0]["ID"],
            "fields[PHONE][0][DELETE]": "Y", "fields[PHONE][1][VALUE]": "+3"}
    response = requests.post(b24.webhook_url + "crm.contact.update", data=form, timeout=5)
    assert response.json()["result"] is True

    shown = b24.contact(contact)
    assert shown["UF_CRM_LOYALTY_BALANCE"] == "150.5"
    assert "UF_CRM_UNKNOWN" not in shown  # "An incorrect field in fields will be ignored"
    assert [p["VALUE"] for p in shown["PHONE"]] == ["+2", "+3"]
    assert shown["DATE_MODIFY"] == "2026-11-23T10:01:30+03:00"
    assert b24.contact_updates[contact][0]["UF_CRM_LOYALTY_BALANCE"] == "150.5"
    missing = call(b24, "crm.contact.update", id=999, fields={"NAME": "x"})
    assert missing.json() == {"error": "", "error_description": "Contact is not found"}


def test_timeline_comment_and_deal_contacts(b24: FakeBitrix24Portal) -> None:
    first, second = b24.add_contact(), b24.add_contact()
    deal = b24.add_deal(contact_ids=[first, second])
    items = call(b24, "crm.deal.contact.items.get", id=deal).json()["result"]
    assert items[0] == {"CONTACT_ID": first, "SORT": 100, "ROLE_ID": 0, "IS_PRIMARY": "Y"}
    comment = call(b24, "crm.timeline.comment.add", fields={
        "ENTITY_ID": first, "ENTITY_TYPE": "contact", "COMMENT": "+100 points"})
    assert isinstance(comment.json()["result"], int)
    assert b24.timeline_comments[0]["comment"] == "+100 points"
    upper = call(b24, "crm.timeline.comment.add", FIELDS={
        "ENTITY_ID": first, "ENTITY_TYPE": "contact", "COMMENT": "x"})
    assert upper.status_code == 400  # only lowercase `fields` since crm 23.100.0


def test_webhook_trigger_fires_by_target_and_code_as_documented(
        b24: FakeBitrix24Portal) -> None:
    b24.add_webhook_trigger("c5u4m", "PREPARATION")
    deal = b24.add_deal(OPPORTUNITY="100")
    b24.bind_event("ONCRMDEALUPDATE", "https://loyalty.example/bitrix24/events")
    fired = call(b24, "crm.automation.trigger", target=f"DEAL_{deal}", code="c5u4m")
    assert fired.json()["result"] is True
    assert [(t["code"], t["target"]) for t in b24.fired_webhook_triggers] == [
        ("c5u4m", f"DEAL_{deal}")]
    assert b24.deal(deal)["STAGE_ID"] == "PREPARATION"  # the trigger moved the deal
    assert [e.event for e in b24.drain_outbox()] == ["ONCRMDEALUPDATE"]
    unknown = call(b24, "crm.automation.trigger", target=f"DEAL_{deal}", code="other")
    assert unknown.json()["result"] is False
    errors = {target: call(b24, "crm.automation.trigger", target=target, code="c5u4m")
              for target in ("", "DEAL57", "WIDGET_5", "DEAL_999999")}
    assert {target: (r.status_code, r.json()["error"], r.json()["error_description"])
            for target, r in errors.items()} == {
        "": (400, "", "Target is not set."),
        "DEAL57": (400, "", "Incorrect target format."),
        "WIDGET_5": (400, "", "Target is not found."),
        "DEAL_999999": (400, "ACCESS_DENIED",
                        "Access denied! There are no permissions to update the entity."),
    }


# -- rate limit and faults ---------------------------------------------------------------------
def test_leaky_bucket_refuses_after_the_burst_and_drains(b24: FakeBitrix24Portal,
                                                         b24_clock: ManualClock) -> None:
    session = requests.Session()
    url = b24.webhook_url + "server.time"
    assert all(session.post(url, timeout=5).status_code == 200 for _ in range(50))
    refused = session.post(url, timeout=5)
    assert refused.status_code == 503
    assert refused.json() == {"error": "QUERY_LIMIT_EXCEEDED",
                              "error_description": "Too many requests"}  # no `time` key
    assert b24.limit_errors == 1
    b24_clock.advance(1.0)  # drains 2 requests per second
    assert [session.post(url, timeout=5).status_code for _ in range(3)] == [200, 200, 503]
    assert b24.limit_errors == 2


def test_enterprise_bucket() -> None:
    clock = ManualClock()
    with FakeBitrix24Portal(clock=clock, requests_per_second=5, burst=250) as b24:
        b24.bucket.level = 249.0  # as if 249 requests just went through
        assert call(b24, "server.time").status_code == 200
        assert call(b24, "server.time").status_code == 503
        clock.advance(1.0)
        assert [call(b24, "server.time").status_code for _ in range(6)] == [200] * 5 + [503]


def test_fail_next_then_recover(b24: FakeBitrix24Portal) -> None:
    b24.fail_next(2, status=500)
    b24.fail_next(1, status=503)
    first, second, third, fourth = (call(b24, "server.time") for _ in range(4))
    assert (first.status_code, first.json()["error"]) == (500, "INTERNAL_SERVER_ERROR")
    assert second.status_code == 500
    assert third.json() == {"error": "QUERY_LIMIT_EXCEEDED",
                            "error_description": "Too many requests"}
    assert fourth.status_code == 200 and "time" in fourth.json()
    assert [c.status for c in b24.calls] == [500, 500, 503, 200]


def test_fail_next_for_one_method_inside_a_batch(b24: FakeBitrix24Portal) -> None:
    contact = b24.add_contact()
    b24.fail_next(1, status=500, method="crm.contact.update")
    envelope = call(b24, "batch", cmd={
        "a": f"crm.contact.update?id={contact}&fields[NAME]=A",
        "b": f"crm.contact.update?id={contact}&fields[NAME]=B"}).json()["result"]
    assert envelope["result"] == {"b": True}
    assert envelope["result_error"]["a"]["error"] == "INTERNAL_SERVER_ERROR"
    assert b24.contact(contact)["NAME"] == "B"


def test_operation_time_limit(b24: FakeBitrix24Portal, b24_clock: ManualClock) -> None:
    b24.operating.costs["crm.contact.list"] = 300.0  # seconds each call "takes"
    ok = call(b24, "crm.contact.list").json()
    assert ok["time"]["operating"] == 300.0
    reset_at = ok["time"]["operating_reset_at"]
    assert reset_at == int(b24_clock.time()) + 600
    assert call(b24, "crm.contact.list").status_code == 200  # 300 is not over 480 yet
    blocked = call(b24, "crm.contact.list")
    assert (blocked.status_code, blocked.json()["error"]) == (429, "OPERATION_TIME_LIMIT")
    assert call(b24, "crm.deal.list").status_code == 200  # other methods still work
    b24_clock.advance(reset_at - b24_clock.time())
    assert call(b24, "crm.contact.list").status_code == 200


def test_transport_faults(b24: FakeBitrix24Portal) -> None:
    b24.malformed_next(1)
    html = call(b24, "server.time")
    assert html.status_code == 502 and html.headers["Content-Type"].startswith("text/html")
    b24.reset_next(1)
    with pytest.raises(requests.ConnectionError):
        call(b24, "server.time")
    b24.delay_next(1, 0.5)
    with pytest.raises(requests.Timeout):
        requests.post(b24.webhook_url + "server.time", timeout=0.1)
    b24.down()
    with pytest.raises(requests.ConnectionError):
        call(b24, "server.time")
    b24.up()
    assert call(b24, "server.time").status_code == 200


# -- authentication ----------------------------------------------------------------------------
def test_wrong_webhook_secret_and_unknown_method(b24: FakeBitrix24Portal) -> None:
    wrong = requests.post(f"{b24.url}/rest/1/not-the-secret/profile.json", timeout=5)
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "NO_AUTH_FOUND", "error_description":
                            "Wrong authorization data"}
    unknown = call(b24, "crm.nothing.get")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "ERROR_METHOD_NOT_FOUND")
    no_auth = requests.get(b24.rest_url + "profile", timeout=5)
    assert (no_auth.status_code, no_auth.json()["error"]) == (401, "NO_AUTH_FOUND")


def test_oauth_refresh_flow(b24: FakeBitrix24Portal, b24_clock: ManualClock) -> None:
    tokens = b24.issue_tokens()
    assert app_call(b24, tokens["access_token"], "profile").json()["result"]["ID"] == "1"
    b24.expire_tokens()
    expired = app_call(b24, tokens["access_token"], "profile")
    assert expired.status_code == 401
    assert expired.json() == {"error": "expired_token",
                              "error_description": "The access token provided has expired."}

    refresh = {"grant_type": "refresh_token", "client_id": b24.client_id,
               "client_secret": b24.client_secret, "refresh_token": tokens["refresh_token"]}
    renewed = requests.get(b24.oauth_url, params=refresh, timeout=5).json()
    assert {"access_token", "refresh_token", "expires_in", "expires", "member_id",
            "client_endpoint", "server_endpoint", "scope", "status", "domain",
            "user_id"} <= set(renewed)
    assert renewed["client_endpoint"] == b24.rest_url
    assert renewed["member_id"] == b24.member_id
    assert renewed["refresh_token"] != tokens["refresh_token"]
    assert app_call(b24, renewed["access_token"], "profile").status_code == 200
    spent = requests.get(b24.oauth_url, params=refresh, timeout=5)
    assert (spent.status_code, spent.json()["error"]) == (400, "invalid_grant")
    bad = requests.get(b24.oauth_url, timeout=5, params={**refresh, "client_secret": "x"})
    assert bad.json()["error"] == "invalid_client"

    b24_clock.advance(b24.token_lifetime)  # tokens also expire by the clock
    assert app_call(b24, renewed["access_token"], "profile").status_code == 401


def test_authorization_code_and_auth_in_query(b24: FakeBitrix24Portal) -> None:
    code = b24.authorization_code()
    tokens = requests.get(b24.oauth_url, timeout=5, params={
        "grant_type": "authorization_code", "client_id": b24.client_id,
        "client_secret": b24.client_secret, "code": code}).json()
    assert "user_id" not in tokens  # settings/oauth/index.md answer
    info = requests.get(f"{b24.rest_url}app.info", timeout=5,
                        params={"auth": tokens["access_token"]}).json()["result"]
    assert info["CODE"] == b24.client_id and info["INSTALLED"] is True
    unknown = requests.get(f"{b24.rest_url}app.info", params={"auth": "nope"}, timeout=5)
    assert unknown.status_code == 401


def test_app_only_methods_refuse_a_webhook_and_work_for_the_app(
        b24: FakeBitrix24Portal) -> None:
    refused = call(b24, "event.bind", event="ONCRMDEALUPDATE", handler="https://x/ev")
    assert (refused.status_code, refused.json()["error"]) == (400, "ACCESS_DENIED")
    token = b24.issue_tokens()["access_token"]

    assert app_call(b24, token, "event.bind", event="onCrmDealUpdate",
                    handler="https://x/ev").json()["result"] is True
    again = app_call(b24, token, "event.bind", event="ONCRMDEALUPDATE",
                     handler="https://x/ev")
    assert again.json()["error"] == "ERROR_HANDLER_ALREADY_EXIST"
    assert app_call(b24, token, "event.get").json()["result"] == [
        {"event": "ONCRMDEALUPDATE", "handler": "https://x/ev", "auth_type": "0",
         "offline": 0}]
    assert app_call(b24, token, "event.bind", event="ONNOTHING",
                    handler="https://x/ev").json()["error"] == "ERROR_EVENT_NOT_FOUND"

    robot = {"CODE": "loyalty_accrue", "HANDLER": "https://x/robot", "NAME": {"en": "Accrue"},
             "USE_SUBSCRIPTION": "Y", "RETURN_PROPERTIES": {"balance": {"Name": "Balance",
                                                                        "Type": "double"}}}
    assert app_call(b24, token, "bizproc.robot.add", **robot).json()["result"] is True
    assert app_call(b24, token, "bizproc.robot.add", **robot).json()["error"] == (
        "ERROR_ACTIVITY_ALREADY_INSTALLED")
    assert app_call(b24, token, "bizproc.robot.list").json()["result"] == ["loyalty_accrue"]

    assert app_call(b24, token, "crm.automation.trigger.add", CODE="tier_up",
                    NAME="Tier up").json()["result"] is True
    deal = b24.add_deal()
    assert app_call(b24, token, "crm.automation.trigger.execute", CODE="tier_up",
                    OWNER_TYPE_ID=2, OWNER_ID=deal).json()["result"] is True
    on_contact = app_call(b24, token, "crm.automation.trigger.execute", CODE="tier_up",
                          OWNER_TYPE_ID=3, OWNER_ID=1)
    assert on_contact.json() == {"error": "",
                                 "error_description": "Incorrect parameter OWNER_TYPE_ID."}
    assert b24.fired_triggers[0] | {"at": 0} == {"code": "tier_up", "owner_type_id": 2,
                                                    "owner_id": deal, "at": 0}
    assert app_call(b24, token, "event.unbind", event="ONCRMDEALUPDATE",
                    handler="https://x/ev").json()["result"] == {"count": 1}


# -- what the b24 sends ---------------------------------------------------------------------
def test_event_body_is_form_encoded_like_the_docs(b24: FakeBitrix24Portal) -> None:
    body, content_type = fakes.event_body("ONCRMDEALUPDATE", 759, application_token="tok",
                                          domain="acme.bitrix24.ru", member_id="m1",
                                          ts=1736405807)
    assert isinstance(body, bytes) and content_type == "application/x-www-form-urlencoded"
    form = parse_qs(body.decode())
    assert form["event"] == ["ONCRMDEALUPDATE"]
    assert form["data[FIELDS][ID]"] == ["759"]
    assert form["auth[application_token]"] == ["tok"]
    assert form["auth[member_id]"] == ["m1"] and form["ts"] == ["1736405807"]
    assert "auth[access_token]" not in form  # automation / outgoing webhook: no tokens

    with_user = parse_qs(b24.event_body("ONCRMCONTACTADD", 5, with_tokens=True)[0].decode())
    assert with_user["data[FIELDS][ID]"] == ["5"]
    assert app_call(b24, with_user["auth[access_token]"][0], "profile").status_code == 200

    install = parse_qs(b24.install_body()[0].decode())
    assert install["event"] == ["ONAPPINSTALL"] and install["data[VERSION]"] == ["1"]
    assert {"auth[access_token]", "auth[refresh_token]", "auth[expires_in]", "auth[scope]",
            "auth[client_endpoint]", "auth[server_endpoint]", "auth[member_id]",
            "auth[application_token]"} <= set(install)
    assert install["auth[client_endpoint]"] == [b24.rest_url]
    uninstall = parse_qs(b24.uninstall_body()[0].decode())
    assert "auth[access_token]" not in uninstall and "auth[application_token]" in uninstall


def test_bound_events_reach_the_outbox(b24: FakeBitrix24Portal) -> None:
    b24.bind_event("ONCRMCONTACTUPDATE", "https://connector/bitrix24/events")
    contact = b24.add_contact()
    call(b24, "crm.contact.update", id=contact, fields={"NAME": "Bob"})
    [sent] = b24.drain_outbox()
    assert sent.handler == "https://connector/bitrix24/events"
    assert parse_qs(sent.body.decode())["data[FIELDS][ID]"] == [str(contact)]


def test_robot_body_and_bizproc_event_send(b24: FakeBitrix24Portal) -> None:
    body, content_type = fakes.robot_body(
        "loyalty_accrue", "DEAL_123", {"amount": 333, "note": None}, event_token="wf|A1|x.y",
        workflow_id="wf", application_token="tok", domain="acme.bitrix24.ru", member_id="m1",
        ts=1716494651)
    form = parse_qs(body.decode(), keep_blank_values=True)
    assert content_type == "application/x-www-form-urlencoded"
    assert [form[f"document_id[{i}]"][0] for i in range(3)] == [
        "crm", "CCrmDocumentDeal", "DEAL_123"]
    assert [form[f"document_type[{i}]"][0] for i in range(3)] == [
        "crm", "CCrmDocumentDeal", "DEAL"]
    assert form["properties[amount]"] == ["333"] and form["properties[note]"] == [""]
    assert form["event_token"] == ["wf|A1|x.y"] and form["use_subscription"] == ["Y"]
    assert {"code", "workflow_id", "timeout_duration", "ts", "auth[application_token]",
            "auth[domain]", "auth[member_id]"} <= set(form)

    live = parse_qs(b24.robot_body("loyalty_accrue", "DEAL_7", {"amount": 5})[0].decode())
    token = live["auth[access_token]"][0]
    send = {"event_token": live["event_token"][0], "return_values": {"balance": 105}}
    assert app_call(b24, token, "bizproc.event.send", **send).json()["result"] is True
    assert b24.bizproc_events[0]["return_values"] == {"balance": 105}
    reused = app_call(b24, token, "bizproc.event.send", **send)
    assert (reused.status_code, reused.json()["error"]) == (403, "ACCESS_DENIED")


def test_batch_references_resolve_as_core_does(b24: FakeBitrix24Portal) -> None:
    """processBatchElement walks the path until its first missing key and substitutes the
    node reached: row 49 of a short page gives the page, which >ID cannot compare with."""
    for _ in range(60):
        b24.add_deal(STAGE_ID="WON")
    page = "crm.deal.list?order[ID]=ASC&start=-1&select[]=ID&filter[>ID]="
    response = call(b24, "batch", halt=0, cmd={
        "p0": page + "0", "p1": page + "$result[p0][49][ID]",
        "p2": page + "$result[p1][49][ID]", "p3": page + "$result[p2][49][ID]",
        "count": "crm.deal.list?start=0&select[]=ID&filter[>ID]=$result[p0][9][ID]"})
    envelope = response.json()["result"]
    assert [row["ID"] for row in envelope["result"]["p0"]][-1] == "50"
    assert [row["ID"] for row in envelope["result"]["p1"]] == [str(i) for i in range(51, 61)]
    assert set(envelope["result_error"]) == {"p2", "p3"}  # past the end, and after it
    assert envelope["result_total"]["count"] == 50  # ID > 10, counted with start=0
    times = envelope["result_time"]
    assert {"operating", "operating_reset_at"} <= set(times["p0"])
