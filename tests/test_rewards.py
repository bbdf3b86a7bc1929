"""Rewards: the catalogue, claims (points, stock, limits, tiers, windows), handing over and
cancelling, on SQLite and PostgreSQL; concurrent claims of a scarce reward."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import select, update

from connector import triggers
from connector.codes import alphabet, draw
from connector.config import Settings
from connector.crm.models import TriggerEvent
from connector.errors import RewardNotFoundError, RewardRefusedError
from connector.i18n import translator
from connector.ledger.models import Entry, Lot
from connector.ledger.views import AccountRef
from connector.referrals import codes as referral_codes
from connector.rewards.claims import CODE_LENGTH, Claimed
from connector.rewards.models import RewardClaim
from connector.services import Services
from connector.stats import format_stats, program_stats
from connector.triggers import REWARD_CLAIMED
from tests.conftest import Clock, fresh_services
from tests.test_concurrency import in_parallel

REF = AccountRef("bitrix24", "acme.bitrix24.ru", "7")
OTHER = AccountRef("bitrix24", "acme.bitrix24.ru", "8")


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"rewards": [
        {"id": "mug", "name": "Branded mug", "cost": 100, "stock": 2, "per_customer": 1},
        {"id": "lounge", "name": "Lounge pass", "cost": 50, "tier": "Gold"},
        {"id": "winter", "name": "Winter scarf", "cost": 10,
         "starts": "2026-12-01T00:00:00", "ends": "2027-01-01T00:00:00"},
        {"id": "sticker", "name": "Sticker", "cost": "5.50"},
    ]}


@pytest.fixture
def services(settings: Settings, clock: Clock) -> Iterator[Services]:
    built = fresh_services(settings, clock=clock)
    yield built
    built.close()


def fund(services: Services, ref: AccountRef, points: str, key: str = "fund") -> None:
    services.ledger.adjust(ref, D(points), key=f"{key}:{ref.contact_id}", reason="test funds")


def refused(services: Services, slug: str, ref: AccountRef = REF, key: str = "k") -> str:
    with pytest.raises(RewardRefusedError) as caught:
        services.claims.claim(ref, slug, key=key, via="cli")
    return caught.value.reason


def test_the_catalogue_follows_the_configuration(services: Services) -> None:
    listed = {r.id: r for r in services.rewards.list()}
    assert sorted(listed) == ["lounge", "mug", "sticker", "winter"]
    assert listed["mug"].stock_left == 2 and listed["mug"].cost == D("100.00")
    assert listed["sticker"].cost == D("5.50") and listed["sticker"].stock is None
    # Local midnight in Europe/Moscow (UTC+3).
    assert listed["winter"].starts_at == datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
    assert listed["lounge"].tier == "Gold" and listed["mug"].origin == "config"


def test_a_claim_pays_takes_stock_issues_a_code_and_tells_staff(services: Services) -> None:
    fund(services, REF, "150")
    claimed = services.claims.claim(REF, "mug", key="c1", via="cli", actor="cli")
    assert claimed.result.kind == "reward" and claimed.result.points == D("-100.00")
    assert claimed.result.balance == D("50.00") and not claimed.result.duplicate
    assert alphabet.normalize(claimed.claim.code, CODE_LENGTH) == claimed.claim.code
    assert len(claimed.claim.code) == 10 and not set(claimed.claim.code) & set("01OIL")
    assert claimed.claim.status == "issued" and claimed.claim.reward == "mug"
    assert services.rewards.get("mug").stock_left == 1
    with services.db.transaction(write=False) as session:
        events = list(session.scalars(select(TriggerEvent)))
    assert [(e.code, e.transition) for e in events] == [
        (REWARD_CLAIMED, f"reward_claim:{claimed.claim.id}")]
    assert services.ledger.verify() == (1, [])


def test_a_repeated_key_claims_once(services: Services) -> None:
    fund(services, REF, "300")
    first = services.claims.claim(REF, "sticker", key="same", via="api")
    again = services.claims.claim(REF, "sticker", key="same", via="api")
    assert again.result.duplicate and again.claim == first.claim
    assert services.ledger.account(REF).balance == D("294.50")
    assert len(services.claims.list()) == 1


def test_refusals_say_why(services: Services, clock: Clock) -> None:
    fund(services, REF, "60")
    assert refused(services, "mug") == "points"
    assert refused(services, "lounge") == "tier"
    assert refused(services, "winter") == "window"  # March: the window is in December
    fund(services, REF, "500", key="more")
    services.claims.claim(REF, "mug", key="m1", via="cli")
    assert refused(services, "mug", key="m2") == "limit"
    fund(services, OTHER, "500")
    services.claims.claim(OTHER, "mug", key="o1", via="cli")
    third = AccountRef("bitrix24", "acme.bitrix24.ru", "9")
    fund(services, third, "500")
    assert refused(services, "mug", ref=third, key="t1") == "stock"
    with pytest.raises(RewardNotFoundError):
        services.claims.claim(REF, "nothing", key="x", via="cli")
    clock.now = datetime(2026, 12, 5, tzinfo=UTC)
    assert services.claims.claim(REF, "winter", key="w1", via="cli").claim.status == "issued"
    # Nothing refused was written: only the three claims' entries and the funds.
    assert services.ledger.account(REF).balance == D("450.00")


def test_a_gold_customer_may_claim_a_gold_reward(services: Services) -> None:
    fund(services, REF, "100")
    services.ledger.accrue(REF, D("150000"), key="big")
    assert services.ledger.account(REF).tier == "Gold"
    assert services.claims.claim(REF, "lounge", key="g", via="cli").claim.reward == "lounge"


def test_cancel_gives_points_back_with_their_expiry_and_the_stock(services: Services,
                                                                 clock: Clock) -> None:
    services.ledger.grant_bonus(REF, "manual", key="early", points=D("80"))
    clock.advance(days=30)
    services.ledger.grant_bonus(REF, "manual", key="later", points=D("80"))
    with services.db.transaction(write=False) as session:
        expiries = sorted(lot.expires_at for lot in session.scalars(select(Lot)))
    claimed = services.claims.claim(REF, "mug", key="c", via="cli")
    assert services.rewards.get("mug").stock_left == 1
    cancelled = services.claims.cancel(claimed.claim.code.lower(), actor="cli")
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert services.rewards.get("mug").stock_left == 2
    assert services.ledger.account(REF).balance == D("160.00")
    with services.db.transaction(write=False) as session:
        open_lots = [lot for lot in session.scalars(select(Lot)) if lot.remaining > 0]
    # The 80 from the first lot and 20 from the second came back with those lots' dates.
    assert {lot.expires_at for lot in open_lots} <= set(expiries)
    assert sum(lot.remaining for lot in open_lots) == 16000
    again = services.claims.cancel(claimed.claim.code)
    assert again.status == "cancelled"
    assert services.ledger.account(REF).balance == D("160.00")
    with pytest.raises(RewardRefusedError) as caught:
        services.claims.handed(claimed.claim.code)
    assert caught.value.reason == "cancelled"
    # The limit counts claims that stand: a cancelled one frees it.
    assert services.claims.claim(REF, "mug", key="c2", via="cli").claim.status == "issued"
    assert services.ledger.verify() == (1, [])


def test_handed_over_cannot_be_cancelled(services: Services) -> None:
    fund(services, REF, "100")
    claimed = services.claims.claim(REF, "sticker", key="c", via="cli")
    assert services.claims.handed(claimed.claim.code).status == "handed"
    assert services.claims.handed(claimed.claim.code).status == "handed"
    with pytest.raises(RewardRefusedError) as caught:
        services.claims.cancel(claimed.claim.code)
    assert caught.value.reason == "handed"
    assert [c.code for c in services.claims.list(open_only=True)] == []
    with pytest.raises(RewardNotFoundError):
        services.claims.cancel("ZZZZZZZZZZ")


def test_api_rewards_can_change_config_rewards_cannot(services: Services) -> None:
    made = services.rewards.create({"id": "tote", "name": "Tote bag", "cost": "40",
                                    "stock": 3, "ends": "2026-04-01T00:00:00+00:00"})
    assert made.origin == "api" and made.ends_at == datetime(2026, 4, 1, tzinfo=UTC)
    fund(services, REF, "100")
    services.claims.claim(REF, "tote", key="t", via="api")
    changed = services.rewards.update("tote", {"stock": 10, "cost": "45"})
    assert changed.stock_left == 9 and changed.cost == D("45.00")
    assert not services.rewards.disable("tote").active
    assert refused(services, "tote", key="t2") == "disabled"
    with pytest.raises(RewardRefusedError) as caught:
        services.rewards.update("mug", {"cost": 1})
    assert caught.value.reason == "configured"
    with pytest.raises(RewardRefusedError):
        services.rewards.create({"id": "tote", "name": "again", "cost": 1})


def test_a_reward_taken_out_of_the_configuration_is_disabled(settings: Settings,
                                                             services: Services) -> None:
    services.rewards.list()
    program = settings.program.model_copy(update={"rewards": settings.program.rewards[:1]})
    smaller = settings.model_copy(update={"program": program})
    later = Services.build(smaller)
    try:
        assert [r.id for r in later.rewards.list()] == ["mug"]
        assert not later.rewards.get("sticker").active
    finally:
        later.close()


def test_parallel_claims_take_the_stock_exactly(services: Services) -> None:
    customers = [AccountRef("bitrix24", "acme.bitrix24.ru", str(100 + i)) for i in range(8)]
    for i, ref in enumerate(customers):
        fund(services, ref, "1000", key=f"fund:{i}")
    services.rewards.list()
    outcomes = in_parallel(8, lambda i: services.claims.claim(
        customers[i], "mug", key=f"claim:{i}", via="api"))
    claimed = [o for o in outcomes if isinstance(o, Claimed)]
    out = [o for o in outcomes if isinstance(o, RewardRefusedError)]
    assert len(claimed) == 2 and len(out) == 6, outcomes
    assert all(o.reason == "stock" for o in out)
    assert services.rewards.get("mug").stock_left == 0
    assert len(services.claims.list()) == 2
    assert services.ledger.verify() == (8, [])


def test_parallel_claims_by_one_customer_respect_the_limit_and_balance(
        services: Services) -> None:
    fund(services, REF, "20")
    services.rewards.list()
    outcomes = in_parallel(6, lambda i: services.claims.claim(REF, "sticker", key=f"s:{i}",
                                                              via="card"))
    claimed = [o for o in outcomes if isinstance(o, Claimed)]
    assert len(claimed) == 3, outcomes  # 3 x 5.50 of 20 points
    assert all(isinstance(o, RewardRefusedError) and o.reason == "points"
               for o in outcomes if not isinstance(o, Claimed))
    assert services.ledger.account(REF).balance == D("3.50")
    assert len({c.claim.code for c in claimed}) == 3
    assert services.ledger.verify() == (1, [])


def test_parallel_claims_under_one_key_answer_with_the_one_claim(services: Services) -> None:
    """Found in review: on PostgreSQL a repeat that waited for the account's lock was refused
    by the original's own claim (one mug per customer) instead of answered with it."""
    fund(services, REF, "100")
    services.rewards.list()
    outcomes = in_parallel(6, lambda i: services.claims.claim(REF, "mug", key="mug:1",
                                                              via="card"))
    claimed = [o for o in outcomes if isinstance(o, Claimed)]
    assert len(claimed) == 6, outcomes
    assert len({c.claim.code for c in claimed}) == 1
    assert sum(not c.result.duplicate for c in claimed) == 1
    assert services.ledger.account(REF).balance == D("0.00")
    assert services.rewards.get("mug").stock_left == 1
    assert services.ledger.verify() == (1, [])


