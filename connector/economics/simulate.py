"""What-if: the purchases the ledger knows, replayed under a proposed `[program]` beside the
current one.

The replay walks every entry in id order (the order the engine wrote them) and applies the
engine's rules (connector.ledger.postings and .returns) through the pure functions of
connector.program, keeping per-account and per-purchase state in memory:
- a purchase (an accrual counting one purchase) earns at the account's tier before it, with
  the campaigns of its date and category and its stored product rows; then the account moves
  up to the tier its rolling spend earns (the spend as of the moment the entry was written);
- a re-pricing earns or gives back the difference at the purchase's own terms, a partial
  return takes back what the returned part earned and gives back its share of the points that
  paid for it, a full reversal undoes what the purchase stands at;
- a promo code's points are part of its purchase's accrual (details.promo_points): fixed
  points (and named bonuses) are kept as granted under both programs; a multiplier code's
  points are the purchase's cashback once more per step above 1, so the proposed program
  earns them at its own rate and campaign multiplier (the code's campaign as the proposed
  program defines it, else as granted). A re-pricing keeps them as granted, a return takes
  them back with the return that ends the purchase, as the engine does;
- everything else (redemptions, catalogue rewards and their cancellations, opening balances,
  bonuses, expiries, adjustments) is kept as it happened.
Downgrades write no entry: where the ledger shows one (a purchase recorded at another tier
than the replay holds, or, for the book up to now, an account's tier today) the current
program takes the ledger's tier and the proposed one recalculates the account there.

Under the current program the replay gives the ledger's own accruals; `check` counts where it
does not (a book written under other rules than today's).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, String, case, select, type_coerce

from connector.config import ProgramSettings, describe_errors
from connector.db import Database
from connector.errors import ConfigError
from connector.ledger.models import Account, Entry
from connector.money import from_minor, to_minor
from connector.program import Program

BATCH = 5000
NO_CODE = (0, 0)
TICK = timedelta(microseconds=1)
# rate, multiplier and extra points of a purchase's accrual, under each program
Terms = tuple[tuple[Decimal, Decimal, Decimal], ...]
CURRENT, PROPOSED = 0, 1
CENT = Decimal("0.01")
# Redemptions and catalogue rewards pay with points; expiries are breakage.
SPENDING = ("redemption", "reward")
# The kinds the program's rules decide; the others are kept as they happened.
REPLAYED = ("accrual", "reversal")
# Read without SQLAlchemy's result processing (see _stream).
RAW = ("purchase_at", "details", "occurred_at", "created_at")


def load_program(path: Path) -> ProgramSettings:
    """The `[program]` table of a TOML file, checked as config.toml's is: ConfigError with
    one line per problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    table = data.get("program")
    if not isinstance(table, dict):
        raise ConfigError([f"{path}: no [program] table (write the proposed program as "
                           "config.toml's [program] section)"])
    try:
        return ProgramSettings(**table)
    except ValidationError as exc:
        raise ConfigError([f"{path}: program.{line}" for line in describe_errors(exc)]) \
            from None


@dataclass(frozen=True)
class Figures:
    """One program's outcome over the period (points as Decimal, money in currency)."""

    points_issued: Decimal
    points_taken_back: Decimal
    bonuses: Decimal
    expected_redemptions: Decimal
    expected_breakage: Decimal
    outstanding_points: Decimal
    point_value: Decimal
    currency: str
    liability: Decimal
    cost_share: Decimal | None
    tiers: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "points_issued": str(self.points_issued),
            "points_taken_back": str(self.points_taken_back),
            "bonuses": str(self.bonuses),
            "expected_redemptions": str(self.expected_redemptions),
            "expected_breakage": str(self.expected_breakage),
            "outstanding_points": str(self.outstanding_points),
            "point_value": str(self.point_value),
            "currency": self.currency,
            "liability": str(self.liability),
            "cost_share": None if self.cost_share is None else str(self.cost_share),
            "tiers": self.tiers,
        }


