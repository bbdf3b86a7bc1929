"""The rewards catalogue: [[program.rewards]] kept in step in the database, and rewards made,
changed and disabled through the admin API.

A reward from the configuration belongs to it: its row follows config.toml (a reward taken out
of the file is disabled), and the API refuses to change it. Rewards made through the API are
the API's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.config import ProgramSettings, Reward, describe_errors
from connector.db import Database, utcnow
from connector.errors import InvalidAmountError, RewardNotFoundError, RewardRefusedError
from connector.money import from_minor, to_minor
from connector.rewards import models

OPEN = ("issued", "handed")  # claims that hold a unit of stock and count against the limit


@dataclass(frozen=True)
class RewardView:
    id: str
    name: str
    cost: Decimal
    stock: int | None
    stock_left: int | None
    per_customer: int | None
    tier: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    active: bool
    origin: str

    @classmethod
    def of(cls, row: models.Reward) -> RewardView:
        return cls(row.slug, row.name, from_minor(row.cost), row.stock, row.stock_left,
                   row.per_customer, row.min_tier, row.starts_at, row.ends_at, row.active,
                   row.origin)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "cost": str(self.cost), "stock": self.stock,
                "stock_left": self.stock_left, "per_customer": self.per_customer,
                "tier": self.tier,
                "starts_at": self.starts_at.isoformat() if self.starts_at else None,
                "ends_at": self.ends_at.isoformat() if self.ends_at else None,
                "active": self.active, "origin": self.origin}

    def open_at(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and \
            (self.ends_at is None or now < self.ends_at)


def _utc(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    """A local time of the program's zone (or one with its own offset) in UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC)


def open_claims(session: Session, reward_id: int, account_id: int | None = None) -> int:
    query = select(func.count()).select_from(models.RewardClaim).where(
        models.RewardClaim.reward_id == reward_id, models.RewardClaim.status.in_(OPEN))
    if account_id is not None:
        query = query.where(models.RewardClaim.account_id == account_id)
    return int(session.scalar(query) or 0)


