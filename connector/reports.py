"""What install, reconcile and write-back report, for the CLI, the log and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


def age_text(delta: timedelta) -> str:
    """How long, in the largest whole unit: "3 d", "5 h", "12 min", "40 s"."""
    seconds = max(int(delta.total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@dataclass
class InstallReport:
    done: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        steps = [f"  - {step}" for step in self.manual]
        return self.done + (["manual steps in the CRM:", *steps] if steps else [])


@dataclass
class ReconcileReport:
    deals: int = 0
    changed: int = 0
    without_contact: int = 0
    calls: int = 0
    cursor: str | None = None


@dataclass
class WritebackReport:
    accounts: int = 0
    contacts_written: int = 0
    unchanged: int = 0
    failed: int = 0
    refused: int = 0  # refused for good by the CRM: recorded, not retried
    calls: int = 0


@dataclass
class TriggerReport:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