@dataclass(frozen=True)
class Simulation:
    since: datetime | None
    until: datetime | None
    entries: int
    purchases: int
    revenue: Decimal
    redemption_rate: Decimal
    expiry_share: Decimal
    current: Figures
    proposed: Figures
    moved_up: int
    moved_down: int
    # Entries the current program's replay gives another amount than the ledger holds, and
    # tier changes taken from the ledger (downgrades by the scheduled recalculation).
    differing_entries: int
    tier_syncs: int
    # Per account: points earned by accrual entries (hundredths) and tier name at the end,
    # under each program: (current accrued, proposed accrued, current tier, proposed tier).
    accounts: dict[int, tuple[int, int, str, str]] = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "entries": self.entries,
            "purchases": self.purchases,
            "revenue": str(self.revenue),
            "redemption_rate": str(self.redemption_rate),
            "expiry_share": str(self.expiry_share),
            "current": self.current.as_json(),
            "proposed": self.proposed.as_json(),
            "moved_up": self.moved_up,
            "moved_down": self.moved_down,
            "check": {"differing_entries": self.differing_entries,
                      "tier_syncs": self.tier_syncs},
        }


class _Account:
    __slots__ = ("accrued", "changed", "last", "spend", "tiers")

    def __init__(self) -> None:
        # When its latest accrual was written: the last time its tier is known to agree
        # with the ledger's (a tier changes without an entry only by recalculation).
        self.last: datetime | None = None
        # (purchase_at, purchase_amount, when the entry was written)
        self.spend: list[tuple[datetime, int, datetime]] = []
        self.tiers = [0, 0]  # rank in each program's tier list
        self.changed: list[datetime | None] = [None, None]
        self.accrued = [0, 0]


class _Purchase:
    """A source that earned: its terms under each program, what its entries net to."""

    __slots__ = ("code", "net", "redeemed", "rows", "spend", "taken", "terms")

    def __init__(self, before: tuple[int, int]) -> None:
        net, redeemed = before
        # a promo code's points under each program (hundredths), kept through re-pricings
        self.code: tuple[int, int] = NO_CODE
        # rate, multiplier, extra points of the accrual that recorded the purchase, under
        # each program (interned: a few combinations serve a million purchases)
        self.terms: Terms = ()
        self.net = [net, net]  # intended hundredths, as Postings sums them
        self.redeemed = redeemed  # its redemptions' amounts (negative hundredths)
        self.spend = 0
        self.rows: list[dict[str, Any]] | None = None  # as last rated (accrual, re-pricing)
        self.taken = [0, 0]  # what returns took of the rows' points, under each program


@dataclass
class _Tally:
    accrued: list[int] = field(default_factory=lambda: [0, 0])
    reversed: list[int] = field(default_factory=lambda: [0, 0])
    accrued_all: list[int] = field(default_factory=lambda: [0, 0])
    reversed_all: list[int] = field(default_factory=lambda: [0, 0])
    observed_replayed_all: int = 0  # what the ledger's accrual/reversal entries intended
    observed_all: int = 0  # the sum of every entry
    bonuses: int = 0
    redeemed: int = 0
    expired: int = 0
    revenue: int = 0
    purchases: int = 0
    entries: int = 0
    differing: int = 0
    syncs: int = 0


