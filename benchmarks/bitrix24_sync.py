"""Reconcile 5,000 won deals over 1,500 contacts against the fake Bitrix24 portal, then
write the contacts back.

The portal enforces its leaky bucket (2 requests/s, burst 50 by default) on a virtual clock
shared with the client's limiter, so the run is time-accelerated: "portal time" is what the
sync would take against a real portal at that rate, "wall time" is what this machine spent.
The portal counts requests, not rows, so the floors are in requests: a read takes at least
deals / 2,500 requests (50 pages of 50 rows in one batch), a write contacts / 50 (50 updates
in one batch); the time floors are those over the rate. The peers' figure is what the
official SDK's fast list (a first page, then 50-page batches) and 50-update batches take.

    .venv/bin/python benchmarks/bitrix24_sync.py [--deals 5000 --contacts 1500]
        [--rate 2 --burst 50] [--bucket-empty] [--database-url URL] [--json]
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

from connector.bitrix24.connector import Bitrix24Connector  # noqa: E402
from connector.config import load_settings  # noqa: E402
from connector.crm.bitrix24 import Bitrix24Client  # noqa: E402
from connector.crm.limiter import LeakyBucket  # noqa: E402
from connector.sandbox import FakeBitrix24Portal, ManualClock  # noqa: E402
from connector.services import Services  # noqa: E402


def run(deals: int, contacts: int, rate: float, burst: int, database_url: str,
        bucket_empty: bool = False) -> dict[str, Any]:
    clock = ManualClock()
    with FakeBitrix24Portal(clock=clock, requests_per_second=rate, burst=burst) as portal:
        ids = [portal.add_contact(NAME=f"Client {n}") for n in range(contacts)]
        for deal in range(deals):
            portal.add_deal(contact_ids=[ids[deal % contacts]], STAGE_ID="WON",
                            OPPORTUNITY=f"{1000 + deal % 7 * 250}.00")
        settings = load_settings(None, database={"url": database_url}, bitrix24={
            "enabled": True, "webhook_url": portal.webhook_url, "portal": "bench.bitrix24.ru",
            "application_token": portal.application_token, "requests_per_second": rate,
            "burst": burst})
        services = Services.build(settings)
        services.migrate()
        client = Bitrix24Client(
            settings.bitrix24, limiter=LeakyBucket.under(rate, burst, clock=clock.monotonic,
                                                         sleep=clock.sleep), sleep=clock.sleep,
            clock=clock.time)  # operating_reset_at is on the portal's clock
        connector = Bitrix24Connector(services, client=client)
        connector.installer.install()  # the contact fields
        if bucket_empty:  # another integration spent the burst: every request waits its turn
            for _ in range(burst):
                client.call("server.time")
        setup_calls, setup_time = portal.http_requests, clock.monotonic()

        wall = time.perf_counter()
        report = connector.reconcile(full=True)
        read_calls, read_wall = portal.http_requests - setup_calls, time.perf_counter()
        written = connector.writeback.flush(limit=contacts * 2)
        wall_s = time.perf_counter() - wall
        total_calls = portal.http_requests - setup_calls
        portal_s = clock.monotonic() - setup_time
        entities = report.deals + written.contacts_written
        write_calls = total_calls - read_calls
        read_floor = report.deals / 2500
        write_floor = written.contacts_written / 50
        peer_read = peer_read_requests(report.deals)
        peer_calls = peer_read + math.ceil(written.contacts_written / 50)
        bound_s = (read_floor + write_floor) / rate
        checked, mismatches = services.ledger.verify()
        services.close()
        return {
            "deals_read": report.deals, "contacts_written": written.contacts_written,
            "api_calls": total_calls, "read_calls": read_calls, "write_calls": write_calls,
            "read_floor_calls": round(read_floor, 2),
            "read_ratio_to_floor": round(read_calls / read_floor, 2) if read_floor else None,
            "write_floor_calls": round(write_floor, 2),
            "write_ratio_to_floor": round(write_calls / write_floor, 2) if write_floor else None,
            "peer_calls": peer_calls, "ratio_to_peers": round(total_calls / peer_calls, 2),
            "entities_per_call": round(entities / max(total_calls, 1), 1),
            "limit_errors": portal.limit_errors,
            "portal_time_s": round(portal_s, 1), "bound_s": round(bound_s, 1),
            "ratio_to_bound": round(portal_s / bound_s, 3) if bound_s else None,
            "wall_time_s": round(wall_s, 1), "wall_read_s": round(read_wall - wall, 1),
            "accounts_verified": checked, "mismatches": len(mismatches),
            "database": database_url.split("://")[0], "rate": rate, "burst": burst,
            "bucket_empty": bucket_empty,
            "python": platform.python_version(),
        }


def peer_read_requests(rows: int) -> int:
    """The official SDK's fast list: a first page alone, then batches of 50 chained pages
    until a page comes back short."""
    return 1 if rows < 50 else 2 + (rows - 50) // 2500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=5_000)
    parser.add_argument("--contacts", type=int, default=1_500)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--bucket-empty", action="store_true",
                        help="spend the portal's burst first, so the sync runs at the rate")
    parser.add_argument("--database-url")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{scratch}/bench.db"
        result = run(args.deals, args.contacts, args.rate, args.burst, url,
                     args.bucket_empty)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:<20} {value}")


if __name__ == "__main__":
    main()
