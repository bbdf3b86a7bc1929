"""Exact amounts: `Decimal` in code, integers of minor units (hundredths) in storage."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation

from mappings.domain import MAX_AMOUNT as MAX_AMOUNT  # user input and CRM fields: one bound

SCALE = 100  # minor units per point and per currency unit
_QUANTUM = Decimal("0.01")


def to_minor(value: Decimal) -> int:
    """Store a Decimal with at most two places as integer hundredths."""
    scaled = value * SCALE
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than two decimal places")
    return int(scaled)


def from_minor(value: int) -> Decimal:
    return (Decimal(value) / SCALE).quantize(_QUANTUM)


def parse_amount(raw: object) -> Decimal:
    """Parse user input (str/int/Decimal) into a finite Decimal with at most two places."""
    if isinstance(raw, bool | float):
        # floats never enter the ledger: "0.1" must be sent as a string or an integer
        raise ValueError("amount must be a string or an integer, not a float")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation as exc:
        raise ValueError(f"{raw!r} is not a number") from exc
    if not value.is_finite():
        raise ValueError(f"{raw!r} is not a finite number")
    if abs(value) > MAX_AMOUNT:  # before quantize, which overflows on huge exponents
        raise ValueError(f"{raw!r} is larger than {MAX_AMOUNT}")
    if value != value.quantize(_QUANTUM, rounding=ROUND_DOWN):
        raise ValueError(f"{raw!r} has more than two decimal places")
    return value.quantize(_QUANTUM)


def round_points(value: Decimal, places: int, mode: str) -> Decimal:
    """Round earned points to the program's precision ('floor' or 'half_up')."""
    quantum = Decimal(1).scaleb(-places)
    rounding = ROUND_DOWN if mode == "floor" else ROUND_HALF_UP
    return value.quantize(quantum, rounding=rounding).quantize(_QUANTUM)