class Replay:
    def __init__(self, current: ProgramSettings, proposed: ProgramSettings) -> None:
        self.programs = (Program(current), Program(proposed))
        self.accounts: dict[int, _Account] = {}
        self.purchases: dict[tuple[int, str], _Purchase] = {}
        # What the source's entries net to and its redemptions, before it first earned
        # (a deal paid with points, perhaps given back, then won), kept from its first
        # redemption on: other sources never earn.
        self.unearned: dict[tuple[int, str], tuple[int, int]] = {}
        self.terms: dict[Terms, Terms] = {}
        # Sources of catalogue rewards: a reversal of one (a cancelled claim) gives back
        # what was spent, kept as it happened.
        self.rewards: set[tuple[int, str]] = set()
        self.tally = _Tally()

    # -- tiers -----------------------------------------------------------------------------
    def _rank(self, p: int, spend: Decimal) -> int:
        return self.programs[p].tier_index(spend)

    def _spend(self, p: int, account: _Account, now: datetime) -> Decimal:
        """The rolling spend as the ledger had it at `now` (entries written by then)."""
        start = self.programs[p].tier_window_start(now)
        return from_minor(sum(amount for at, amount, written in account.spend
                              if at >= start and written <= now))

    def _upgrade(self, account: _Account, now: datetime, programs: tuple[int, ...] = (0, 1)
                 ) -> None:
        """Postings._upgrade_tier: the spend of every entry so far (all written by `now`,
        the replay being in id order) whose purchase is in the window."""
        totals: dict[datetime, Decimal] = {}
        for p in programs:
            start = self.programs[p].tier_window_start(now)
            if start not in totals:
                totals[start] = from_minor(sum(amount for at, amount, _ in account.spend
                                               if at >= start))
            best = self._rank(p, totals[start])
            if best > account.tiers[p]:
                account.tiers[p] = best
                account.changed[p] = now

    def _recalculate(self, p: int, account: _Account, now: datetime) -> None:
        """Ledger.recalculate_tiers for one account at `now`."""
        best = self._rank(p, self._spend(p, account, now))
        if best == account.tiers[p]:
            return
        grace_end = now - timedelta(days=self.programs[p].settings.tier_grace_days)
        changed = account.changed[p]
        if best < account.tiers[p] and changed is not None and changed > grace_end:
            return
        account.tiers[p] = best
        account.changed[p] = now

    def _sync(self, account: _Account, recorded: str | None, now: datetime) -> None:
        """The ledger's tier moved without a purchase: the scheduled recalculation ran
        since the account's latest entry. The current program takes the ledger's tier; the
        proposed one recalculates at the first moment the current rules give that tier."""
        names = [tier.name for tier in self.programs[CURRENT].settings.tiers]
        if recorded not in names or names.index(recorded) == account.tiers[CURRENT]:
            return
        target = names.index(recorded)
        when = self._recalculated_at(account, target, now)
        self.tally.syncs += 1
        account.tiers[CURRENT] = target
        account.changed[CURRENT] = when
        self._recalculate(PROPOSED, account, when)

    def _recalculated_at(self, account: _Account, target: int, now: datetime) -> datetime:
        """The earliest moment after the account's latest entry when Ledger.recalculate_tiers
        under the current program moves it to `target`: the rolling spend only changes when
        a purchase leaves the window, the grace only when it ends. `now` if none does (the
        book was written under other rules)."""
        program = self.programs[CURRENT]
        period = timedelta(days=program.settings.tier_period_days)
        grace = timedelta(days=program.settings.tier_grace_days)
        changed = account.changed[CURRENT]
        last = account.last or now
        # A purchase is out of the window just after `at + period` (the window includes its
        # start).
        moments = {last, now, *(at + period + TICK for at, _, _ in account.spend),
                   *(written for _, _, written in account.spend)}
        if changed is not None:
            moments.add(changed + grace)
        for moment in sorted(m for m in moments if last <= m <= now):
            best = self._rank(CURRENT, self._spend(CURRENT, account, moment))
            held = best < account.tiers[CURRENT] and changed is not None \
                and changed > moment - grace
            if best == target and not held:
                return moment
        return now

    # -- entries ---------------------------------------------------------------------------
    def feed(self, row: Any, in_period: bool) -> None:
        account_id, kind, amount, source, purchase_amount = row[:5]
        created_at = row[10]
        tally = self.tally
        tally.entries += 1
        tally.observed_all += amount
        account = self.accounts.get(account_id)
        if account is None:
            account = self.accounts[account_id] = _Account()
        if in_period:
            tally.revenue += purchase_amount or 0
        if kind not in REPLAYED or (account_id, source) in self.rewards:
            self._observed(account_id, kind, amount, source, in_period)
            return
        self._replayed(account, row, in_period)
        if kind == "accrual":
            account.last = created_at

    def _replayed(self, account: _Account, row: Any, in_period: bool) -> None:
        (account_id, kind, amount, source, purchase_amount, purchase_count, purchase_at,
         shortfall, details, occurred_at, created_at) = row
        tally = self.tally
        details = details or {}
        tally.observed_replayed_all += amount - shortfall
        key = (account_id, source)
        purchase = self.purchases.get(key)
        if kind == "accrual" and purchase_count > 0:
            deltas = self._purchase(account, key, purchase, amount=purchase_amount,
                                    at=occurred_at, now=created_at, details=details)
            if in_period:
                tally.purchases += 1
        elif purchase is None:
            deltas = [amount - shortfall] * 2  # a source that never earned: as it happened
            if key in self.unearned:
                net, redeemed = self.unearned[key]
                self.unearned[key] = (net + amount - shortfall, redeemed)
        elif "repriced_to" in details:
            deltas = self._reprice(account, purchase, details, spend_delta=purchase_amount or 0,
                                   purchase_at=purchase_at, now=created_at)
        elif "reversed" in details:
            deltas = [-purchase.net[CURRENT], -purchase.net[PROPOSED]]
        elif "return" in details:
            deltas = self._return_part(purchase, wanted=-(purchase_amount or 0),
                                       returned_rows=details["return"].get("rows") or [])
        else:
            deltas = [amount - shortfall] * 2
        if purchase is None:
            purchase = self.purchases.get(key)
        if purchase is not None:
            for p in (0, 1):
                purchase.net[p] += deltas[p]
            purchase.spend += purchase_amount or 0
        if kind == "reversal" and purchase_amount and "repriced_to" not in details:
            account.spend.append((purchase_at, purchase_amount, created_at))
        if deltas[CURRENT] != amount - shortfall:
            tally.differing += 1
        for p in (0, 1):
            # The engine writes a negative re-pricing as a reversal; so does the replay.
            accrual = deltas[p] >= 0 if "repriced_to" in details else kind == "accrual"
            if accrual:
                account.accrued[p] += deltas[p]
                tally.accrued_all[p] += deltas[p]
                if in_period:
                    tally.accrued[p] += deltas[p]
            else:
                tally.reversed_all[p] += deltas[p]
                if in_period:
                    tally.reversed[p] += deltas[p]

    def _observed(self, account_id: int, kind: str, amount: int, source: str | None,
                  in_period: bool) -> None:
        key = (account_id, source or "")
        purchase = self.purchases.get(key)
        if kind == "reward":
            self.rewards.add(key)
        if purchase is not None:
            purchase.net[CURRENT] += amount
            purchase.net[PROPOSED] += amount
            if kind == "redemption":
                purchase.redeemed += amount
        elif kind == "redemption":
            net, redeemed = self.unearned.get(key, (0, 0))
            self.unearned[key] = (net + amount, redeemed + amount)
        if not in_period:
            return
        if kind in SPENDING or kind == "reversal":  # a reversal here: a reward given back
            self.tally.redeemed -= amount
        elif kind == "expiry":
            self.tally.expired -= amount
        elif kind == "bonus":
            self.tally.bonuses += amount

    def _purchase(self, account: _Account, key: tuple[int, str], purchase: _Purchase | None,
                  *, amount: int, at: datetime, now: datetime,
                  details: dict[str, Any]) -> list[int]:
        """Postings._accrue_in under both programs."""
        if purchase is None:
            purchase = self.purchases[key] = _Purchase(self.unearned.pop(key, (0, 0)))
        self._sync(account, details.get("tier"), now)
        rows = details.get("rows")
        spend = from_minor(amount)
        terms = []
        deltas = []
        category = details.get("category")
        for p, program in enumerate(self.programs):
            # Program.earn's terms, without building its breakdown for a million rows.
            rate, multiplier, extra = program.terms(
                at, category, program.settings.tiers[account.tiers[p]].rate, key[0])
            points = program.points_for_stored_rows(rows, rate, multiplier) if rows \
                else program.points_for(spend, rate, multiplier)
            terms.append((rate, multiplier, extra))
            deltas.append(to_minor(points + extra))
        key_terms = tuple(terms)
        purchase.terms = self.terms.setdefault(key_terms, key_terms)
        if "promo_points" in details:
            code = self._code_points(details, spend, purchase.terms)
            purchase.code = code
            deltas = [deltas[p] + code[p] for p in (0, 1)]
        else:
            purchase.code = NO_CODE
        purchase.rows = rows or None
        # Won again after partial returns: what they took stays taken (Postings._accrue_in).
        if "returns_carried" in details and rows:
            deltas = [max(d - t, 0) for d, t in zip(deltas, purchase.taken, strict=True)]
        else:
            purchase.taken = [0, 0]
        account.spend.append((at, amount, now))
        self._upgrade(account, now)
        return deltas

    def _code_points(self, details: dict[str, Any], spend: Decimal, terms: Terms
                     ) -> tuple[int, int]:
        """The promo code's points under each program: as granted under the current one; a
        multiplier code re-earned at the proposed program's terms (codes.redeem.points_of:
        the purchase amount's cashback, campaign multiplier included, extras not)."""
        granted = to_minor(Decimal(details["promo_points"]))
        name = (details.get("promo") or {}).get("campaign")
        proposed = self.programs[PROPOSED]
        promo = next((c for c in proposed.settings.promo if c.name == name), None) or \
            next((c for c in self.programs[CURRENT].settings.promo if c.name == name), None)
        if promo is None or promo.multiplier is None:
            return (granted, granted)
        rate, multiplier, _ = terms[PROPOSED]
        points = proposed.points_for(spend, rate, multiplier * (promo.multiplier - 1))
        return (granted, to_minor(points))

    def _reprice(self, account: _Account, purchase: _Purchase, details: dict[str, Any], *,
                 spend_delta: int, purchase_at: datetime | None, now: datetime) -> list[int]:
        """Postings._reprice under both programs."""
        amount = Decimal(details["repriced_to"])
        rows = details.get("rows") if details.get("rows_digest") else None
        deltas = []
        for p, program in enumerate(self.programs):
            rate, multiplier, extra = purchase.terms[p]
            points = program.points_for_stored_rows(rows, rate, multiplier) if rows \
                else program.points_for(amount, rate, multiplier)
            taken = purchase.taken[p] if rows else 0
            deltas.append(to_minor(points + extra) + purchase.code[p] - taken
                          - purchase.net[p])
        purchase.rows = rows or None
        if spend_delta:
            assert purchase_at is not None
            account.spend.append((purchase_at, spend_delta, now))
        if spend_delta > 0:
            self._upgrade(account, now, tuple(p for p in (0, 1) if deltas[p] >= 0))
        return deltas

    def _return_part(self, purchase: _Purchase, *, wanted: int,
                     returned_rows: list[dict[str, Any]]) -> list[int]:
        """Returns._return_part under both programs."""
        remaining = purchase.spend
        deltas = []
        rules = {str(r["product_id"]): r.get("rule") for r in purchase.rows or ()}
        for p, program in enumerate(self.programs):
            rate, multiplier, extra = purchase.terms[p]

            def earned(spend: int, rate: Decimal = rate, multiplier: Decimal = multiplier,
                       extra: Decimal = extra, program: Program = program) -> int:
                return to_minor(program.points_for(from_minor(spend), rate, multiplier)
                                + extra)

            if purchase.rows is None:
                earned_now = earned(remaining)
                take = max(earned_now - earned(remaining - wanted), 0)
                purchase.taken[p] += take
            else:
                base = to_minor(program.points_for_stored_rows(purchase.rows, rate, multiplier)) \
                    - purchase.taken[p]
                if returned_rows:
                    raw = sum(((Decimal(r["price"]) * Decimal(r["quantity"])).quantize(CENT)
                               * (program.stored_row_rate(str(r["product_id"]),
                                                          rules[str(r["product_id"])], rate)
                                  if str(r["product_id"]) in rules else rate)
                               for r in returned_rows), Decimal(0))
                    take = min(to_minor(program.points_for(raw, Decimal(1), multiplier)),
                               max(base, 0))
                else:
                    take = max(base, 0) * wanted // remaining
                purchase.taken[p] += take
                earned_now = base + to_minor(extra)
            redeemed = -purchase.redeemed
            unrefunded = min(max(earned_now - purchase.net[p], 0), redeemed)
            give = unrefunded * wanted // remaining
            deltas.append(give - take)
        return deltas

    def finish(self, now: datetime, ledger_tiers: dict[int, str] | None) -> None:
        """Where the ledger's tier today differs from the replay's, a recalculation ran after
        the account's last purchase (only for the book up to now)."""
        if ledger_tiers is None:
            return
        for account_id, tier in ledger_tiers.items():
            account = self.accounts.get(account_id)
            if account is not None:
                self._sync(account, tier, now)


