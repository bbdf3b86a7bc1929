"""What ledger operations return: plain frozen records with Decimal amounts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connector.ledger.models import Account, Entry
from connector.money import from_minor
from connector.referrals.stats import Referrals


@dataclass(frozen=True)
class AccountRef:
    """How a CRM names a customer: which CRM, which portal/account, which contact."""

    crm: str
    portal: str
    contact_id: str

    def __str__(self) -> str:
        return f"{self.crm}:{self.portal}:contact:{self.contact_id}"


@dataclass(frozen=True)
class Result:
    """The outcome of one ledger operation. `duplicate` is True when the idempotency key was
    seen before and the original outcome is returned unchanged."""

    kind: str
    account_id: int
    entry_id: int | None
    points: Decimal
    balance: Decimal
    duplicate: bool = False
    shortfall: Decimal = Decimal("0.00")
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, entry: Entry, *, duplicate: bool) -> Result:
        return cls(
            kind=entry.kind,
            account_id=entry.account_id,
            entry_id=entry.id,
            points=from_minor(entry.amount),
            balance=from_minor(entry.balance_after),
            duplicate=duplicate,
            shortfall=from_minor(entry.shortfall),
            details=dict(entry.details or {}),
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("points", "balance", "shortfall"):
            data[key] = str(data[key])
        return data


@dataclass(frozen=True)
class EntryView:
    id: int
    kind: str
    points: Decimal
    balance_after: Decimal
    key: str
    source: str | None
    purchase_amount: Decimal | None
    comment: str | None
    actor: str | None
    details: dict[str, Any] | None
    occurred_at: datetime

    @classmethod
    def of(cls, entry: Entry) -> EntryView:
        purchase = None if entry.purchase_amount is None else from_minor(entry.purchase_amount)
        return cls(entry.id, entry.kind, from_minor(entry.amount),
                   from_minor(entry.balance_after), entry.idempotency_key, entry.source,
                   purchase, entry.comment, entry.actor, entry.details, entry.occurred_at)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "points": str(self.points),
            "balance_after": str(self.balance_after), "key": self.key, "source": self.source,
            "purchase_amount": None if self.purchase_amount is None else str(self.purchase_amount),
            "comment": self.comment, "actor": self.actor, "details": self.details,
            "occurred_at": self.occurred_at.isoformat(),
        }


@dataclass(frozen=True)
class AccountView:
    id: int
    ref: AccountRef
    card_number: str | None
    balance: Decimal
    available: Decimal
    pending: Decimal
    tier: str
    discount_percent: Decimal
    qualifying_spend: Decimal
    next_tier: str | None
    spend_to_next_tier: Decimal | None
    next_expiry_points: Decimal
    next_expiry_at: datetime | None
    purchase_count: int
    purchase_total: Decimal
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    birthday: date | None
    created_at: datetime
    version: int
    rfm: str | None
    segment: str | None
    referral_code: str | None
    # The referrer's code, and what this customer's own referrals brought.
    referred_by: str | None
    referrals: Referrals

    @classmethod
    def build(cls, account: Account, **computed: Any) -> AccountView:
        return cls(
            id=account.id,
            ref=AccountRef(account.crm, account.portal, account.contact_id),
            card_number=account.card_number,
            balance=from_minor(account.balance),
            tier=account.tier,
            purchase_count=account.purchase_count,
            purchase_total=from_minor(account.purchase_total),
            first_purchase_at=account.first_purchase_at,
            last_purchase_at=account.last_purchase_at,
            birthday=account.birthday,
            created_at=account.created_at,
            version=account.version,
            rfm=account.rfm,
            segment=account.segment,
            referral_code=account.referral_code,
            **computed,
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ref"] = asdict(self.ref)
        data["referrals"] = self.referrals.as_json()
        for key, value in data.items():
            if isinstance(value, Decimal):
                data[key] = str(value)
            elif isinstance(value, datetime | date):
                data[key] = value.isoformat()
        return data