def test_claim_codes_are_normalised() -> None:
    code = alphabet.new_code(CODE_LENGTH)
    assert alphabet.normalize(f" {code[:5].lower()}-{code[5:]} ", CODE_LENGTH) == code
    assert alphabet.normalize("O0O0O0O0O0", CODE_LENGTH) is None
    assert alphabet.normalize("short", CODE_LENGTH) is None


def test_claim_referral_and_promo_codes_share_one_alphabet_and_keep_their_lengths() -> None:
    drawn = {"claim": alphabet.new_code(CODE_LENGTH), "referral": referral_codes.new_code(),
             "promo": draw.new_code()}
    assert {kind: len(code) for kind, code in drawn.items()} == \
        {"claim": 10, "referral": 8, "promo": 12}
    assert all(set(code) <= set(alphabet.ALPHABET) for code in drawn.values())
    # A code of one kind is not read as another kind's.
    assert referral_codes.normalize(drawn["claim"]) is None
    assert alphabet.normalize(drawn["referral"], CODE_LENGTH) is None
    # Promo input is not held to the alphabet: a configured shared code may read SUMMER10.
    assert draw.normalize("summer-10") == "SUMMER10"


def test_codes_stored_before_the_shared_alphabet_are_still_read(services: Services) -> None:
    """Codes the earlier modules issued (fixed here, as a database holds them): a claim code
    and a referral code typed the ways people type them find their rows; a promo code
    in groups of four reads as stored."""
    fund(services, REF, "150")
    claimed = services.claims.claim(REF, "mug", key="c1", via="cli")
    with services.db.transaction() as session:
        session.execute(update(RewardClaim).where(RewardClaim.code == claimed.claim.code)
                        .values(code="K7M3PQ9XZ2"))
    for typed in ("K7M3PQ9XZ2", " k7m3-pq9x z2 ", "K7M3_PQ9X_Z2"):
        assert services.claims.get(typed).code == "K7M3PQ9XZ2"
    services.ledger.open_account(OTHER, referral_code="W8R2H5NB")
    for typed in ("W8R2H5NB", "w8r2-h5nb", " W8R2 H5NB"):
        code = referral_codes.normalize(typed)
        assert code is not None and services.ledger.referrer_by_code(code) == OTHER
    assert draw.normalize("abcd-efgh-jkmn") == "ABCDEFGHJKMN"


