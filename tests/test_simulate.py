"""What-if simulator: the current program's replay gives the ledger's own accruals and tiers
(books written through the real Ledger), the proposed program's figures are hand-checked,
and the CLI reads a proposed [program] as config.toml's is checked."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from connector.cli import cli
from connector.config import ProgramSettings, Settings
from connector.db import Database
from connector.economics.simulate import Simulation, load_program, read_only, simulate
from connector.errors import ConfigError, LedgerError
from connector.imports.rows import RawRow
from connector.imports.runner import run_import
from connector.ledger.engine import Ledger
from connector.ledger.models import Account, Entry, Lot
from connector.ledger.views import AccountRef
from connector.products.rows import Row
from connector.services import Services
from tests.conftest import Clock, _reset_postgres, fresh_services, make_settings

ANNA = AccountRef("bitrix24", "shop", "1")
BORIS = AccountRef("bitrix24", "shop", "2")
CLARA = AccountRef("bitrix24", "shop", "3")

CURRENT: dict[str, Any] = {
    "tiers": [{"name": "Bronze", "min_spend": "0", "rate": "0.03"},
              {"name": "Silver", "min_spend": "10000", "rate": "0.05"},
              {"name": "Gold", "min_spend": "50000", "rate": "0.07"}],
    "campaigns": [{"name": "Shoes week", "starts": "2026-03-01T00:00:00",
                   "ends": "2026-03-20T00:00:00", "multiplier": "2", "extra_points": "10",
                   "categories": ["shoes"]}],
}
PROPOSED: dict[str, Any] = {
    "point_value": "0.5",
    "tiers": [{"name": "Base", "min_spend": "0", "rate": "0.05"},
              {"name": "Plus", "min_spend": "5000", "rate": "0.08"},
              {"name": "Top", "min_spend": "30000", "rate": "0.10"}],
    "campaigns": [{"name": "Shoes week", "starts": "2026-03-01T00:00:00",
                   "ends": "2026-03-20T00:00:00", "multiplier": "3",
                   "categories": ["shoes"]}],
}


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return CURRENT


def ledger_accruals(db: Database) -> dict[int, int]:
    with db.transaction(write=False) as session:
        return {a: int(s) for a, s in session.execute(
            select(Entry.account_id, func.sum(Entry.amount))
            .where(Entry.kind == "accrual").group_by(Entry.account_id))}


def ledger_tiers(db: Database) -> dict[int, str]:
    with db.transaction(write=False) as session:
        return {a: t for a, t in session.execute(select(Account.id, Account.tier))}


def assert_replays_the_ledger(sim: Simulation, db: Database) -> None:
    accruals = ledger_accruals(db)
    tiers = ledger_tiers(db)
    assert {a: s[0] for a, s in sim.accounts.items()} == \
        {a: accruals.get(a, 0) for a in tiers}
    assert {a: s[2] for a, s in sim.accounts.items()} == tiers
    assert sim.current.points_issued == D(sum(accruals.values())) / 100
    assert sim.differing_entries == 0


def build_hand_book(ledger: Ledger, clock: Clock) -> None:
    # Anna, inside the shoes campaign (2026-03-10).
    ledger.accrue(ANNA, D("8000"), key="a1")                     # Bronze: 240
    ledger.accrue(ANNA, D("4000"), key="a2")                     # still Bronze: 120; Silver
    ledger.accrue(ANNA, D("1000"), key="a3", category="shoes")   # 1000*0.05*2 + 10 = 110
    ledger.accrue(ANNA, D("333.33"), key="a4")                   # 16.6665 floors to 16
    ledger.return_purchase(ANNA, "a2", D("1000"), key="r1")      # 120 - 90: 30 back
    ledger.reverse(ANNA, "a4", key="v1")                         # 16 back
    clock.advance(days=30)  # the campaign is over
    ledger.settle_purchase(BORIS, "deal:1", D("60000"), category="shoes")  # 1800; Gold
    ledger.settle_purchase(BORIS, "deal:1", D("70000"))          # at 0.03: +300
    ledger.settle_purchase(BORIS, "deal:1", D("50000"))          # at 0.03: -600
    ledger.accrue(BORIS, D("1000"), key="b2")                    # Gold: 70
    ledger.accrue(CLARA, D("6000"), key="c1")                    # Bronze: 180
    ledger.redeem(ANNA, D("100"), key="rd1")


def test_hand_checked_book_current_and_proposed(ledger: Ledger, clock: Clock,
                                                db: Database, settings: Settings) -> None:
    build_hand_book(ledger, clock)
    with db.transaction(write=False) as session:
        before = session.scalar(select(func.count()).select_from(Entry))
    sim = simulate(db, settings.program, ProgramSettings(**PROPOSED), now=clock())
    assert_replays_the_ledger(sim, db)
    ids = {ref: ledger.account_id(ref) for ref in (ANNA, BORIS, CLARA)}
    assert {ref: sim.accounts[i] for ref, i in ids.items()} == {
        # Proposed points are worth 0.5: twice as many. Anna: 800 + 640 + 480 + 53
        # (333.33 * 0.08 / 0.5 = 53.33); Boris: 6000 + 1000 + 200; Clara: 600.
        ANNA: (48600, 197300, "Silver", "Plus"),
        BORIS: (217000, 720000, "Gold", "Top"),
        CLARA: (18000, 60000, "Bronze", "Plus"),
    }
    current, proposed = sim.current, sim.proposed
    assert (current.points_issued, current.points_taken_back) == (D("2836"), D("-646"))
    assert (proposed.points_issued, proposed.points_taken_back) == (D("9773"), D("-2213"))
    # Observed: 100 redeemed of the 2,190 given, nothing expired.
    assert (sim.redemption_rate, sim.expiry_share) == (D("0.0457"), D("0"))
    assert current.expected_redemptions == D("100") and proposed.expected_redemptions == \
        D("345.21")  # 7,560 * 100 / 2,190
    assert (current.outstanding_points, current.liability) == (D("2090"), D("2090.00"))
    assert (proposed.outstanding_points, proposed.liability) == (D("7214.79"), D("3607.40"))
    assert sim.revenue == D("69000")
    assert (current.cost_share, proposed.cost_share) == (D("0.0317"), D("0.0548"))
    assert current.tiers == {"Bronze": 1, "Silver": 1, "Gold": 1}
    assert proposed.tiers == {"Base": 0, "Plus": 2, "Top": 1}
    assert (sim.moved_up, sim.moved_down) == (1, 0)  # Clara; by rank in each tier list
    with db.transaction(write=False) as session:  # read-only: nothing written
        assert session.scalar(select(func.count()).select_from(Entry)) == before


def test_the_period_counts_its_entries_and_the_state_before_it(ledger: Ledger, clock: Clock,
                                                               db: Database,
                                                               settings: Settings) -> None:
    build_hand_book(ledger, clock)
    sim = simulate(db, settings.program, ProgramSettings(**PROPOSED), now=clock(),
                   since=datetime(2026, 4, 1, tzinfo=UTC))
    # Only Boris's and Clara's entries fall in April; tiers still come from all history.
    assert sim.current.points_issued == D("2350") and sim.proposed.points_issued == D("7800")
    assert sim.current.tiers == {"Bronze": 1, "Silver": 1, "Gold": 1}
    until = simulate(db, settings.program, ProgramSettings(**PROPOSED), now=clock(),
                     until=datetime(2026, 4, 1, tzinfo=UTC))
    assert until.current.points_issued == D("486") and until.entries == 6


def test_a_downgrade_by_the_recalculation_is_taken_from_the_ledger(
        ledger: Ledger, clock: Clock, db: Database, settings: Settings) -> None:
    ledger.accrue(ANNA, D("60000"), key="big")                    # Gold
    clock.advance(days=370)                                        # out of the window
    ledger.recalculate_tiers()                                     # Gold -> Bronze
    ledger.accrue(ANNA, D("1000"), key="after")                    # at Bronze: 30
    proposed = ProgramSettings(**{**CURRENT, "tier_grace_days": 0})
    sim = simulate(db, settings.program, proposed, now=clock())
    assert_replays_the_ledger(sim, db)
    assert sim.tier_syncs == 1 and sim.accounts[1] == (183000, 183000, "Bronze", "Bronze")


# -- promo codes, catalogue rewards and opening balances --------------------------------------
CODES_AND_REWARDS: dict[str, Any] = {
    "promo": [{"name": "hello", "code": "HELLO", "points": "100"},
              {"name": "double", "code": "DOUBLE", "multiplier": "2"}],
    "rewards": [{"id": "mug", "name": "Mug", "cost": 100},
                {"id": "sticker", "name": "Sticker", "cost": "5"}],
}


def import_opening(services: Services, contact_id: str, balance: str, line: int,
                   crm: str = "bitrix24") -> None:
    result = run_import(services, crm, "shop",
                        [RawRow(line, {"contact_id": contact_id, "balance": balance})],
                        source="customers.csv", apply=True)
    assert result.applied is not None


def test_codes_rewards_and_openings_hand_checked(tmp_path: Path, database_url: str,
                                                 clock: Clock) -> None:
    settings = make_settings(tmp_path, database_url,
                             program={**CURRENT, **CODES_AND_REWARDS})
    services = fresh_services(settings, clock=clock)
    try:
        ledger = services.ledger
        # Anna: 1000 at 3% and HELLO's 100 fixed points: 130.
        assert ledger.accrue(ANNA, D("1000"), key="a1", promo_code="hello").points == D("130")
        # Boris: 2000 at 3% (60) and DOUBLE's 60 more: 120; half returned takes back 30.
        assert ledger.accrue(BORIS, D("2000"), key="b1", promo_code="DOUBLE").points == D("120")
        ledger.return_purchase(BORIS, "b1", D("1000"), key="r1")
        # Clara: an opening of 500, a mug claimed (100), a sticker claimed and cancelled.
        import_opening(services, "3", "500", 2)
        services.claims.claim(CLARA, "mug", key="m1", via="cli")
        sticker = services.claims.claim(CLARA, "sticker", key="s1", via="cli")
        services.claims.cancel(sticker.claim.code)
        db = services.db
        with db.transaction(write=False) as session:
            kinds = sorted(session.scalars(select(Entry.kind)))
            balance = int(session.scalar(select(func.sum(Entry.amount))))
        assert kinds == ["accrual", "accrual", "opening", "reversal", "reversal",
                         "reward", "reward"]
        assert balance == 62000  # 130 + 120 - 30 + 500 - 100 - 5 + 5

        same = simulate(db, settings.program, settings.program, now=clock())
        assert_replays_the_ledger(same, db)
        assert same.proposed == same.current
        assert same.current.outstanding_points == D("620")

        # Proposed: points worth 0.5 at 5%; the DOUBLE campaign triples there, HELLO's
        # points are kept as granted.
        proposed = ProgramSettings(**{**PROPOSED, "promo": [
            {"name": "hello", "code": "HELLO", "points": "100"},
            {"name": "double", "code": "DOUBLE", "multiplier": "3"}]})
        sim = simulate(db, settings.program, proposed, now=clock())
        assert_replays_the_ledger(sim, db)
        ids = {ref: ledger.account_id(ref) for ref in (ANNA, BORIS, CLARA)}
        assert {ref: sim.accounts[i] for ref, i in ids.items()} == {
            ANNA: (13000, 20000, "Bronze", "Base"),    # 1000 * 0.05 / 0.5 = 100, + 100
            BORIS: (12000, 60000, "Bronze", "Base"),   # 200 and the code's 200 * 2 = 400
            CLARA: (0, 0, "Bronze", "Base"),
        }
        current, after = sim.current, sim.proposed
        # The return of half takes back what the half earned, the code's points stay with
        # the rest of the purchase: 30 now, 100 proposed.
        assert (current.points_issued, current.points_taken_back) == (D("250"), D("-30"))
        assert (after.points_issued, after.points_taken_back) == (D("800"), D("-100"))
        # Spent: the mug's 100 (the cancelled sticker gave its 5 back) of the 220 given.
        assert current.expected_redemptions == D("100")
        assert sim.redemption_rate == D("0.4545")
        # Kept as they happened and owed: the opening 500, the mug. Proposed: 700 given,
        # 318.18 of it expected redeemed (the observed 100/220), the opening on top.
        assert after.expected_redemptions == D("318.18")
        assert after.outstanding_points == D("500") + D("700") - D("318.18")
        assert after.liability == D("440.91")
    finally:
        services.close()


# -- random books: the replay under the current program is the ledger --------------------------
RANDOM_PROGRAM: dict[str, Any] = {
    **CURRENT,
    "campaigns": [*CURRENT["campaigns"],
                  {"name": "Summer", "starts": "2026-05-01T00:00:00",
                   "ends": "2026-06-15T00:00:00", "multiplier": "1.5", "extra_points": "5"}],
    "referral_bonus": "50", "referral_newcomer_bonus": "20",
    "tier_period_days": 60,
    "points_lifetime_days": 45,
    "rounding": "half_up",
    "points_precision": 1,
    "product_rules": [{"name": "gift cards", "products": ["900"], "exclude": True},
                      {"name": "promo", "products": ["500"], "multiplier": "2"},
                      {"name": "fixed", "products": ["700"], "rate": "0.11"}],
    "promo": [{"name": "hello", "code": "HELLO", "points": "100", "budget": "400"},
              {"name": "double", "code": "DOUBLE", "multiplier": "2.5",
               "uses_per_customer": 0},
              {"name": "summer", "code": "SUN", "points": "15", "starts": "2026-05-01T00:00:00",
               "uses_per_customer": 0}],
    "rewards": CODES_AND_REWARDS["rewards"],
}
CODES = [None, None, None, "HELLO", "DOUBLE", "SUN", "NOPE1"]


def _rows(rng: random.Random) -> list[Row]:
    return [Row(rng.choice(["100", "500", "700", "900"]), D(rng.randint(100, 90000)) / 100,
                D(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]


def build_random_book(services: Services, clock: Clock, rng: random.Random, steps: int, *,
                      recalculate: bool = True) -> None:
    """Every operation the ledger's callers have, at random: purchases (with promo codes),
    deals settled and re-priced, returns, reversals, redemptions, catalogue rewards claimed,
    cancelled or reversed, imported opening balances, bonuses, adjustments, referrals, the
    tier recalculation and expiry."""
    ledger = services.ledger
    people = [AccountRef("amocrm", "shop", str(n)) for n in range(4)]
    deals: list[tuple[AccountRef, str]] = []
    claims: list[tuple[AccountRef, str, str]] = []  # who, the claim's key, its code
    for step in range(steps):
        who = rng.choice(people)
        roll = rng.random()
        amount = D(rng.randint(100, 3_000_000)) / 100
        try:
            if rng.random() < 0.12:
                _codes_rewards_openings(services, rng, step, who, people, claims)
            elif roll < 0.25:
                ledger.accrue(who, amount, key=f"p{step}",
                              category=rng.choice([None, "shoes", "hats"]),
                              promo_code=rng.choice(CODES))
                deals.append((who, f"p{step}"))
            elif roll < 0.45:
                source = f"deal:{step}" if not deals or rng.random() < 0.6 \
                    else rng.choice(deals)[1]
                rows = _rows(rng) if rng.random() < 0.4 else None
                total = sum((r.amount for r in rows), D(0)) if rows else amount
                ledger.settle_purchase(who if rng.random() < 0.9 else rng.choice(people),
                                       source, total if rng.random() < 0.9 else None,
                                       category=rng.choice([None, "shoes"]), rows=rows)
                deals.append((who, source))
            elif roll < 0.55 and deals:
                owner, source = rng.choice(deals)
                ledger.return_purchase(owner, source, D(rng.randint(1, 500000)) / 100,
                                       key=f"ret{step}")
            elif roll < 0.62 and deals:
                owner, source = rng.choice(deals)
                ledger.reverse(owner, source, key=f"rev{step}")
            elif roll < 0.75:
                source = rng.choice(deals)[1] if deals and rng.random() < 0.5 else None
                ledger.redeem(who, D(rng.randint(1, 3000)), key=f"red{step}", source=source,
                              partial=True)
            elif roll < 0.78:
                ledger.grant_bonus(who, "gift", key=f"bon{step}", points=D(rng.randint(1, 99)))
            elif roll < 0.8:
                if rng.random() < 0.5:
                    ledger.adjust(who, D(rng.randint(-500, 500) or 1), key=f"adj{step}",
                                  reason="correction")
                else:
                    newcomer = AccountRef("amocrm", "shop", f"new{step}")
                    ledger.link_referral(newcomer, who)
                    people.append(newcomer)
            elif roll < 0.85 and recalculate:
                ledger.recalculate_tiers()
            elif roll < 0.9:
                ledger.expire_due()
            else:
                clock.advance(days=rng.randint(1, 20), hours=rng.randint(0, 23))
        except LedgerError:
            pass  # refused: nothing written, as a real caller would see


def _codes_rewards_openings(services: Services, rng: random.Random, step: int,
                            who: AccountRef, people: list[AccountRef],
                            claims: list[tuple[AccountRef, str, str]]) -> None:
    roll = rng.random()
    if roll < 0.45:
        key = f"claim{step}"
        claimed = services.claims.claim(who, rng.choice(["mug", "sticker"]), key=key,
                                        via="cli")
        claims.append((who, key, claimed.claim.code))
    elif roll < 0.65 and claims:
        services.claims.cancel(rng.choice(claims)[2])
    elif roll < 0.72 and claims:
        owner, key, _ = rng.choice(claims)
        services.ledger.reverse(owner, key, key=f"unclaim{step}")
    else:
        contact = f"imp{step}" if rng.random() < 0.7 else who.contact_id
        import_opening(services, contact, str(D(rng.randint(1, 90000)) / 100), step + 2,
                       crm="amocrm")
        if contact.startswith("imp"):
            people.append(AccountRef("amocrm", "shop", contact))


@pytest.mark.parametrize("seed", range(1, 9))
def test_random_books_replay_to_the_ledger(seed: int, tmp_path: Path, database_url: str,
                                           clock: Clock) -> None:
    """Seeds 7 and 8 never run the tier recalculation: every tier then comes from the
    replay's own upgrades, none taken from the ledger."""
    settings = make_settings(tmp_path, database_url, program=RANDOM_PROGRAM)
    db = Database(settings.database)
    db.upgrade()
    if db.is_postgres:
        _reset_postgres(db)
    try:
        services = Services.build(settings, clock=clock)
        build_random_book(services, clock, random.Random(seed), steps=220,
                          recalculate=seed < 7)
        services.close()
        with db.transaction(write=False) as session:
            kinds = set(session.scalars(select(Entry.kind)))
            details = [d for d in session.scalars(select(Entry.details).where(
                Entry.kind.in_(("accrual", "reversal")))) if d]
        # The book holds each of them: both kinds of code, a claim paid and cancelled, an
        # opening balance.
        assert {"reward", "opening"} <= kinds
        granted = {d["promo"]["campaign"] for d in details
                   if "promo" in d and "promo_points" in d}
        assert granted >= {"hello", "double"}
        assert any("reward_cancelled" in d for d in details)
        sim = simulate(db, settings.program, settings.program, now=clock())
        assert_replays_the_ledger(sim, db)
        assert sim.tier_syncs > 0 if seed < 7 else sim.tier_syncs == 0
        assert sim.proposed == sim.current and (sim.moved_up, sim.moved_down) == (0, 0)
        with db.transaction(write=False) as session:
            balance = int(session.scalar(select(func.coalesce(func.sum(Entry.amount), 0))))
            assert session.scalar(select(func.count()).select_from(Lot)) > 0
        assert sim.current.outstanding_points == D(balance) / 100
    finally:
        db.dispose()


