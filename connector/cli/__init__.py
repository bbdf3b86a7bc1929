"""The `loyalty-connector` command: run the service, migrate, read and change the ledger,
install and sync the CRMs.

Exit codes: 0 done; 1 refused (ledger error, database not migrated, verify found mismatches);
2 bad usage or bad configuration.
"""

from connector.cli import (
    card,
    crm,
    demo,
    doctor,
    economics,
    inbox,
    ledger,
    operations,
    secrets,
    service,
    writeback,
)
from connector.cli.base import cli, main

__all__ = ["card", "cli", "crm", "demo", "doctor", "economics", "inbox", "ledger", "main",
           "operations", "secrets", "service", "writeback"]
