"""Event to CRM: how long from a CRM's event reaching the connector to the field written back.

The real `serve` (or `web` + `worker`, `--processes split`) runs as child processes against a
sandbox CRM served from this process, every request of which is held `--rtt-ms` (a CRM one
network round trip away; the whole round trip is spent before the request runs, so a call
is recorded one round trip after it was sent). A steady stream of events is posted to the
connector, each about a deal of its own, so each one makes one write:

- Bitrix24: ONCRMDEALUPDATE for a won deal (the connector reads the deal in a `batch`, accrues,
  writes the contact's balance field with `crm.contact.update` in a `batch`), and every
  `--robot-every`-th event a `loyalty_balance` robot call instead (the deal read, then the
  answer by `bizproc.event.send`);
- amoCRM: a `leads[status]` webhook for a won lead (GET /api/v4/leads, then PATCH
  /api/v4/contacts).

Measured per event: from just before its POST to the moment the sandbox ran the write (the
contact update, or `bizproc.event.send` for a robot). The floor is the CRM round trips the
work needs one after the other (2 for each kind here) x the round trip; the ratio is the
figure over the floor. The CRM's own limit errors (Bitrix24's 503 QUERY_LIMIT_EXCEEDED,
amoCRM's 429) and the busiest second are counted too.

    .venv/bin/python benchmarks/latency.py [--crm bitrix24 amocrm] [--rtt-ms 50]
        [--rate 1.0] [--duration 60] [--robot-every 3] [--processes serve|split]
        [--poll-seconds 2.0] [--no-wake] [--batch-wait-ms 20] [--database-url URL] [--json]

`--no-wake` runs the worker as before the wake-up existed (the poll alone). SQLite (a file in
a temporary directory) unless --database-url is given; that database is emptied first (every
table dropped): its name must contain "bench" (or pass --allow-wipe).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ingest import (  # noqa: E402 (after the path above)
    Server,
    check_target,
    connector_command,
    free_port,
    quiet_logs,
    start,
    wipe,
)

AMO_SECRET = "LatencyBenchSecret0123456789"
# Seals the CRM tokens the database stores (PostgreSQL refuses to start without one); new
# for every run of this script, as its database is.
SECRET_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()
FLOOR_TRIPS = {"event": 2, "robot": 2}


@dataclass
class Sent:
    kind: str  # "event" or "robot"
    at: float  # time.time() just before the POST
    key: Any  # what identifies its write at the CRM: a contact id or a robot's event token
    status: int = 0
    written: float | None = None
    deal: str | None = None  # Bitrix24: the deal, whose read is the first call
    first: float | None = None  # when that read ran


@dataclass
class Run:
    crm: str
    sent: list[Sent] = field(default_factory=list)
    calls: int = 0
    limit_errors: int = 0
    busiest_second: int = 0
    limit: str = ""


def config_text(*, port: int, database_url: str, options: argparse.Namespace,
                crm: dict[str, Any]) -> str:
    section = crm.pop("_section")
    lines = [
        f'secret_key = "{SECRET_KEY}"',
        "[server]", 'host = "127.0.0.1"', f"port = {port}", "threads = 8",
        "[database]", f"url = {json.dumps(database_url)}",
        "[inbox]", f"poll_seconds = {options.poll_seconds}",
        f"wake = {'false' if options.no_wake else 'true'}",
        f"batch_wait_ms = {options.batch_wait_ms}",
        # The reconcile and lifecycle jobs would make CRM calls of their own.
        "[scheduler]", "enabled = false",
        f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in crm.items()),
    ]
    return "\n".join(lines) + "\n"


def settings_for(database_url: str, crm: dict[str, Any]) -> Any:
    from connector.config import load_settings

    crm = dict(crm)
    section = crm.pop("_section")
    return load_settings(None, database={"url": database_url}, scheduler={"enabled": False},
                         secret_key=SECRET_KEY, **{section: crm})


@contextmanager
def connector(options: argparse.Namespace, database_url: str, scratch: Path,
              crm: dict[str, Any]) -> Iterator[int]:
    """The service's processes, up and answering; yields the port events go to."""
    port = free_port()
    config = scratch / "latency.toml"
    config.write_text(config_text(port=port, database_url=database_url, options=options,
                                  crm=dict(crm)), encoding="utf-8")
    base = [*connector_command(), "--config", str(config)]
    servers: list[Server] = []
    try:
        if options.processes == "serve":
            servers.append(start("serve", [*base, "serve"], port, scratch))
        else:
            servers.append(start("web", [*base, "web"], port, scratch))
            servers.append(start("worker", [*base, "worker"], port, scratch))
        servers[0].wait_ready()
        time.sleep(1.0)  # the worker's first pass, the listener's LISTEN
        yield port
    finally:
        for server in servers:
            server.stop()


