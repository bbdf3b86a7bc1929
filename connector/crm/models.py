"""What the connector remembers about each CRM: credentials, the authorizations it started,
sync cursors, what it last wrote to each contact, and the automation triggers it owes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from connector.schema import Base, BigId, UTCDateTime

TRIGGER_STATUSES = ("pending", "sent", "skipped", "failed")


class Credential(Base):
    """OAuth tokens of one portal/account. Refresh tokens are single-use on amoCRM, so the
    row is locked while refreshing and the new pair committed before it is used."""

    __tablename__ = "crm_credentials"
    __table_args__ = (UniqueConstraint("crm", "portal", name="uq_crm_credentials_portal"),
                      CheckConstraint("status IN ('active', 'revoked')", name="status_known"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    crm: Mapped[str] = mapped_column(String(16))
    portal: Mapped[str] = mapped_column(String(255))
    member_id: Mapped[str | None] = mapped_column(String(64))
    endpoint: Mapped[str | None] = mapped_column(String(512))
    access_token: Mapped[str | None] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    application_token: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="active")
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OAuthState(Base):
    """An authorization the connector started and has not seen come back: only the hash of
    the `state` it sent, so a database read gives nobody a state to replay."""

    __tablename__ = "oauth_states"
    __table_args__ = (UniqueConstraint("state_hash", name="uq_oauth_states_state_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    crm: Mapped[str] = mapped_column(String(16))
    portal: Mapped[str] = mapped_column(String(255))
    state_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncCursor(Base):
    """How far a reconcile got; never set past the moment that sync started."""

    __tablename__ = "sync_cursors"
    __table_args__ = (UniqueConstraint("crm", "portal", "name", name="uq_sync_cursors_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    crm: Mapped[str] = mapped_column(String(16))
    portal: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ContactMirror(Base):
    """The field values last written to a CRM contact, and the account version they showed.
    Write-back sends only what differs; a contact-update event echoing these values is ours.

    `refused_at`/`refused_error`: the CRM refused a write for good (the contact was deleted,
    or never existed there); write-back leaves it alone until the contact changes."""

    __tablename__ = "contact_mirror"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    written_version: Mapped[int] = mapped_column(Integer, default=0)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    latest_deal_id: Mapped[str | None] = mapped_column(String(64))
    written_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refused_error: Mapped[str | None] = mapped_column(Text)


class TriggerEvent(Base):
    """An automation trigger owed to marketing, once per transition (the UNIQUE key)."""

    __tablename__ = "trigger_events"
    __table_args__ = (
        UniqueConstraint("account_id", "code", "transition", name="uq_trigger_events_once"),
        CheckConstraint(f"status IN {TRIGGER_STATUSES!r}", name="status_known"),
        Index("ix_trigger_events_due", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    code: Mapped[str] = mapped_column(String(64))
    transition: Mapped[str] = mapped_column(String(255))
    deal_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
