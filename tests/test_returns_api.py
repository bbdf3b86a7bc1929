"""POST /api/v1/return and `loyalty-connector return`: partial returns through the real
web and command paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from connector.cli import cli
from connector.ledger.models import Entry
from connector.services import Services
from tests.test_api import ANNA, Api
from tests.test_cli import ANNA as CLI_ANNA
from tests.test_cli import write_config


def returned(api: Api, body: dict[str, Any], key: str) -> Any:
    return api.post("/api/v1/return", {**ANNA, **body}, key=key)


def test_partial_returns_by_amount_and_rows_then_too_much(api: Api,
                                                          services: Services) -> None:
    api.accrue("10000", key="order-1")  # 3%: 300 points
    first = returned(api, {"source": "order-1", "amount": "2500"}, "ret-1")
    assert first.status_code == 201, first.json
    assert first.json["kind"] == "reversal" and first.json["points"] == "-75.00"
    assert first.json["details"]["return"]["remaining_after"] == "7500.00"
    rows = [{"product_id": "sku-1", "price": "1000", "quantity": 2},
            {"product_id": 77, "price": 250.5, "quantity": "2"}]
    second = returned(api, {"source": "order-1", "rows": rows}, "ret-2")
    assert second.status_code == 201, second.json
    assert second.json["details"]["return"]["amount"] == "2501.00"
    assert api.account()["purchase_total"] == "4999.00"
    # The raw request is kept beside the entry, numbers as the shop wrote them.
    with services.db.transaction(write=False) as session:
        kept = session.scalar(select(Entry.source_data)
                              .where(Entry.id == second.json["entry_id"]))
    assert kept == {"request": {**ANNA, "source": "order-1", "rows": [
        {"product_id": "sku-1", "price": "1000", "quantity": 2},
        {"product_id": 77, "price": "250.5", "quantity": "2"}], "key": "ret-2"}}
    too_much = returned(api, {"source": "order-1", "amount": "5000"}, "ret-3")
    assert too_much.status_code == 409
    assert too_much.json["error"] == "return_exceeds_purchase"
    assert too_much.json["remaining"] == "4999.00"
    # What 4999 earns at 3%, floored: 149; the refusal wrote nothing.
    assert api.balance() == "149.00"
    last = returned(api, {"source": "order-1", "amount": "4999"}, "ret-3")
    assert last.status_code == 201 and api.balance() == "0.00"
    again = returned(api, {"source": "order-1", "amount": "1"}, "ret-4")
    assert again.status_code == 409 and again.json["error"] == "nothing_to_reverse"
    assert services.ledger.verify()[1] == []


def test_repeat_replays_and_the_key_with_another_request_conflicts(api: Api) -> None:
    api.accrue("1000", key="order-1")
    body = {"source": "order-1", "amount": "100"}
    first = returned(api, body, "ret-1")
    repeat = returned(api, {**body, "amount": "100.00"}, "ret-1")
    assert (first.status_code, repeat.status_code) == (201, 200)
    assert repeat.json["duplicate"] is True and repeat.json["entry_id"] == first.json["entry_id"]
    conflict = returned(api, {**body, "amount": "200"}, "ret-1")
    assert conflict.status_code == 409 and conflict.json["error"] == "idempotency_conflict"


@pytest.mark.parametrize(("body", "field"), [
    ({"source": "order-1"}, "amount"),
    ({"amount": "10"}, "source"),
    ({"source": "order-1", "amount": "0"}, "amount"),
    ({"source": "order-1", "amount": "10", "rows": [
        {"product_id": "a", "price": "5", "quantity": 1}]}, "amount"),
    ({"source": "order-1", "rows": []}, "rows"),
    ({"source": "order-1", "rows": [{"product_id": "a", "price": "5"}]}, "rows[0].quantity"),
    ({"source": "order-1", "rows": [{"product_id": "a", "price": "5", "quantity": 1,
                                     "colour": "red"}]}, "rows[0].colour"),
    ({"source": "order-1", "rows": ["a"]}, "rows[0]"),
    ({"source": "order-1", "amount": "10", "amout": "1"}, "amout"),
])
def test_bad_requests_name_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    api.accrue("1000", key="order-1")
    response = returned(api, body, "ret-bad")
    assert response.status_code == 400, response.json
    assert response.json["detail"].startswith(f"{field}:"), response.json["detail"]
    assert api.balance() == "30.00"  # nothing written


def test_full_reverse_after_a_partial_return(api: Api) -> None:
    api.accrue("1000", key="order-1")
    returned(api, {"source": "order-1", "amount": "400"}, "ret-1")
    reverse = api.post("/api/v1/reverse", {**ANNA, "source": "order-1"}, key="rev-1")
    assert reverse.status_code == 201 and reverse.json["points"] == "-18.00"
    assert api.account()["purchase_count"] == 0


# -- the command line ------------------------------------------------------------------------
def test_cli_return_by_amount_and_rows_and_refusals(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    assert run("db", "upgrade").exit_code == 0
    assert run("accrue", *CLI_ANNA, "10000", "--key", "order-1").exit_code == 0
    part = run("return", *CLI_ANNA, "order-1", "--amount", "2500", "--key", "ret-1")
    assert part.exit_code == 0, part.output
    assert part.stdout.startswith("reversal -75.00 points")
    rows = run("return", *CLI_ANNA, "order-1", "--row", "sku-1", "1000", "2",
               "--row", "sku-2", "250.50", "2", "--key", "ret-2")
    assert rows.exit_code == 0, rows.output
    again = run("return", *CLI_ANNA, "order-1", "--row", "sku-1", "1000", "2",
                "--row", "sku-2", "250.50", "2", "--key", "ret-2")
    assert "(already recorded)" in again.stdout
    too_much = run("return", *CLI_ANNA, "order-1", "--amount", "5000", "--key", "ret-3")
    assert too_much.exit_code == 1 and "exceeds the 4999.00 left" in too_much.output
    neither = run("return", *CLI_ANNA, "order-1", "--key", "ret-3")
    assert neither.exit_code == 2 and "--amount" in neither.output
    disagree = run("return", *CLI_ANNA, "order-1", "--amount", "5", "--row", "a", "1", "1",
                   "--key", "ret-3")
    assert disagree.exit_code == 2 and "rows' total 1.00" in disagree.output
    shown = json.loads(run("account", "show", *CLI_ANNA, "--json").stdout)
    assert (shown["purchase_total"], shown["balance"]) == ("4999.00", "149.00")
    assert run("verify").exit_code == 0
