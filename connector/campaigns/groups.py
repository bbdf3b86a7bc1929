"""Which group a customer is in for a test: a pure function of the test's name and the
account, so every process, run and replay places a customer the same way."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Literal

Group = Literal["treated", "control"]
TREATED: Group = "treated"
CONTROL: Group = "control"
GROUPS: tuple[Group, Group] = (TREATED, CONTROL)
_SCALE = 2 ** 64


def position(test: str, account_id: int) -> float:
    """A uniform number in [0, 1) drawn from sha256 of the test and the account. Python's
    hash() is salted per process, so it would move customers between groups on restart."""
    digest = hashlib.sha256(f"{test}\x00{account_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def group(test: str, account_id: int, control_share: Decimal | float) -> Group:
    """Control for the first `control_share` of the unit interval, treated for the rest;
    each test's name draws its own split, so tests do not share their control groups."""
    return CONTROL if position(test, account_id) < float(control_share) else TREATED