# -- the proposed program's file and the command -----------------------------------------------
def test_a_bad_proposed_program_names_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "proposed.toml"
    path.write_text('[program]\nrounding = "up"\ntiers = [{ name = "A", rate = "2" }]\n'
                    'point_valu = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_program(path)
    problems = caught.value.problems
    assert len(problems) == 3 and all(p.startswith(f"{path}: program.") for p in problems)
    assert any("program.point_valu: unknown setting" in p for p in problems)
    path.write_text("[server]\nport = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no \\[program\\] table"):
        load_program(path)


def _config(tmp_path: Path, database_url: str) -> Path:
    config = tmp_path / "config.toml"
    lines = [f'[database]\nurl = "{database_url}"\n', "[program]"]
    for tier in CURRENT["tiers"]:
        lines.append("[[program.tiers]]\n" + "".join(f'{k} = "{v}"\n' for k, v in tier.items()))
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


def test_cli_simulate_side_by_side_and_json(ledger: Ledger, clock: Clock, db: Database,
                                            tmp_path: Path, database_url: str) -> None:
    # Proposed points are worth 0.5, so they come twice as many: 8000 * 0.05 / 0.5 = 800,
    # then (Plus from 5000) 4000 * 0.08 / 0.5 = 640.
    ledger.accrue(ANNA, D("8000"), key="a1")   # 240 now
    ledger.accrue(ANNA, D("4000"), key="a2")   # 120 now (then Silver)
    config = _config(tmp_path, database_url)
    proposed = tmp_path / "proposed.toml"
    proposed.write_text('[program]\npoint_value = "0.5"\n'
                        '[[program.tiers]]\nname = "Base"\nrate = "0.05"\n'
                        '[[program.tiers]]\nname = "Plus"\nmin_spend = "5000"\nrate = "0.08"\n',
                        encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config), "simulate", "--program",
                                 str(proposed), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["current"]["points_issued"], data["proposed"]["points_issued"]) == \
        ("360.00", "1440.00")
    assert data["proposed"]["liability"] == "720.00" and data["check"]["differing_entries"] == 0
    assert data["current"]["tiers"] == {"Bronze": 0, "Silver": 1, "Gold": 0}
    text = runner.invoke(cli, ["--config", str(config), "simulate", "--program", str(proposed)])
    assert text.exit_code == 0, text.output
    assert "points issued" in text.stdout and "1 440.00" in text.stdout
    assert "customers moving tier: 0 up, 0 down" in text.stdout
    period = runner.invoke(cli, ["--config", str(config), "simulate", "--program",
                                 str(proposed), "--since", "2026-03-10", "--until", "2026-03-10"])
    assert period.exit_code == 2 and "--since must be before --until" in period.stderr
    march = runner.invoke(cli, ["--config", str(config), "simulate", "--program",
                                str(proposed), "--json", "--since", "2026-03-11"])
    assert json.loads(march.stdout)["proposed"]["points_issued"] == "0.00"  # none after
    proposed.write_text('[program]\nrounding = "up"\n', encoding="utf-8")
    bad = runner.invoke(cli, ["--config", str(config), "simulate", "--program", str(proposed)])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == \
        [f"config: {proposed}: program.rounding: Input should be 'floor' or 'half_up' "
         "(got 'up')"]


