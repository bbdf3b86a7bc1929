"""The statistics of a comparison, by scipy: a difference between treated and control with
its 95% confidence interval.

scipy works in floats; the money it sees are currency units as floats and what it answers
is rounded back to Decimal at once, so no float reaches a stored or shown amount.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType

LEVEL = 0.95
CENT = Decimal("0.01")
RATE = Decimal("0.0001")


@dataclass(frozen=True)
class Interval:
    """treated − control, with the interval's bounds at LEVEL and the test's p-value."""

    difference: Decimal
    low: Decimal
    high: Decimal
    p_value: Decimal | None

    def as_json(self) -> dict[str, str | None]:
        return {"difference": str(self.difference), "low": str(self.low),
                "high": str(self.high),
                "p_value": None if self.p_value is None else str(self.p_value)}


def _stats() -> ModuleType:
    """scipy.stats, loaded when a comparison is first computed: importing it takes about 2 s
    of CPU, which every other CLI command (an import, `verify`) would otherwise pay at start
    through the CLI's import of the campaigns report."""
    from scipy import stats

    return stats


def _decimal(value: float, quantum: Decimal) -> Decimal:
    return Decimal(float(value)).quantize(quantum)


def welch(treated: Sequence[float], control: Sequence[float],
          quantum: Decimal = CENT) -> Interval | None:
    """Difference of the means by Welch's t-test (unequal variances: a campaign changes the
    spread of spending as well as its level). None when a group has fewer than two values
    or neither varies: there is no interval to give."""
    if len(treated) < 2 or len(control) < 2 or (len(set(treated)) == 1
                                                and len(set(control)) == 1):
        return None
    result = _stats().ttest_ind(treated, control, equal_var=False)
    bounds = result.confidence_interval(confidence_level=LEVEL)
    if not (math.isfinite(bounds.low) and math.isfinite(bounds.high)):
        return None
    difference = math.fsum(treated) / len(treated) - math.fsum(control) / len(control)
    return Interval(_decimal(difference, quantum), _decimal(bounds.low, quantum),
                    _decimal(bounds.high, quantum), _decimal(float(result.pvalue), RATE))


def rates(treated_hits: int, treated: int, control_hits: int, control: int
          ) -> Interval | None:
    """Difference of two proportions with Newcombe's hybrid score interval (his method 10),
    built from scipy's Wilson interval of each proportion: unlike the plain normal
    approximation it keeps inside [-1, 1] and stays right near 0% and 100% and for small
    groups. The p-value is Fisher's exact test on the 2×2 table."""
    if treated < 1 or control < 1:
        return None
    p1, p2 = treated_hits / treated, control_hits / control
    stats = _stats()
    w1 = stats.binomtest(treated_hits, treated).proportion_ci(LEVEL, method="wilson")
    w2 = stats.binomtest(control_hits, control).proportion_ci(LEVEL, method="wilson")
    difference = p1 - p2
    low = difference - math.hypot(p1 - w1.low, w2.high - p2)
    high = difference + math.hypot(w1.high - p1, p2 - w2.low)
    table = [[treated_hits, treated - treated_hits], [control_hits, control - control_hits]]
    p_value = stats.fisher_exact(table).pvalue
    return Interval(_decimal(difference, RATE), _decimal(low, RATE), _decimal(high, RATE),
                    _decimal(float(p_value), RATE))
