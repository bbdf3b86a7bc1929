"""RFM segments on a known data set: scores, named segments, storage and write-back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from connector.config import Settings
from connector.ledger.views import AccountRef
from connector.rfm import Customer, quintile_scores, score, segment_of, update_segments
from tests.conftest import Clock, fresh_services, make_settings

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
# name: (days since the last purchase, purchases, total spend). Ten active customers with
# distinct values, so each quintile holds exactly two of them; K bought too long ago.
DATA = {
    "A": (1, 20, 20_000), "B": (2, 1, 100), "C": (5, 12, 12_000), "D": (10, 3, 300),
    "E": (20, 10, 10_000), "F": (40, 4, 400), "G": (80, 15, 15_000), "H": (120, 5, 500),
    "I": (200, 9, 9_000), "J": (300, 6, 6_000), "K": (400, 30, 90_000),
}
EXPECTED = {
    "A": ("555", "champions"), "B": ("511", "new"), "C": ("444", "champions"),
    "D": ("411", "promising"), "E": ("344", "loyal"), "F": ("322", "needs_attention"),
    "G": ("255", "at_risk"), "H": ("222", "hibernating"), "I": ("133", "at_risk"),
    "J": ("133", "at_risk"), "K": (None, "lost"), "L": (None, None),
}


def customers() -> list[Customer]:
    found = [Customer(ord(name), NOW - timedelta(days=days), count, total)
             for name, (days, count, total) in DATA.items()]
    return [*found, Customer(ord("L"), None, 0, 0)]  # a contact who never bought


def test_quintiles_give_equal_values_equal_scores() -> None:
    assert quintile_scores(list(range(10))) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert quintile_scores([7, 7, 7]) == [3, 3, 3]  # no spread: everyone in the middle
    assert quintile_scores([1]) == [3]
    assert quintile_scores([5, 1, 5, 1]) == [4, 2, 4, 2]


def test_known_data_set_gives_the_expected_scores_and_segments() -> None:
    scores = score(customers(), NOW, active_days=365)
    found = {chr(account_id): (s.rfm, s.segment) for account_id, s in scores.items()}
    assert found == EXPECTED


@pytest.mark.parametrize(("r", "f", "m", "count", "segment"), [
    (5, 1, 1, 1, "new"), (4, 5, 3, 1, "new"), (3, 1, 1, 1, "new"), (2, 1, 5, 1, "hibernating"),
    (4, 4, 3, 4, "champions"), (4, 3, 3, 4, "loyal"), (3, 3, 2, 5, "loyal"),
    (2, 3, 3, 4, "at_risk"), (1, 2, 2, 4, "hibernating"), (5, 2, 2, 2, "promising"),
    (3, 2, 2, 3, "needs_attention"),
])
def test_segment_rules(r: int, f: int, m: int, count: int, segment: str) -> None:
    assert segment_of(r, f, m, count) == segment


def _settings(tmp_path: Path, database_url: str, **sections: object) -> Settings:
    return make_settings(tmp_path, database_url, program={"points_lifetime_days": 0},
                         **sections)


@pytest.mark.storage
def test_segments_are_stored_once_and_shown_in_the_crm_field(tmp_path: Path,
                                                            database_url: str) -> None:
    settings = _settings(
        tmp_path, database_url, rfm={"labels": {"at_risk": "Под угрозой ухода"}},
        bitrix24={"enabled": True, "webhook_url": "https://acme.bitrix24.ru/rest/1/secret/",
                  "application_token": "t" * 32})
    clock = Clock(NOW - timedelta(days=500))
    services = fresh_services(settings, clock=clock)
    ledger = services.ledger
    refs = {name: AccountRef("bitrix24", "acme.bitrix24.ru", str(ord(name))) for name in EXPECTED}
    # Replay each customer's purchases, the last one `days` before NOW.
    for name, (days, count, total) in DATA.items():
        for n in range(count):
            clock.now = NOW - timedelta(days=days + (count - 1 - n))
            ledger.accrue(refs[name], D(total) / count, key=f"{name}{n}")
    ledger.open_account(refs["L"])
    clock.now = NOW

    report = update_segments(services.db, NOW, active_days=365)
    assert report.scored == 10 and report.changed == 11  # L never bought: nothing to store
    assert report.sizes == {"at_risk": 3, "champions": 2, "hibernating": 1, "lost": 1,
                            "loyal": 1, "needs_attention": 1, "new": 1, "promising": 1}
    for name, (rfm, segment) in EXPECTED.items():
        view = ledger.account(refs[name])
        assert (view.rfm, view.segment) == (rfm, segment), name
    versions = {name: ledger.account(ref).version for name, ref in refs.items()}
    assert update_segments(services.db, NOW, active_days=365).changed == 0  # idempotent
    assert {name: ledger.account(ref).version for name, ref in refs.items()} == versions

    writeback = services.bitrix24.writeback
    wanted = writeback.wanted([ledger.account(refs[n]).id for n in "GAL"], NOW)
    shown = [values["UF_CRM_LOYALTY_SEGMENT"] for values in wanted.values()]
    assert sorted(shown) == sorted(["Под угрозой ухода", "champions", ""])

    # Ten weeks on, J's last purchase is over a year old: J is lost, the nine others are
    # ranked among themselves again, and only what moved is stored.
    moved = update_segments(services.db, NOW + timedelta(days=70), active_days=365)
    assert ledger.account(refs["J"]).segment == "lost"
    assert ledger.account(refs["A"]).segment == "champions"
    assert 1 < moved.changed < 11
    services.close()
