"""Reconcile 10,000 won leads over 5,000 contacts against the fake amoCRM account.

The account enforces 7 requests/s (answering HTML 429s beyond it) on a virtual clock shared
with the client's limiter, so the run is time-accelerated: "account time" is what the sync
would take against amoCRM at that rate, "wall time" is what this machine spent. The bound is
the fewest calls the work needs at that rate: leads / 250 per page (each lead with its
contacts, `with=contacts`) + contacts / write_batch per PATCH, divided by the requests per
second; the output sets the calls made against those floors.

    .venv/bin/python benchmarks/amocrm_sync.py [--leads 10000 --contacts 5000]
        [--rate 7 --write-batch 50] [--database-url URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.amocrm.connector import AmoCRMConnector  # noqa: E402
from connector.config import load_settings  # noqa: E402
from connector.crm.amocrm import PAGE_LIMIT, AmoCRMClient  # noqa: E402
from connector.crm.limiter import LeakyBucket  # noqa: E402
from connector.sandbox import ManualClock  # noqa: E402
from connector.sandbox.amocrm import FakeAmoCRM  # noqa: E402
from connector.services import Services  # noqa: E402


def run(leads: int, contacts: int, rate: float, write_batch: int,
        database_url: str) -> dict[str, Any]:
    clock = ManualClock()
    with FakeAmoCRM(clock=clock, rate=rate, burst=int(rate)) as account:
        for contact in range(1, contacts + 1):
            account.put_contact(contact)
        for lead in range(1, leads + 1):
            account.put_lead(lead, contact=(lead - 1) % contacts + 1, price=1000 + lead % 7 * 250)
        settings = load_settings(None, database={"url": database_url}, amocrm={
            "enabled": True, "base_url": account.base_url, "long_lived_token": "long-lived-token",
            "webhook_secret": "BenchSecret0123456789", "requests_per_second": rate,
            "burst": int(rate), "write_batch": write_batch})
        services = Services.build(settings)
        services.migrate()
        client = AmoCRMClient(settings.amocrm, limiter=LeakyBucket.under(
            rate, int(rate), clock=clock.monotonic, sleep=clock.sleep), sleep=clock.sleep)
        connector = AmoCRMConnector(services, client=client)
        connector.installer.install()
        setup_calls, setup_time = account.state.http_requests, clock.monotonic()
        wall = time.perf_counter()
        report = connector.reconcile(full=True)
        read_calls = account.state.http_requests - setup_calls
        written = connector.writeback.flush(limit=contacts * 2)
        wall_s = time.perf_counter() - wall
        calls = account.state.http_requests - setup_calls
        account_s = clock.monotonic() - setup_time
        read_floor = math.ceil(leads / PAGE_LIMIT)
        write_floor = math.ceil(written.contacts_written / write_batch)
        bound_s = (read_floor + math.ceil(contacts / write_batch)) / rate
        checked, mismatches = services.ledger.verify()
        services.close()
        return {
            "leads_read": report.deals, "contacts_written": written.contacts_written,
            "api_calls": calls, "read_calls": read_calls, "write_calls": calls - read_calls,
            "read_floor_calls": read_floor,
            "read_ratio_to_floor": round(read_calls / read_floor, 2) if read_floor else None,
            "write_floor_calls": write_floor,
            "write_ratio_to_floor": round((calls - read_calls) / write_floor, 2)
            if write_floor else None,
            "http_429": account.state.too_many, "account_time_s": round(account_s, 1),
            "bound_s": round(bound_s, 1), "ratio_to_bound": round(account_s / bound_s, 3),
            "wall_time_s": round(wall_s, 1), "accounts_verified": checked,
            "mismatches": len(mismatches), "database": database_url.split("://")[0],
            "rate": rate, "write_batch": write_batch, "python": platform.python_version(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=7.0)
    parser.add_argument("--write-batch", type=int, default=50)
    parser.add_argument("--database-url")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{scratch}/bench.db"
        result = run(args.leads, args.contacts, args.rate, args.write_batch, url)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:<20} {value}")


if __name__ == "__main__":
    main()
