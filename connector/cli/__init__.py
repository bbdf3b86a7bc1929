"""The `loyalty-connector` command: run the service, migrate, read and change the ledger,
install and sync the CRMs.

Exit codes: 0 done; 1 refused (ledger error, database not migrated, verify found mismatches);
2 bad usage or bad configuration.
"""

from connector.cli import (
    campaigns,
    card,
    codes,
    crm,
    demo,
    doctor,
    economics,
    imports,
    inbox,
    ledger,
    nps,
    operations,
    privacy,
    rewards,
    secrets,
    service,
    writeback,
)
from connector.cli.base import cli, main

__all__ = ["campaigns", "card", "cli", "codes", "crm", "demo", "doctor", "economics",
           "imports", "inbox", "ledger", "main", "nps", "operations", "privacy", "rewards",
           "secrets", "service", "writeback"]