def test_the_replay_connection_cannot_write(db: Database) -> None:
    with pytest.raises(DBAPIError, match=r"(?i)read-only|readonly"), read_only(db) as connection:
        connection.execute(Account.__table__.insert().values(
            crm="amocrm", portal="shop", contact_id="9", balance=0, overdraft=0,
            tier="Bronze", purchase_count=0, purchase_total=0, version=1,
            created_at=datetime.now(UTC), updated_at=datetime.now(UTC)))
    with db.transaction() as session:  # the pooled connection writes again afterwards
        session.execute(Account.__table__.insert().values(
            crm="amocrm", portal="shop", contact_id="9", balance=0, overdraft=0,
            tier="Bronze", purchase_count=0, purchase_total=0, version=1,
            created_at=datetime.now(UTC), updated_at=datetime.now(UTC)))
    assert ledger_tiers(db) == {1: "Bronze"}


# -- the dashboard's what-if form ---------------------------------------------------------------
BEARER = {"Authorization": "Bearer test-admin-token"}


def test_dashboard_what_if_form(services: Services, client: FlaskClient, clock: Clock) -> None:
    ledger = services.ledger
    ledger.accrue(ANNA, D("8000"), key="a1")                    # Bronze: 240
    ledger.accrue(ANNA, D("4000"), key="a2")                    # Bronze: 120; then Silver
    assert client.get("/dashboard/simulate").status_code == 401
    first = client.get("/dashboard/simulate", headers=BEARER)
    html = first.get_data(as_text=True)
    assert first.status_code == 200 and 'id="result"' not in html
    assert 'name="rate_1" value="0.05"' in html  # the current program fills the form
    assert "form-action 'self'" in first.headers["Content-Security-Policy"]
    # Silver from 5,000 at 8%, and everything doubled over the period: 8000 * 0.03 * 2 = 480
    # (Silver follows that purchase), then 4000 * 0.08 * 2 = 640.
    query = ("days=30&run=1&min_spend_0=0&rate_0=0.03&min_spend_1=5000&rate_1=0.08"
             "&min_spend_2=50000&rate_2=0.07&multiplier=2")
    shown = client.get(f"/dashboard/simulate?{query}", headers=BEARER)
    html = shown.get_data(as_text=True)
    assert shown.status_code == 200, html
    # The page speaks program.language (Russian by default), as the dashboard does.
    assert "<td>начислено баллов</td><td class=\"num\">360.00</td>" \
        "<td class=\"num\">1 120.00</td>" in html.replace("\n", "").replace("    ", "")
    assert 'id="moves">0 вверх, 0 вниз' in html
    bad = client.get("/dashboard/simulate?run=1&rate_0=lots&min_spend_1=-1", headers=BEARER)
    assert bad.status_code == 400
    text = bad.get_data(as_text=True)
    assert "program.tiers.0.rate: Input should be a valid decimal" in text
    assert "program.tiers.1.min_spend: Input should be greater than or equal to 0" in text
    assert client.post("/dashboard/simulate", headers=BEARER).status_code == 405


