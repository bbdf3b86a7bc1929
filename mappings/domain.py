"""Domain records the CRM mappings produce: plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class PurchaseState:
    """What the ledger should hold for a deal: a purchase of `amount` by `contact_id`, or
    nothing (`amount` None) with the reason."""

    source: str
    contact_id: str | None
    amount: Decimal | None
    category: str | None = None
    occurred_at: datetime | None = None
    reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
