"""campaign_groups: who was placed in which group of a test, once, when first eligible."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, BigId, UTCDateTime

KINDS = ("campaign", "trigger", "ab_test")


class CampaignGroup(Base):
    """A customer's group in one test (a campaign, a trigger mailing or an A/B test of the
    earning rules), written when the customer first became eligible: a purchase in the
    window, the trigger's moment. UNIQUE: a customer is placed once per test."""

    __tablename__ = "campaign_groups"
    __table_args__ = (
        UniqueConstraint("campaign", "account_id", name="uq_campaign_groups_once"),
        CheckConstraint("grp IN ('treated', 'control')", name="group_known"),
        CheckConstraint("kind IN ('campaign', 'trigger', 'ab_test')", name="kind_known"),
        Index("ix_campaign_groups_campaign_seen", "campaign", "first_seen_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    # "group" is an SQL keyword; the column keeps a plain name on every database.
    grp: Mapped[str] = mapped_column(String(8))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
