"""`install`, `sync`, `worker` and `uninstall` for Bitrix24, run in-process against the fake."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.bitrix24.install import FIELD_TYPES
from connector.cli import cli
from connector.sandbox import FakeBitrix24Portal

Run = Callable[..., Result]


@pytest.fixture
def portal() -> Iterator[FakeBitrix24Portal]:
    with FakeBitrix24Portal() as fake:
        yield fake


@pytest.fixture
def run(tmp_path: Path, portal: FakeBitrix24Portal) -> Run:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n'
        f'[bitrix24]\nenabled = true\nwebhook_url = "{portal.webhook_url}"\n'
        f'portal = "acme.bitrix24.ru"\napplication_token = "{portal.application_token}"\n'
        '[program]\nlanguage = "en"\n',  # the outputs are read in English
        encoding="utf-8")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), *args])

    assert invoke("db", "upgrade").exit_code == 0
    return invoke


def loyalty_fields(portal: FakeBitrix24Portal, owner: str | None = None) -> list[str]:
    """The loyalty user fields, of contacts and deals (the promo code) or of `owner`."""
    return [f["FIELD_NAME"] for f in portal.store.userfields.values()
            if f["FIELD_NAME"].startswith("UF_CRM_LOYALTY")
            and owner in (None, f["ENTITY_ID"])]


def test_install_sync_worker_uninstall(run: Run, portal: FakeBitrix24Portal,
                                       tmp_path: Path) -> None:
    installed = run("install", "bitrix24")
    assert installed.exit_code == 0, installed.output
    assert "created contact field UF_CRM_LOYALTY_BALANCE (double)" in installed.stdout
    assert "manual steps in the CRM:" in installed.stdout  # a webhook cannot bind events
    assert "contact field UF_CRM_LOYALTY_BALANCE exists" in run("install", "bitrix24").stdout

    anna = portal.add_contact(NAME="Anna")
    deal = portal.add_deal(contact_ids=[anna], STAGE_ID="WON", OPPORTUNITY="10000.00")
    portal.add_deal(STAGE_ID="WON", OPPORTUNITY="10.00")
    synced = run("sync", "bitrix24", "--json")
    assert synced.exit_code == 0, synced.output
    summary = json.loads(synced.stdout)
    assert (summary["deals"], summary["changed"], summary["without_contact"]) == (2, 1, 1)
    assert summary["contacts_written"] == 1
    assert portal.contact(anna)["UF_CRM_LOYALTY_BALANCE"] == "300"

    from connector.config import load_settings
    from connector.services import Services

    services = Services.build(load_settings(tmp_path / "config.toml"))
    body, _ = portal.event_body("ONCRMDEALUPDATE", deal)
    services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key="e1", body=body)
    services.close()
    portal.update_deal(deal, OPPORTUNITY="20000.00")
    worked = run("worker", "--once")
    assert worked.exit_code == 0 and "done: 1" in worked.stdout
    assert portal.contact(anna)["UF_CRM_LOYALTY_BALANCE"] == "600"

    kept = run("uninstall", "bitrix24")  # asks first; no answer: nothing removed
    assert kept.exit_code == 1
    assert len(loyalty_fields(portal, "CRM_CONTACT")) == len(FIELD_TYPES)
    assert loyalty_fields(portal, "CRM_DEAL") == ["UF_CRM_LOYALTY_PROMO_CODE", "UF_CRM_LOYALTY_NPS"]
    removed = run("uninstall", "bitrix24", "--yes")
    assert removed.exit_code == 0 and loyalty_fields(portal) == []


def test_sync_reads_the_deals_in_chained_pages_and_counts_them_once(
        run: Run, portal: FakeBitrix24Portal) -> None:
    assert run("install", "bitrix24").exit_code == 0
    contacts = [portal.add_contact(NAME=f"C{n}") for n in range(60)]
    for n in range(120):
        portal.add_deal(contact_ids=[contacts[n % 60]], STAGE_ID="WON", OPPORTUNITY="100.00")
    before = len(portal.calls)
    synced = run("sync", "bitrix24", "--full")
    assert synced.exit_code == 0, synced.output
    assert "deals: 120" in synced.stdout
    # a bar sized by the count (off a terminal click prints its label alone), not the
    # running count shown when no total is known
    assert synced.stderr.strip() == "deals" and "deals: 120" not in synced.stderr
    requests = [c for c in portal.calls[before:] if c.batch is None]
    # one batch lists the 120 deals (3 pages, the first counting them), two write 60 contacts
    assert [c.method for c in requests] == ["batch", "batch", "batch"]
    listed = [c for c in portal.calls[before:] if c.method == "crm.deal.list"]
    assert [c.params["start"] for c in listed[:3]] == ["0", "-1", "-1"]
    assert "api calls: 3" in synced.stdout


def test_disabled_crm_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n', encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "db", "upgrade"]).exit_code == 0
    result = runner.invoke(cli, ["--config", str(config), "sync", "bitrix24"])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: bitrix24 is not enabled: set bitrix24.enabled = "
                                     "true and its credentials (see config.example.toml)")


def test_unreachable_portal_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n[bitrix24]\n'
                      'enabled = true\nmax_retries = 0\n'
                      'webhook_url = "http://127.0.0.1:9/rest/1/secretvalue/"\n',
                      encoding="utf-8")
    runner = CliRunner()
    runner.invoke(cli, ["--config", str(config), "db", "upgrade"])
    result = runner.invoke(cli, ["--config", str(config), "sync", "bitrix24"])
    assert result.exit_code == 1 and result.stderr.startswith(
        "error: bitrix24: batch: cannot reach the portal")
    assert "secretvalue" not in result.stderr
