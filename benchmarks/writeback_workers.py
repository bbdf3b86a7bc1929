"""Workers draining Bitrix24 events at once: calls, contact writes and seconds, 1 vs N workers.

3,000 ONCRMDEALUPDATE events over 3,000 deals of 3,000 contacts (by default) wait in the
inbox; `--workers` workers (threads, each with the Services a process would build: its own
connections, its own client, the shared budget of [limits]) run the inbox job back to back
until nothing is due. The fake portal enforces its limit in real time (2 requests/s, burst
50 by default), so the run takes as long as it would against a real portal.

    .venv/bin/python benchmarks/writeback_workers.py [--workers 1 2] [--events 3000]
        [--contacts 3000] [--database-url URL] [--json]

The database is wiped first (as benchmarks/ingest.py does; never use `test`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ingest import B24_PORTAL, count_rows, drain, quiet_logs, wipe  # noqa: E402

from connector.config import load_settings  # noqa: E402
from connector.sandbox import FakeBitrix24Portal  # noqa: E402
from connector.services import Services  # noqa: E402


def run(url: str, *, workers: int, events: int, contacts: int) -> dict[str, Any]:
    if url.rstrip("/").endswith("/test"):
        raise SystemExit("error: never the database `test`: give the benchmark its own")
    wipe(url)
    with FakeBitrix24Portal() as portal, quiet_logs():
        ids = [portal.add_contact(NAME=f"Client {n}") for n in range(contacts)]
        deals = [portal.add_deal(contact_ids=[ids[d % contacts]], STAGE_ID="WON",
                                 OPPORTUNITY=f"{1000 + d % 7 * 250}.00")
                 for d in range(events)]
        settings = load_settings(None, database={"url": url}, scheduler={"enabled": False},
                                 bitrix24={"enabled": True, "webhook_url": portal.webhook_url,
                                           "portal": B24_PORTAL,
                                           "application_token": portal.application_token})
        first = Services.build(settings)
        first.db.upgrade()
        assert first.bitrix24 is not None
        first.bitrix24.installer.install()
        for n, deal in enumerate(deals):
            body, content_type = portal.event_body("ONCRMDEALUPDATE", deal)
            first.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE", dedup_key=f"e{n}",
                            body=body, content_type=content_type, portal=portal.domain)
        everyone = [first, *(Services.build(settings) for _ in range(workers - 1))]
        time.sleep(25)  # the install's calls drain from the portal's bucket: start it empty
        portal.bucket.reset()
        calls_before, recorded_before = portal.http_requests, len(portal.calls)
        errors_before = portal.limit_errors
        totals: Counter[str] = Counter()
        lock = threading.Lock()

        def work(services: Services) -> None:
            counts, _ = drain(services, limit_seconds=900)
            with lock:
                totals.update(counts)

        threads = [threading.Thread(target=work, args=(s,)) for s in everyone]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        recorded = portal.calls[recorded_before:]
        updates = Counter(int(c.params["id"]) for c in recorded
                          if c.method == "crm.contact.update")
        for services in everyone:
            services.close()
        return {
            "database": url.split(":", 1)[0], "workers": workers, "events": events,
            "contacts": contacts, "seconds": seconds, "done": totals.get("done", 0),
            "calls": portal.http_requests - calls_before,
            "contact_updates": sum(updates.values()), "contacts_updated": len(updates),
            "written_twice": sum(1 for n in updates.values() if n > 1),
            "limit_errors": portal.limit_errors - errors_before,
            "entries": count_rows(url, "entries"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--database-url")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        url = options.database_url or f"sqlite:///{directory}/workers.db"
        for workers in options.workers:
            print(f"{workers} worker(s)...", file=sys.stderr)
            rows.append(run(url, workers=workers, events=options.events,
                            contacts=options.contacts))
    if options.json:
        print(json.dumps(rows, indent=2))
        return
    print("| database | workers | seconds | calls | crm.contact.update | contacts | "
          "written twice | events done | limit errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['database']} | {r['workers']} | {r['seconds']:.1f} | {r['calls']} | "
              f"{r['contact_updates']:,} | {r['contacts_updated']:,} | {r['written_twice']} | "
              f"{r['done']:,} | {r['limit_errors']} |")


if __name__ == "__main__":
    main()