def test_stats_count_claims_and_the_points_they_took(services: Services, clock: Clock) -> None:
    fund(services, REF, "300")
    services.claims.claim(REF, "mug", key="a", via="cli")
    kept = services.claims.claim(REF, "sticker", key="b", via="cli")
    dropped = services.claims.claim(REF, "sticker", key="c", via="cli")
    services.claims.cancel(dropped.claim.code)
    services.claims.handed(kept.claim.code)
    since, until = clock.now - timedelta(days=1), clock.now + timedelta(days=1)
    with services.db.transaction(write=False) as session:
        figures = program_stats(session, services.program, since=since, until=until)
    assert (figures.rewards_claimed, figures.reward_points, figures.rewards_open) == (
        2, D("105.50"), 1)
    assert figures.as_json()["reward_points"] == "105.50"
    assert "rewards        2 claimed, 105.50 points spent, 1 to hand over" in format_stats(
        figures, services.program.zone, translator("en"))


def test_a_claim_reversed_by_its_key_is_not_paid_back_twice(services: Services) -> None:
    fund(services, REF, "100")
    claimed = services.claims.claim(REF, "sticker", key="api:s1", via="api")
    services.ledger.reverse(REF, "api:s1", key="undo")
    assert services.ledger.account(REF).balance == D("100.00")
    assert services.claims.cancel(claimed.claim.code).status == "cancelled"
    assert services.ledger.account(REF).balance == D("100.00")  # not 105.50
    assert services.ledger.verify() == (1, [])