def test_a_deal_paid_with_points_given_back_then_won(ledger: Ledger, clock: Clock,
                                                      db: Database, settings: Settings) -> None:
    ledger.accrue(ANNA, D("10000"), key="a1")                       # 300
    ledger.redeem(ANNA, D("200"), key="r1", source="deal:9")          # paid with points
    ledger.settle_purchase(ANNA, "deal:9", None)                      # lost: 200 given back
    ledger.settle_purchase(ANNA, "deal:9", D("4000"))                 # won after all: 200
    part = ledger.return_purchase(ANNA, "deal:9", D("1000"), key="ret")
    assert part.points == D("-50")  # no redeemed points left to give back
    ledger.return_purchase(ANNA, "deal:9", D("3000"), key="ret2")     # the rest
    sim = simulate(db, settings.program, ProgramSettings(**PROPOSED), now=clock())
    assert_replays_the_ledger(sim, db)
    # Proposed: 10000 * 0.05 / 0.5 = 1000 (then Plus), 4000 * 0.08 / 0.5 = 640, the return of
    # a quarter 160, the rest 480; the 200 given back when the deal was lost as it was.
    assert sim.accounts[1][1] == 164000
    assert (sim.current.points_taken_back, sim.proposed.points_taken_back) == \
        (D("200") - D("50") - D("150"), D("200") - D("160") - D("480"))
