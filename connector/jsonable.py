"""A dataclass report as a JSON object, field by field (the stats and money API answers)."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from typing import Any


def fields_as_json(report: Any) -> dict[str, Any]:
    """Each field of the dataclass `report` by name: Decimals as strings (exact, never float),
    datetimes in ISO 8601, lists of rows and nested reports through their own as_json, dicts
    copied so the answer does not share the report's."""
    data: dict[str, Any] = {}
    for item in fields(report):
        value = getattr(report, item.name)
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, list):
            value = [row.as_json() for row in value]
        elif isinstance(value, dict):
            value = dict(value)
        elif hasattr(value, "as_json"):
            value = value.as_json()
        data[item.name] = value
    return data
