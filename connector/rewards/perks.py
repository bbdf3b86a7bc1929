"""A tier's perks ([[program.tiers]] perks) as one line for the CRM contact field."""

from __future__ import annotations

from connector.config import ProgramSettings

# Both CRMs' text fields keep 255 characters; longer lists end with an ellipsis.
FIELD_MAX = 255


def perks_text(program: ProgramSettings, tier: str) -> str:
    perks = next((t.perks for t in program.tiers if t.name == tier), [])
    text = "; ".join(perks)
    return text if len(text) <= FIELD_MAX else text[:FIELD_MAX - 1].rstrip() + "…"