class Catalogue:
    def __init__(self, db: Database, program: ProgramSettings,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.program = program
        self.clock = clock
        self._synced = False

    # -- the configuration -----------------------------------------------------------------
    def ensure_synced(self) -> None:
        """Bring the configured rewards into the database, once per process."""
        if not self._synced:
            self.sync()
            self._synced = True

    def sync(self) -> None:
        configured = {reward.id: reward for reward in self.program.rewards}
        for reward in configured.values():
            try:
                with self.db.transaction() as session:
                    row = session.scalar(select(models.Reward).where(
                        models.Reward.slug == reward.id).with_for_update())
                    if row is None:
                        self._insert(session, reward, origin="config")
                    elif row.origin == "config":
                        self._apply(session, row, reward, active=True)
            except IntegrityError:
                continue  # another process inserted it meanwhile, from the same file
        with self.db.transaction() as session:
            for row in session.scalars(select(models.Reward).where(
                    models.Reward.origin == "config", models.Reward.active.is_(True))):
                if row.slug not in configured:
                    row.active = False
                    row.updated_at = self.clock()

    def _insert(self, session: Session, reward: Reward, *, origin: str) -> models.Reward:
        now = self.clock()
        row = models.Reward(slug=reward.id, origin=origin, active=True, created_at=now,
                            updated_at=now, name="", cost=0)
        self._apply(session, row, reward, active=True, new=True)
        session.add(row)
        session.flush()
        return row

    def _apply(self, session: Session, row: models.Reward, reward: Reward, *, active: bool,
               new: bool = False) -> None:
        """Set the definition; the stock left is the stock less the claims still holding one
        (the caller holds the row's lock)."""
        zone = self.program.zone
        values = {"name": reward.name, "cost": to_minor(reward.cost), "stock": reward.stock,
                  "per_customer": reward.per_customer, "min_tier": reward.tier,
                  "starts_at": _utc(reward.starts, zone), "ends_at": _utc(reward.ends, zone),
                  "active": active}
        if not new and all(getattr(row, k) == v for k, v in values.items()):
            return
        for name, value in values.items():
            setattr(row, name, value)
        held = 0 if new else open_claims(session, row.id)
        row.stock_left = None if reward.stock is None else max(0, reward.stock - held)
        row.updated_at = self.clock()

    # -- reading ---------------------------------------------------------------------------
    def list(self, *, include_inactive: bool = False) -> list[RewardView]:
        self.ensure_synced()
        with self.db.transaction(write=False) as session:
            query = select(models.Reward).order_by(models.Reward.cost, models.Reward.slug)
            if not include_inactive:
                query = query.where(models.Reward.active.is_(True))
            return [RewardView.of(row) for row in session.scalars(query)]

    def get(self, slug: str) -> RewardView:
        self.ensure_synced()
        with self.db.transaction(write=False) as session:
            return RewardView.of(find(session, slug))

    # -- the API's rewards -----------------------------------------------------------------
    def create(self, data: dict[str, Any]) -> RewardView:
        reward = self._valid(data)
        self.ensure_synced()
        try:
            with self.db.transaction() as session:
                if session.scalar(select(models.Reward.id).where(
                        models.Reward.slug == reward.id)) is not None:
                    raise RewardRefusedError(f"a reward with id {reward.id!r} exists already",
                                             reason="exists")
                return RewardView.of(self._insert(session, reward, origin="api"))
        except IntegrityError:
            raise RewardRefusedError(f"a reward with id {reward.id!r} exists already",
                                     reason="exists") from None

    def update(self, slug: str, changes: dict[str, Any]) -> RewardView:
        self.ensure_synced()
        with self.db.transaction() as session:
            row = self._own(session, slug)
            current = {"id": row.slug, "name": row.name, "cost": from_minor(row.cost),
                       "stock": row.stock, "per_customer": row.per_customer,
                       "tier": row.min_tier, "starts": row.starts_at, "ends": row.ends_at}
            if "id" in changes and changes["id"] != slug:
                raise InvalidAmountError("a reward's id cannot change", field="id")
            reward = self._valid({**current, **changes})
            self._apply(session, row, reward, active=bool(changes.get("active", row.active)))
            return RewardView.of(row)

    def disable(self, slug: str) -> RewardView:
        self.ensure_synced()
        with self.db.transaction() as session:
            row = self._own(session, slug)
            row.active = False
            row.updated_at = self.clock()
            return RewardView.of(row)

    def _own(self, session: Session, slug: str) -> models.Reward:
        row = find(session, slug, lock=True)
        if row.origin == "config":
            raise RewardRefusedError(f"reward {slug!r} is defined in [[program.rewards]] of the "
                                     "configuration: change it there", reason="configured")
        return row

    def _valid(self, data: dict[str, Any]) -> Reward:
        fields = {k: v for k, v in data.items() if k != "active"}
        for name in ("starts", "ends"):
            # The API may give an offset; the model wants the program's local time.
            value = fields.get(name)
            if isinstance(value, str):
                try:
                    value = datetime.fromisoformat(value)
                except ValueError:
                    raise InvalidAmountError(f"{name}: an ISO 8601 date and time, e.g. "
                                             "2026-12-01T00:00:00", field=name) from None
            if isinstance(value, datetime) and value.tzinfo is not None:
                value = value.astimezone(self.program.zone).replace(tzinfo=None)
            if name in fields:
                fields[name] = value
        try:
            reward = Reward.model_validate(fields)
        except ValidationError as exc:
            raise InvalidAmountError("; ".join(describe_errors(exc))) from None
        if reward.tier is not None and reward.tier not in [t.name for t in self.program.tiers]:
            raise InvalidAmountError(f"tier: unknown tier {reward.tier!r}", field="tier")
        return reward


def find(session: Session, slug: str, *, lock: bool = False) -> models.Reward:
    query = select(models.Reward).where(models.Reward.slug == slug)
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise RewardNotFoundError(f"no reward with id {slug!r} (loyalty-connector rewards list)",
                                  reward=slug)
    return row
