"""Promo code tables. Codes are kept readable (not hashed): a batch must be exported again
for printing or a mailing; the database is guarded as the ledger it sits beside."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, BigId, UTCDateTime


class PromoCampaign(Base):
    """Running totals of one `[[program.promo]]` campaign: the budget is spent here by a
    conditional UPDATE, so the last points of it are granted once."""

    __tablename__ = "promo_campaigns"
    __table_args__ = (CheckConstraint("granted >= 0", name="granted_non_negative"),)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    granted: Mapped[int] = mapped_column(BigInteger, default=0)  # hundredths of points
    uses: Mapped[int] = mapped_column(Integer, default=0)


class PromoCode(Base):
    __tablename__ = "promo_codes"
    __table_args__ = (CheckConstraint("uses >= 0", name="uses_non_negative"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(64), index=True)
    # As stored: upper case, no separators (connector.codes.draw.normalize).
    code: Mapped[str] = mapped_column(String(32), unique=True)
    shared: Mapped[bool] = mapped_column(default=False)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PromoRedemption(Base):
    """One use of a code by one purchase. UNIQUE (code, source): a purchase uses a code
    once, however often it is settled; UNIQUE (campaign, account, nth): a customer's n-th
    use of a campaign exists once, so its per-customer limit holds under concurrency."""

    __tablename__ = "promo_redemptions"
    __table_args__ = (
        UniqueConstraint("code_id", "source", name="uq_promo_redemptions_code_source"),
        UniqueConstraint("campaign", "account_id", "nth", name="uq_promo_redemptions_nth"),
        CheckConstraint("points >= 0", name="points_non_negative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code_id: Mapped[int] = mapped_column(ForeignKey("promo_codes.id"))
    campaign: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    nth: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(255))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id"))
    points: Mapped[int] = mapped_column(BigInteger)  # hundredths
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class PromoAttachment(Base):
    """A code given for a purchase before it settles (a robot or pipeline action on the
    deal / lead); applied when the purchase is first accrued.

    The accrual marks the purchase's row settled (making one without a code when none was
    attached) in the statement that reads it, and an attach writes only to a row not settled:
    both go through this row's key, so an attach racing the accrual waits for it and is
    refused, instead of keeping a code after the accrual has read past it."""

    __tablename__ = "promo_attachments"
    __table_args__ = (CheckConstraint("code IS NOT NULL OR settled_at IS NOT NULL",
                                      name="code_or_settled"),)

    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    code: Mapped[str | None] = mapped_column(String(32))
    via: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
