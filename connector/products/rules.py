"""Which rule a row falls under and the rate it earns at: pure functions of the settings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from connector.config import ProductRule, ProgramSettings
from connector.products.rows import Row


@dataclass(frozen=True)
class RowRate:
    """A row and the rate it earns at before campaigns; `rule` None: the tier's rate."""

    row: Row
    rate: Decimal
    rule: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"product_id": self.row.product_id, "amount": str(self.row.amount),
                "rate": str(self.rate), "rule": self.rule}


def matches(rule: ProductRule, row: Row) -> bool:
    if rule.products and row.product_id not in rule.products:
        return False
    if rule.sections and row.section not in rule.sections:
        return False
    if rule.property and not set(row.properties.get(rule.property, ())) & set(rule.values):
        return False
    return not rule.discounted or row.discount > 0


def rule_for(rules: Sequence[ProductRule], row: Row) -> ProductRule | None:
    return next((rule for rule in rules if matches(rule, row)), None)


def row_rate(rules: Sequence[ProductRule], row: Row, tier_rate: Decimal) -> RowRate:
    rule = rule_for(rules, row)
    if rule is None:
        return RowRate(row, tier_rate, None)
    if rule.exclude:
        return RowRate(row, Decimal(0), rule.name)
    if rule.rate is not None:
        return RowRate(row, rule.rate, rule.name)
    assert rule.multiplier is not None
    return RowRate(row, tier_rate * rule.multiplier, rule.name)


def rates(rules: Sequence[ProductRule], rows: Iterable[Row], tier_rate: Decimal) -> list[RowRate]:
    return [row_rate(rules, row, tier_rate) for row in rows]


def needs_rows(settings: ProgramSettings) -> bool:
    """Whether purchases' rows matter: only with product rules are they read from a CRM."""
    return bool(settings.product_rules)


def needs_catalog(settings: ProgramSettings) -> bool:
    """Whether a rule reads what only the catalog knows: a product's section or property."""
    return any(rule.sections or rule.property for rule in settings.product_rules)


def eligible_amount(rules: Sequence[ProductRule], rows: Iterable[Row]) -> Decimal:
    """What the rows that earn points come to: the base of the redemption cap when
    program.redeem_eligible_only is set."""
    return sum((row.amount for row in rows if row_rate(rules, row, Decimal(1)).rate > 0),
               Decimal("0.00"))