def test_a_cancel_after_the_stock_was_cut_gives_no_unit_beyond_it(services: Services) -> None:
    services.rewards.create({"id": "tote", "name": "Tote bag", "cost": "10", "stock": 3})
    customers = [AccountRef("bitrix24", "acme.bitrix24.ru", str(200 + i)) for i in range(4)]
    claims = []
    for i, ref in enumerate(customers):
        fund(services, ref, "100", key=f"fund:{i}")
    for i, ref in enumerate(customers[:3]):
        claims.append(services.claims.claim(ref, "tote", key=f"tote:{i}", via="api"))
    # Three units are out; the stock is cut to one: none is left to claim.
    assert services.rewards.update("tote", {"stock": 1}).stock_left == 0
    services.claims.cancel(claims[0].claim.code)
    # Two claims still hold a unit of a stock of one: a cancel frees none.
    assert services.rewards.get("tote").stock_left == 0
    assert refused(services, "tote", ref=customers[3], key="tote:3") == "stock"
    services.claims.cancel(claims[1].claim.code)
    services.claims.cancel(claims[2].claim.code)
    assert services.rewards.get("tote").stock_left == 1


def test_a_retry_after_a_crash_before_staff_were_told_tells_them(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    fund(services, REF, "150")
    real = triggers.record

    def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the process died after the claim was committed")

    monkeypatch.setattr(triggers, "record", crash)
    with pytest.raises(RuntimeError):
        services.claims.claim(REF, "mug", key="crash", via="api")
    monkeypatch.setattr(triggers, "record", real)
    again = services.claims.claim(REF, "mug", key="crash", via="api")
    assert again.result.duplicate and again.result.balance == D("50.00")
    with services.db.transaction(write=False) as session:
        told = list(session.scalars(select(TriggerEvent).where(
            TriggerEvent.code == REWARD_CLAIMED)))
    assert [event.transition for event in told] == [f"reward_claim:{again.claim.id}"]


def test_the_claim_code_is_stored_with_the_reward_entry(services: Services) -> None:
    """The reward entry goes in with a Core INSERT, attached to the session as if loaded;
    the claim code set on it after the claim row's flush is still written."""
    fund(services, REF, "150")
    claimed = services.claims.claim(REF, "mug", key="c1", via="cli")
    with services.db.transaction(write=False) as session:
        stored = session.get(Entry, claimed.result.entry_id)
        assert stored is not None
        assert stored.details == {"reward": "mug", "name": "Branded mug",
                                  "claim": claimed.claim.code}
