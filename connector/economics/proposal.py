"""A proposed program from the dashboard's what-if form: the current `[program]` with other
tier thresholds and rates, and a campaign multiplier over the whole period."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from connector.config import ProgramSettings, describe_errors
from connector.errors import ConfigError

CAMPAIGN = "what-if multiplier"


def form_values(current: ProgramSettings) -> dict[str, str]:
    """The form as it first shows: the current program's figures."""
    values = {"multiplier": "1"}
    for index, tier in enumerate(current.tiers):
        values[f"min_spend_{index}"] = str(tier.min_spend)
        values[f"rate_{index}"] = str(tier.rate)
    return values


def proposed_program(current: ProgramSettings, fields: Mapping[str, str], *,
                     since: datetime, now: datetime) -> ProgramSettings:
    """The current program with the form's thresholds, rates and multiplier, checked as
    config.toml is (ConfigError, one line per problem)."""
    data: dict[str, Any] = current.model_dump()
    tiers = data["tiers"]
    for index, tier in enumerate(tiers):
        tier["min_spend"] = fields.get(f"min_spend_{index}", str(tier["min_spend"])).strip()
        tier["rate"] = fields.get(f"rate_{index}", str(tier["rate"])).strip()
    multiplier = fields.get("multiplier", "1").strip() or "1"
    if multiplier != "1":
        zone = current.zone
        data["campaigns"] = [*data["campaigns"], {
            "name": CAMPAIGN, "multiplier": multiplier,
            "starts": since.astimezone(zone).replace(tzinfo=None),
            "ends": (now + timedelta(days=1)).astimezone(zone).replace(tzinfo=None)}]
    try:
        return ProgramSettings(**data)
    except ValidationError as exc:
        raise ConfigError([f"program.{line}" for line in describe_errors(exc)]) from None
