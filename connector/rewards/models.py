"""The rewards catalogue and its claims. The database keeps the stock exact: a claim takes one
with a guarded UPDATE and the CHECK forbids going below zero, whoever claims at once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, BigId, UTCDateTime

# issued: the points are paid and staff owe the reward; handed: given over; cancelled: the
# points went back (and the stock).
CLAIM_STATUSES = ("issued", "handed", "cancelled")
# config: defined in [[program.rewards]] and kept in step with it; api: made through the API.
ORIGINS = ("config", "api")


class Reward(Base):
    __tablename__ = "rewards"
    __table_args__ = (
        CheckConstraint("cost > 0", name="cost_positive"),
        CheckConstraint("stock_left >= 0", name="stock_left_non_negative"),
        CheckConstraint(f"origin IN {ORIGINS!r}", name="origin_known"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(48), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    cost: Mapped[int] = mapped_column(BigInteger)  # points, hundredths
    # The stock as defined, and what is left of it (NULL both: no limit).
    stock: Mapped[int | None] = mapped_column(Integer)
    stock_left: Mapped[int | None] = mapped_column(Integer)
    per_customer: Mapped[int | None] = mapped_column(Integer)
    min_tier: Mapped[str | None] = mapped_column(String(64))
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    origin: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RewardClaim(Base):
    __tablename__ = "reward_claims"
    __table_args__ = (
        CheckConstraint(f"status IN {CLAIM_STATUSES!r}", name="status_known"),
        Index("ix_reward_claims_account_reward", "account_id", "reward_id"),
        Index("ix_reward_claims_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    # What the customer shows staff to be handed the reward (connector.rewards.claims).
    code: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    cost: Mapped[int] = mapped_column(BigInteger)
    # The 'reward' entry that paid for it; the claim is found from a replayed key by it.
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id"), unique=True)
    cancel_entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id"))
    # Where the claim came from: card, api, cli, bitrix24:robot, bitrix24:action, amocrm:action.
    via: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    handed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
