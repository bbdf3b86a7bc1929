"""What install, reconcile and write-back report, for the CLI, the log and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    calls: int = 0


@dataclass
class TriggerReport:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
