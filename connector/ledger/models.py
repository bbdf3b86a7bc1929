"""Ledger tables. The database itself enforces the invariants it can: one entry per
idempotency key, signs per entry kind, lot bounds, non-negative overdraft."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, BigId, UTCDateTime

# reward: points paid for a catalogue reward; opening: a balance brought in by an import.
ENTRY_KINDS = ("accrual", "redemption", "reversal", "expiry", "adjustment", "bonus", "reward",
               "opening")


class Account(Base):
    """One loyalty account per CRM contact. `balance` is the sum of the account's entries,
    kept here in the same transaction; `verify` recomputes it."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("crm", "portal", "contact_id", name="uq_accounts_contact"),
        CheckConstraint("overdraft >= 0", name="overdraft_non_negative"),
        CheckConstraint("purchase_count >= 0", name="purchase_count_non_negative"),
        Index("ix_accounts_referral_code", "referral_code", unique=True),
        # A referrer's invited and converted counts (account view, write-back).
        Index("ix_accounts_referred_by_id", "referred_by_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    crm: Mapped[str] = mapped_column(String(16))
    portal: Mapped[str] = mapped_column(String(255))
    contact_id: Mapped[str] = mapped_column(String(64))
    card_number: Mapped[str | None] = mapped_column(String(32), unique=True)
    # What a newcomer gives to be linked to this customer (connector.referrals.codes).
    referral_code: Mapped[str | None] = mapped_column(String(16))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # Points taken beyond the lots (negative_balance = "allow"); new credits pay it first.
    overdraft: Mapped[int] = mapped_column(BigInteger, default=0)
    tier: Mapped[str] = mapped_column(String(64))
    tier_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purchase_count: Mapped[int] = mapped_column(Integer, default=0)
    purchase_total: Mapped[int] = mapped_column(BigInteger, default=0)
    # The tier's rolling spend, kept by the transactions that date spend (Postings._post):
    # the sum of the entries' purchase_amount dated at or after tier_spend_since, and the
    # earliest such date. It answers for a window starting between the two (Spend); `verify`
    # checks it against the entries. NULL since: not known, summed at the next purchase.
    tier_spend: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tier_spend_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tier_spend_oldest: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    birthday: Mapped[date | None] = mapped_column(Date)
    # RFM scores ("543": recency, frequency, monetary, 1-5 each) and the named segment.
    rfm: Mapped[str | None] = mapped_column(String(3))
    segment: Mapped[str | None] = mapped_column(String(32))
    referred_by_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    # Bumped on every change the CRM can see; write-back compares it with what it last sent.
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Entry(Base):
    """An append-only ledger line. `amount` is signed points in hundredths."""

    __tablename__ = "entries"
    __table_args__ = (
        CheckConstraint(f"kind IN {ENTRY_KINDS!r}", name="kind_known"),
        CheckConstraint(
            "(kind = 'accrual' AND amount >= 0) OR (kind IN ('bonus', 'opening') AND amount > 0)"
            " OR (kind IN ('redemption', 'expiry', 'reward') AND amount < 0)"
            " OR (kind = 'adjustment' AND amount <> 0) OR kind = 'reversal'",
            name="amount_sign_by_kind",
        ),
        CheckConstraint("shortfall >= 0", name="shortfall_non_negative"),
        Index("ix_entries_account_occurred", "account_id", "occurred_at"),
        Index("ix_entries_account_source", "account_id", "source"),
        Index("ix_entries_kind_occurred", "kind", "occurred_at"),
        Index("ix_entries_account_purchase_at", "account_id", "purchase_at"),
        # settle_purchase finds a deal's entries by source alone, on any account.
        Index("ix_entries_source", "source"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    # What the entry belongs to (a deal, an order); reversal undoes a source as a whole.
    source: Mapped[str | None] = mapped_column(String(255))
    purchase_amount: Mapped[int | None] = mapped_column(BigInteger)
    purchase_count: Mapped[int] = mapped_column(SmallInteger, default=0)
    # When the purchase behind purchase_amount was made: a return months later still counts
    # against the spend of the purchase's own date (rolling tier windows).
    purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Points a clamped reversal could not take back (negative_balance = "clamp").
    shortfall: Mapped[int] = mapped_column(BigInteger, default=0)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The fingerprint of the client request that chose the key (API, CLI): the same key with
    # another request is a conflict, not a replay. NULL for keys the connector derives itself.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lot(Base):
    """Points credited together, spent oldest first, expiring together."""

    __tablename__ = "lots"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_bounds"),
        Index("ix_lots_account_earned", "account_id", "earned_at"),
        Index("ix_lots_expires_open", "expires_at", "remaining"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Allocation(Base):
    """Which lots a debit entry took its points from."""

    __tablename__ = "allocations"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