def post(connection: http.client.HTTPConnection, path: str, body: bytes,
         content_type: str, headers: dict[str, str] | None = None) -> int:
    connection.request("POST", path, body=body,
                       headers={"Content-Type": content_type, **(headers or {})})
    answer = connection.getresponse()
    answer.read()
    return answer.status


def stream(options: argparse.Namespace, port: int,
           make: Callable[[int], tuple[str, Any, str, bytes, str, dict[str, str]]]) -> list[Sent]:
    """Post `rate` events a second for `duration` seconds, on a fixed schedule."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent: list[Sent] = []
    total = int(options.rate * options.duration)
    begin = time.monotonic() + 0.1
    for n in range(total):
        delay = begin + n / options.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        kind, key, path, body, content_type, headers = make(n)
        record = Sent(kind, time.time(), key, deal=str(n))
        record.status = post(connection, path, body, content_type, headers)
        sent.append(record)
    connection.close()
    return sent


def wait_written(sent: list[Sent], find: Callable[[Sent], float | None],
                 timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for record in sent:
            if record.written is None:
                record.written = find(record)
        if all(r.written is not None for r in sent) or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def bitrix24_run(options: argparse.Namespace, database_url: str, scratch: Path) -> Run:
    from connector.sandbox import FakeBitrix24Portal
    from connector.services import Services

    rtt = options.rtt_ms / 1000
    total = int(options.rate * options.duration)
    with FakeBitrix24Portal(latency=rtt) as portal, quiet_logs():
        contacts = [portal.add_contact(NAME=f"Client {n}") for n in range(total)]
        deals = [portal.add_deal(contact_ids=[contacts[n]], STAGE_ID="WON",
                                 OPPORTUNITY=f"{1000 + n % 7 * 250}.00") for n in range(total)]
        crm = {"_section": "bitrix24", "enabled": True, "webhook_url": portal.webhook_url,
               "portal": portal.url, "application_token": portal.application_token,
               "member_id": portal.member_id}
        services = Services.build(settings_for(database_url, crm))
        try:
            services.migrate()
            assert services.bitrix24 is not None
            services.bitrix24.installer.install()  # the contact fields the write-back fills
        finally:
            services.close()

        def make(n: int) -> tuple[str, Any, str, bytes, str, dict[str, str]]:
            if options.robot_every and n % options.robot_every == options.robot_every - 1:
                body, content_type = portal.robot_body("loyalty_balance", f"DEAL_{deals[n]}",
                                                       {})
                token = body.decode()  # the token is in the body; found again below
                return "robot", _event_token(token), "/bitrix24/robots", body, content_type, {}
            body, content_type = portal.event_body("ONCRMDEALUPDATE", deals[n])
            return "event", str(contacts[n]), "/bitrix24/events", body, content_type, {}

        def find(record: Sent) -> float | None:
            with portal.lock:
                calls = list(portal.calls)
            for call in calls:
                if call.status != 200:
                    continue
                if call.method == "crm.deal.get" and record.first is None \
                        and str(call.params.get("id")) == str(deals[int(record.deal or 0)]):
                    record.first = call.at
                if record.kind == "robot" and call.method == "bizproc.event.send" \
                        and _ci(call.params, "event_token") == record.key:
                    return call.at
                if record.kind == "event" and call.method == "crm.contact.update" \
                        and str(call.params.get("id")) == record.key:
                    return call.at
            return None

        with connector(options, database_url, scratch, crm) as port:
            portal.bucket.reset()
            before_calls, before_errors = portal.http_requests, portal.limit_errors
            log_from = time.monotonic()
            sent = stream(options, port, make)
            wait_written(sent, find, timeout=60)
            run = Run("Bitrix24", sent, portal.http_requests - before_calls,
                      portal.limit_errors - before_errors,
                      _busiest(portal.request_log.times, log_from),
                      f"{portal.bucket.rate:g}/s burst {portal.bucket.burst}")
    return run


def _ci(params: dict[str, Any], name: str) -> Any:
    """A parameter whatever its case: Bitrix24 method parameters are case-insensitive."""
    return next((v for k, v in params.items() if k.lower() == name), None)


def _event_token(form: str) -> str:
    from urllib.parse import parse_qs

    return parse_qs(form)["event_token"][0]


def amocrm_run(options: argparse.Namespace, database_url: str, scratch: Path) -> Run:
    from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
    from connector.services import Services

    rtt = options.rtt_ms / 1000
    total = int(options.rate * options.duration)
    with FakeAmoCRM(latency=rtt) as account, quiet_logs():
        for n in range(1, total + 1):
            account.put_contact(n)
            account.put_lead(n, contact=n, price=1000 + n % 7 * 250)
        crm = {"_section": "amocrm", "enabled": True, "base_url": account.base_url,
               "subdomain": "example", "long_lived_token": "long-lived-token",
               "webhook_secret": AMO_SECRET}
        services = Services.build(settings_for(database_url, crm))
        try:
            services.migrate()
            assert services.amocrm is not None
            services.amocrm.installer.install()
        finally:
            services.close()

        def make(n: int) -> tuple[str, Any, str, bytes, str, dict[str, str]]:
            lead = n + 1
            body = webhook_body("leads", "status", [{
                "id": str(lead), "status_id": "142", "old_status_id": "20067736",
                "pipeline_id": "3104455", "price": "0"}])
            return ("event", lead, f"/amocrm/webhooks/{AMO_SECRET}", body,
                    "application/x-www-form-urlencoded", {"X-Amocrm-Requestid": f"bench{lead}"})

        def find(record: Sent) -> float | None:
            with account._lock:
                patches = list(zip(account.state.contact_patches,
                                   account.state.contact_patched_at, strict=True))
            for fields, at in patches:
                if any(int(item["id"]) == record.key for item in fields):
                    return at
            return None

        with connector(options, database_url, scratch, crm) as port:
            with account._lock:  # an empty bucket: the install's calls are long past
                account._level, account._at = 0.0, account.clock.monotonic()
            before_calls, before_errors = account.state.http_requests, account.state.too_many
            log_from = time.monotonic()
            sent = stream(options, port, make)
            wait_written(sent, find, timeout=60)
            return Run("amoCRM", sent, account.state.http_requests - before_calls,
                       account.state.too_many - before_errors,
                       _busiest(account.request_log.times, log_from),
                       f"{account.rate:g}/s burst {account.burst}")


def _busiest(times: list[float], since: float) -> int:
    times = [t for t in times if t >= since]
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(run: Run, options: argparse.Namespace) -> dict[str, Any]:
    rtt = options.rtt_ms / 1000
    rows: dict[str, Any] = {"crm": run.crm, "rtt_ms": options.rtt_ms, "rate": options.rate,
                            "processes": options.processes,
                            "wake": not options.no_wake, "poll_seconds": options.poll_seconds,
                            "calls": run.calls, "limit_errors": run.limit_errors,
                            "busiest_second": run.busiest_second, "limit": run.limit,
                            "refused": sum(1 for s in run.sent if s.status != 200)}
    for kind in ("event", "robot"):
        done = [s.written - s.at for s in run.sent if s.kind == kind and s.written is not None]
        lost = sum(1 for s in run.sent if s.kind == kind and s.written is None)
        if not done and not lost:
            continue
        floor = FLOOR_TRIPS[kind] * rtt
        p50, p99 = (percentile(done, 0.5), percentile(done, 0.99)) if done else (0.0, 0.0)
        rows[kind] = {"count": len(done), "not_written": lost, "floor_ms": floor * 1000,
                      "p50_ms": p50 * 1000, "p99_ms": p99 * 1000,
                      "mean_ms": statistics.fmean(done) * 1000 if done else 0.0,
                      "p50_ratio": p50 / floor, "p99_ratio": p99 / floor}
        # Where the time over the floor went (Bitrix24, whose portal records every call):
        # before the first call (the wake, the batch wait, the claim) and between the read's
        # answer and the write (the ledger's work, the write-back's claims).
        split = [(s.first - s.at - rtt, s.written - s.first - rtt) for s in run.sent
                 if s.kind == kind and s.first is not None and s.written is not None]
        if split:
            rows[kind]["before_first_call_p50_ms"] = percentile([a for a, _ in split],
                                                                0.5) * 1000
            rows[kind]["between_calls_p50_ms"] = percentile([b for _, b in split], 0.5) * 1000
    return rows


def show(row: dict[str, Any]) -> None:
    how = f"{row['processes']}, {'wake' if row['wake'] else 'poll only'}" \
          f" (poll {row['poll_seconds']:g} s)"
    print(f"\n{row['crm']}: rtt {row['rtt_ms']:g} ms, {row['rate']:g} events/s, {how}")
    for kind in ("event", "robot"):
        if kind in row:
            k = row[kind]
            print(f"  {kind:<6} n={k['count']:<4} floor {k['floor_ms']:.0f} ms  "
                  f"p50 {k['p50_ms']:.0f} ms ({k['p50_ratio']:.2f}x)  "
                  f"p99 {k['p99_ms']:.0f} ms ({k['p99_ratio']:.2f}x)  "
                  f"not written {k['not_written']}")
            if "between_calls_p50_ms" in k:
                print(f"         over the round trips (p50): {k['before_first_call_p50_ms']:.0f} ms"
                      f" before the first call, {k['between_calls_p50_ms']:.0f} ms between the"
                      " calls")
    print(f"  CRM calls {row['calls']}, limit errors {row['limit_errors']}, busiest second "
          f"{row['busiest_second']} requests (limit {row['limit']}), refused {row['refused']}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crm", nargs="+", choices=("bitrix24", "amocrm"),
                        default=["bitrix24", "amocrm"])
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--rate", type=float, default=1.0, help="events per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of events")
    parser.add_argument("--robot-every", type=int, default=3,
                        help="Bitrix24: every n-th event is a robot call (0: none)")
    parser.add_argument("--processes", choices=("serve", "split"), default="serve")
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--no-wake", action="store_true", help="the poll alone (as before)")
    parser.add_argument("--database-url")
    parser.add_argument("--allow-wipe", action="store_true")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    options = parse_args(argv)
    if options.database_url:
        check_target(options.database_url, options.allow_wipe)
    rows = []
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        for crm in options.crm:
            url = options.database_url or f"sqlite:///{scratch / (crm + '.db')}"
            wipe(url)
            run = (bitrix24_run if crm == "bitrix24" else amocrm_run)(options, url, scratch)
            row = summary(run, options)
            rows.append(row)
            if not options.json:
                show(row)
    if options.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
