"""`inbox list|show|retry|drop`: see why an event failed, replay it after fixing the cause, or
give up on it while keeping the record."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import cli
from connector.config import load_settings
from connector.inbox import Inbox
from connector.ledger.views import AccountRef
from connector.sandbox import FakeBitrix24Portal
from connector.services import Services
from tests.conftest import Clock, fresh_services

FORM = "application/x-www-form-urlencoded"
ERROR = "crm.deal.get: cannot reach the portal (ConnectionError)\nsecond line of the error"


@dataclass
class Env:
    services: Services  # the test's own view of the database, on the test clock
    run: Callable[..., Result]


def start(tmp_path: Path, database_url: str, clock: Clock, extra: str = "") -> Env:
    config = tmp_path / "config.toml"
    # The outputs are read in English (program.language = en).
    config.write_text(f'[database]\nurl = "{database_url}"\n[inbox]\nmax_attempts = 1\n'
                      '[program]\nlanguage = "en"\n' + extra, encoding="utf-8")
    services = fresh_services(load_settings(config), clock=clock)

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    return Env(services, run)


@pytest.fixture
def env(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[Env]:
    environment = start(tmp_path, database_url, clock)
    yield environment
    environment.services.close()


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def put(env: Env, n: int, *, source: str = "bitrix24", body: bytes = b"event=ONCRMDEALUPDATE",
        content_type: str | None = FORM) -> int:
    return env.services.inbox.put(source=source, kind="ONCRMDEALUPDATE", dedup_key=f"e:{n}",
                                  body=body, content_type=content_type, portal="acme").id


def dead(env: Env, n: int, error: str = ERROR, **kwargs: object) -> int:
    item_id = put(env, n, **kwargs)  # type: ignore[arg-type]
    assert [item.id for item in env.services.inbox.claim()] == [item_id]
    assert env.services.inbox.fail(item_id, error) == "dead"  # max_attempts = 1
    return item_id


def status(env: Env, item_id: int) -> tuple[str, int]:
    item = env.services.inbox.get(item_id)
    assert item is not None
    return item.status, item.attempts


# -- list and show ---------------------------------------------------------------------------
def test_list_one_line_per_item_newest_first_with_filters(env: Env, clock: Clock) -> None:
    assert ok(env.run("inbox", "list")) == "no inbox items\n"
    first = dead(env, 1)
    clock.advance(minutes=5)
    second = put(env, 2, source="amocrm", body=b"leads[status][0][id]=1")
    lines = ok(env.run("inbox", "list")).splitlines()
    assert lines == [
        "      id  source    status      tries  received          kind                  "
        "last error",
        f"{second:>8}  amocrm    pending         0  2026-03-10 12:05  ONCRMDEALUPDATE       ",
        f"{first:>8}  bitrix24  dead            1  2026-03-10 12:00  ONCRMDEALUPDATE       "
        "crm.deal.get: cannot reach the portal (ConnectionError)",
    ]
    assert ok(env.run("inbox", "list", "--status", "dead")).splitlines()[1:] == lines[2:]
    assert ok(env.run("inbox", "list", "--source", "amocrm")).splitlines()[1:] == lines[1:2]
    assert ok(env.run("inbox", "list", "--limit", "1")).splitlines()[1:] == lines[1:2]
    assert ok(env.run("inbox", "list", "--status", "skipped", "--source", "amocrm")) == \
        "no inbox items with status skipped from amocrm\n"
    listed = json.loads(ok(env.run("inbox", "list", "--status", "dead", "--json")))
    assert [(i["id"], i["status"], i["attempts"], i["received_at"], i["last_error"])
            for i in listed] == [(first, "dead", 1, "2026-03-10T09:00:00+00:00",
                                  "crm.deal.get: cannot reach the portal (ConnectionError)")]
    assert env.run("inbox", "list", "--status", "lost").exit_code == 2


def test_long_errors_are_cut_in_the_list(env: Env) -> None:
    dead(env, 1, error="x" * 200)
    line = ok(env.run("inbox", "list")).splitlines()[1]
    assert line.endswith("x" * 59 + "…")


def test_show_has_the_whole_error_and_the_body_with_tokens_hidden(
        env: Env, tmp_path: Path) -> None:
    portal = FakeBitrix24Portal()  # only to build a real event body; never started
    body, content_type = portal.event_body("ONCRMDEALUPDATE", 759, with_tokens=True)
    access = body.decode().split("auth%5Baccess_token%5D=")[1].split("&")[0]
    item_id = dead(env, 1, body=body, content_type=content_type)
    shown = ok(env.run("inbox", "show", str(item_id)))
    assert shown.startswith(
        f"item       {item_id}\nsource     bitrix24 (acme)\nkind       ONCRMDEALUPDATE\n"
        "status     dead, 1 attempt\nreceived   2026-03-10 12:00:00\nnext try   -\n"
        "dedup key  e:1\ncontent    application/x-www-form-urlencoded\n"
        "last error\n  crm.deal.get: cannot reach the portal (ConnectionError)\n"
        "  second line of the error\nbody (tokens hidden)\n  {\n    \"event\": "
        "\"ONCRMDEALUPDATE\",\n")
    assert '      "ID": "759"' in shown
    assert '"access_token": "***"' in shown and '"application_token": "***"' in shown
    assert access not in shown and portal.application_token not in shown
    data = json.loads(ok(env.run("inbox", "show", str(item_id), "--json")))
    assert data["last_error"] == ERROR
    assert data["body"]["data"] == {"FIELDS": {"ID": "759"}}
    assert data["body"]["auth"]["access_token"] == "***"
    portal.stop()


def test_show_bodies_that_are_json_or_not_parseable(env: Env) -> None:
    as_json = put(env, 1, body=b'{"token": "abc", "n": 1}', content_type="application/json")
    assert json.loads(ok(env.run("inbox", "show", str(as_json), "--json")))["body"] == \
        {"token": "***", "n": 1}
    broken = put(env, 2, body=b"\xff\xfeauth[token]=abc&x", content_type=FORM)
    assert json.loads(ok(env.run("inbox", "show", str(broken), "--json")))["body"] == \
        "\ufffd\ufffdauth[token]=***&x"


def test_unknown_items_are_one_clear_line(env: Env) -> None:
    for args in (("show", "999"), ("retry", "999"), ("drop", "999")):
        result = env.run("inbox", *args)
        assert result.exit_code == 1
        assert result.stderr == "error: inbox item 999 not found\n"


# -- retry and drop --------------------------------------------------------------------------
def test_retry_by_id_resets_attempts_and_changes_nothing_when_one_id_is_wrong(env: Env) -> None:
    first, second = dead(env, 1), dead(env, 2)
    refused = env.run("inbox", "retry", str(first), "999")
    assert refused.exit_code == 1 and status(env, first) == ("dead", 1)
    assert ok(env.run("inbox", "retry", str(first))) == \
        f"inbox item {first}: pending again (was dead, 1 attempt)\n"
    assert status(env, first) == ("pending", 0)
    worker = Inbox(env.services.db, env.services.settings.inbox)  # on the real clock
    assert [item.id for item in worker.claim()] == [first]  # due at once
    processing = env.run("inbox", "retry", str(first))
    assert processing.exit_code == 1
    assert processing.stderr == (f"error: inbox item {first} is being processed by a worker; "
                                 "try again when it is done\n")
    assert status(env, second) == ("dead", 1)


def test_retry_all_dead(env: Env) -> None:
    assert ok(env.run("inbox", "retry", "--all-dead")) == "no dead items\n"
    first, second = dead(env, 1), dead(env, 2)
    pending = put(env, 3)
    assert ok(env.run("inbox", "retry", "--all-dead")) == \
        f"2 dead items pending again: {first}, {second}\n"
    assert [status(env, i) for i in (first, second, pending)] == [("pending", 0)] * 3
    for args in ((), ("--all-dead", str(first))):
        usage = env.run("inbox", "retry", *args)
        assert usage.exit_code == 2 and "give item IDs or --all-dead" in usage.stderr


def test_drop_keeps_the_record_with_the_reason_and_the_error(env: Env) -> None:
    item_id = dead(env, 1)
    assert ok(env.run("inbox", "drop", str(item_id), "--reason", "test deal, deleted")) == \
        f"inbox item {item_id}: dropped (was dead)\n"
    item = env.services.inbox.get(item_id)
    assert item is not None and item.status == "skipped"
    assert item.last_error == f"dropped by admin: test deal, deleted; last error: {ERROR}"
    again = env.run("inbox", "drop", str(item_id))
    assert again.exit_code == 1
    assert again.stderr == (f"error: inbox item {item_id} is skipped: only pending or dead "
                            "items can be dropped\n")
    assert ok(env.run("inbox", "retry", str(item_id))).startswith(
        f"inbox item {item_id}: pending again (was skipped")  # a drop can be undone
    assert ok(env.run("inbox", "drop", str(item_id))) == \
        f"inbox item {item_id}: dropped (was pending)\n"
    item = env.services.inbox.get(item_id)
    assert item is not None and item.last_error is not None
    assert item.last_error.startswith("dropped by admin: no reason given; last error: dropped")


# -- the point of it all ---------------------------------------------------------------------
def test_an_event_that_died_while_the_portal_was_down_is_replayed(
        tmp_path: Path, database_url: str, clock: Clock) -> None:
    with FakeBitrix24Portal() as portal:
        env = start(tmp_path, database_url, clock, extra=(
            f'[bitrix24]\nenabled = true\nwebhook_url = "{portal.webhook_url}"\n'
            f'application_token = "{portal.application_token}"\nmax_retries = 0\n'))
        anna = portal.add_contact(NAME="Anna")
        deal = portal.add_deal(contact_ids=[anna], STAGE_ID="WON", OPPORTUNITY="1000.00")
        body, content_type = portal.event_body("ONCRMDEALUPDATE", deal)
        item_id = env.services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE",
                                         dedup_key="e:1", body=body,
                                         content_type=content_type).id
        portal.down()
        assert "dead: 1" in ok(env.run("worker", "--once"))
        listed = ok(env.run("inbox", "list", "--status", "dead")).splitlines()[1]
        assert listed.startswith(f"{item_id:>8}  bitrix24  dead")
        assert "cannot reach the portal" in listed
        portal.up()
        ok(env.run("inbox", "retry", "--all-dead"))
        assert "done: 1" in ok(env.run("worker", "--once"))
        account = env.services.ledger.account(AccountRef("bitrix24", portal.domain, str(anna)))
        assert account.balance == Decimal("30.00")
        env.services.close()