# -- reading the book and summing up ------------------------------------------------------
ENTRY_COLUMNS = (Entry.account_id, Entry.kind, Entry.amount, Entry.source,
                 Entry.purchase_amount, Entry.purchase_count, Entry.purchase_at,
                 Entry.shortfall, Entry.details, Entry.occurred_at, Entry.created_at)


@contextmanager
def read_only(db: Database) -> Iterator[Connection]:
    """A connection in a transaction that cannot write: PostgreSQL's READ ONLY transaction,
    SQLite's query_only for this connection (reset before it goes back to the pool)."""
    with db.engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        try:
            with connection.begin():
                connection.exec_driver_sql("PRAGMA query_only = ON" if sqlite
                                           else "SET TRANSACTION READ ONLY")
                yield connection
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA query_only = OFF")


def _utc(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite keeps UTC as naive text
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    # PostgreSQL's are aware, in the session's zone: compared and converted by their offset
    # like UTC ones, so they need no conversion here.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _stream(connection: Connection, until: datetime | None) -> Iterator[tuple[Any, ...]]:
    """The entries in id order as plain tuples. Dates and details are read raw and
    converted here, only where the replay reads them: SQLAlchemy's per-row processing
    (SQLite's date parsing, JSON for every kind) would cost more than the replay itself."""
    raw = [type_coerce(column, String) if column.key in RAW else column
           for column in ENTRY_COLUMNS]
    # Only the replayed kinds' details are read: the others' are not even decoded.
    raw[8] = case((Entry.kind.in_(REPLAYED), type_coerce(Entry.details, String)))
    query = select(*raw).order_by(Entry.id)
    if until is not None:
        query = query.where(Entry.occurred_at < until)
    result = connection.execution_options(yield_per=BATCH).execute(query)
    for (account_id, kind, amount, source, purchase_amount, purchase_count, purchase_at,
         shortfall, details, occurred_at, created_at) in result:
        replayed = kind in REPLAYED
        if replayed and isinstance(details, str):
            details = json.loads(details)
        yield (account_id, kind, amount, source, purchase_amount, purchase_count,
               _utc(purchase_at) if purchase_at is not None else None, shortfall,
               details if replayed else None, _utc(occurred_at), _utc(created_at))


def simulate(db: Database, current: ProgramSettings, proposed: ProgramSettings, *,
             since: datetime | None = None, until: datetime | None = None,
             now: datetime) -> Simulation:
    """Replay the book (entries before `until`) under both programs; the figures count the
    entries that occurred in [since, until)."""
    replay = Replay(current, proposed)
    with read_only(db) as connection:
        ledger_tiers: dict[int, str] = {
            account_id: tier
            for account_id, tier in connection.execute(select(Account.id, Account.tier))}
        for row in _stream(connection, until):
            replay.feed(row, since is None or row[9] >= since)
    replay.finish(until or now, None if until is not None else ledger_tiers)
    return summarise(replay, ledger_tiers, since=since, until=until)


def _ratio(part: int, whole: int) -> Decimal:
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), ROUND_HALF_UP) \
        if whole > 0 else Decimal(0)


