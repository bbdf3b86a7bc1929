"""The measured tests the program configures: campaigns with a holdout, trigger holdouts
and the A/B test, under one shape the report reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from connector.config import ProgramSettings
from connector.errors import UnknownCampaignError


@dataclass(frozen=True)
class Test:
    name: str
    kind: str  # "campaign", "trigger" or "ab_test"
    control_share: Decimal
    # The window (UTC) for a campaign and an A/B test; a trigger has none: each customer is
    # followed for `days` from the trigger's moment.
    starts: datetime | None = None
    ends: datetime | None = None
    days: int | None = None
    cost_per_send: Decimal = Decimal(0)

    def finished(self, now: datetime) -> bool:
        return self.ends is not None and self.ends <= now

    @property
    def follow(self) -> timedelta | None:
        return timedelta(days=self.days) if self.days else None


def _utc(local: datetime, program: ProgramSettings) -> datetime:
    return local.replace(tzinfo=program.zone).astimezone(UTC)


def tests(program: ProgramSettings) -> list[Test]:
    found = [Test(c.name, "campaign", c.holdout, _utc(c.starts, program),
                  _utc(c.ends, program))
             for c in program.campaigns if c.holdout > 0]
    found += [Test(h.trigger, "trigger", h.holdout, days=h.days,
                   cost_per_send=h.cost_per_send) for h in program.trigger_holdouts]
    if (ab := program.ab_test) is not None:
        found.append(Test(ab.name, "ab_test", 1 - ab.share_b, _utc(ab.starts, program),
                          _utc(ab.ends, program)))
    return found


def find(program: ProgramSettings, name: str) -> Test:
    for test in tests(program):
        if test.name == name:
            return test
    known = ", ".join(t.name for t in tests(program)) or "none configured"
    raise UnknownCampaignError(
        f"no campaign with a holdout, trigger holdout or A/B test named {name!r} "
        f"(known: {known})", campaign=name)