def summarise(replay: Replay, ledger_tiers: dict[int, str], *, since: datetime | None,
              until: datetime | None) -> Simulation:
    tally = replay.tally
    # Points given in the period under each program: purchases net of what returns and
    # reversals took back, and bonuses (the same under both).
    given = [tally.accrued[p] + tally.reversed[p] + tally.bonuses for p in (0, 1)]
    redemption_rate = _ratio(tally.redeemed, given[CURRENT])
    expiry_share = _ratio(tally.expired, given[CURRENT])
    names = [[t.name for t in program.settings.tiers] for program in replay.programs]
    distribution: list[dict[str, int]] = [dict.fromkeys(n, 0) for n in names]
    accounts: dict[int, tuple[int, int, str, str]] = {}
    up = down = 0
    for account_id in ledger_tiers:
        state = replay.accounts.get(account_id) or _Account()
        ranks = state.tiers
        for p in (0, 1):
            distribution[p][names[p][ranks[p]]] += 1
        up += ranks[PROPOSED] > ranks[CURRENT]
        down += ranks[PROPOSED] < ranks[CURRENT]
        accounts[account_id] = (state.accrued[CURRENT], state.accrued[PROPOSED],
                                names[CURRENT][ranks[CURRENT]], names[PROPOSED][ranks[PROPOSED]])
    figures = []
    for p, program in enumerate(replay.programs):
        if p == CURRENT:  # what happened, exactly
            redemptions, breakage = tally.redeemed, tally.expired
        else:  # the observed behaviour applied to what the proposed program gives
            redemptions = _scale(given[p], tally.redeemed, given[CURRENT])
            breakage = _scale(given[p], tally.expired, given[CURRENT])
        replayed = tally.accrued_all[p] + tally.reversed_all[p]
        outstanding = (tally.observed_all - tally.observed_replayed_all + replayed
                       - (redemptions - tally.redeemed) - (breakage - tally.expired))
        value = program.settings.point_value
        revenue = from_minor(tally.revenue)
        cost = from_minor(given[p] - breakage) * value
        figures.append(Figures(
            points_issued=from_minor(tally.accrued[p]),
            points_taken_back=from_minor(tally.reversed[p]),
            bonuses=from_minor(tally.bonuses),
            expected_redemptions=from_minor(redemptions),
            expected_breakage=from_minor(breakage),
            outstanding_points=from_minor(outstanding),
            point_value=value,
            currency=program.settings.currency,
            liability=(from_minor(outstanding) * value).quantize(CENT, ROUND_HALF_UP),
            cost_share=(cost / revenue).quantize(Decimal("0.0001"), ROUND_HALF_UP)
            if revenue > 0 else None,
            tiers=distribution[p]))
    return Simulation(since=since, until=until, entries=tally.entries,
                      purchases=tally.purchases, revenue=from_minor(tally.revenue),
                      redemption_rate=redemption_rate, expiry_share=expiry_share,
                      current=figures[CURRENT], proposed=figures[PROPOSED],
                      moved_up=up, moved_down=down, differing_entries=tally.differing,
                      tier_syncs=tally.syncs, accounts=accounts)


def _scale(amount: int, part: int, whole: int) -> int:
    """amount × part / whole in hundredths, half up: the observed share applied."""
    if whole <= 0:
        return 0
    return int((Decimal(amount) * part / whole).quantize(Decimal(1), ROUND_HALF_UP))
