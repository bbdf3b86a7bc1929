"""Webhook ingestion: the real `serve` under load, beside a bare Flask app on the same server.

Part 1, ingestion. `loyalty-connector serve` runs as its own process (waitress, migrations;
scheduler and inbox worker idle, so only ingestion is measured) with Bitrix24
(outgoing-webhook token) and amoCRM (webhook secret) enabled. A bare Flask app that answers
200 without storing anything runs in a second process on the same waitress settings. A load
generator in a third process posts form-encoded Bitrix24 ONCRMDEALUPDATE events and amoCRM
`leads[status]` webhooks, half each, every one with a fresh id so none is a duplicate, over
HTTP/1.1 keep-alive connections:

- closed loop: N connections each send a request as soon as the last was answered, for the
  highest rate the server sustains (acknowledgements per second);
- open loop: requests are scheduled at a fixed rate (500/s) whatever the server does, and
  latency counts from the scheduled moment, so a stalled server cannot hide its queue.

The targets are measured in alternating rounds of the same run; each figure is the median
of the rounds. Afterwards the inbox rows are counted: every 200 must be a stored event.

With --with-layer REV a third target joins the rounds: the same `serve`, with the two event
routes answered by the WSGI layer that once stood in front of Flask (webhooks/intake.py as
commit REV has it, read with `git show`), so the layer's worth is measured against the Flask
routes in the same run (both figures and their ratio, also called in-process).

Part 2, processing. The inbox is filled with Bitrix24 deal events (and amoCRM lead webhooks)
and drained by the scheduler's own `process_inbox` job against the fake portal / account from
connector/sandbox: real local HTTP servers enforcing the CRM's rate limit on the real clock. Run
once with the CRM's bucket empty (the burst is available) and once with it full (every call
waits its turn at the limit), it reports events per second, ledger entries and CRM calls.

    .venv/bin/python benchmarks/ingest.py [--quick] [--database-url URL] [--json]
        [--rounds 3 --duration 10 --rate 500 --rate-duration 15 --connections 16]
        [--threads 16 --events 2000 --deals 500 --contacts 250] [--skip-processing]
        [--with-layer REV]

SQLite always runs (a file in a temporary directory); PostgreSQL too when --database-url is
given. That database is emptied first (every table dropped): its name must contain "bench"
(or pass --allow-wipe), and the shared database `test` is always refused.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.ports import free_port  # noqa: E402 (after the path above; latency.py uses it too)

FORM = "application/x-www-form-urlencoded"
B24_PORTAL = "bench.bitrix24.ru"
B24_TOKEN = "51856fefc120afa4b628cc82d3935cce"
B24_MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
AMO_SECRET = "BenchSecret0123456789"
# Stands for the unique number in a request template; substituted after URL-encoding.
SLOT = "{n}"
MARK = "8765432109"


# -- requests --------------------------------------------------------------------------------
def templates() -> list[dict[str, str]]:
    """The two kinds of request, as CRMs send them, with SLOT where each gets a fresh id."""
    from connector.sandbox.amocrm import webhook_body
    from connector.sandbox.bitrix24_payloads import event_body

    b24, _ = event_body("ONCRMDEALUPDATE", MARK, application_token=B24_TOKEN,
                        domain=B24_PORTAL, member_id=B24_MEMBER, event_handler_id=201,
                        client_endpoint=f"https://{B24_PORTAL}/rest/")
    amo = webhook_body("leads", "status", [{
        "id": MARK, "status_id": "142", "old_status_id": "20067736",
        "pipeline_id": "3104455", "price": "12500"}], subdomain="bench")
    return [
        {"path": "/bitrix24/events", "headers": "",
         "body": b24.decode().replace(MARK, SLOT)},
        # amoCRM repeats a hook it thinks failed under the same request id: a fresh one each
        # time keeps every request a new event, so none is coalesced away.
        {"path": f"/amocrm/webhooks/{AMO_SECRET}",
         "headers": f"X-Amocrm-Requestid: {SLOT}\r\n",
         "body": amo.decode().replace(MARK, SLOT)},
    ]


def build_request(template: dict[str, str], n: int) -> bytes:
    number = str(n)
    body = template["body"].replace(SLOT, number).encode()
    return (f"POST {template['path']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\n"
            f"{template['headers'].replace(SLOT, number)}\r\n").encode() + body


# -- the load generator (its own process) ----------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection; just enough parsing for waitress's answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


async def _send(connection: Connection, request: bytes, tally: Tally) -> bool:
    try:
        status = await connection.exchange(request)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        # Counted, never retried: a retry could store an event the tally calls failed.
        tally.failures[type(exc).__name__] += 1
        connection.close()
        return False
    tally.statuses[status] += 1
    return status == 200


async def closed_loop(spec: dict[str, Any], tally: Tally) -> float:
    kinds, numbers = spec["templates"], itertools.count(spec["first"])
    start = time.perf_counter()
    deadline = start + spec["duration"]

    async def client() -> None:
        connection = Connection(spec["port"])
        while time.perf_counter() < deadline:
            n = next(numbers)
            request = build_request(kinds[n % len(kinds)], n)
            sent = time.perf_counter()
            if await _send(connection, request, tally):
                tally.latencies.append(time.perf_counter() - sent)
        connection.close()

    # Requests in flight at the deadline are answered and counted, so that the inbox can be
    # compared with the acknowledgements exactly.
    await asyncio.gather(*(client() for _ in range(spec["connections"])))
    return time.perf_counter() - start


async def open_loop(spec: dict[str, Any], tally: Tally) -> float:
    kinds, numbers = spec["templates"], itertools.count(spec["first"])
    rate, total = spec["rate"], int(spec["rate"] * spec["duration"])
    due: asyncio.Queue[float | None] = asyncio.Queue()

    async def client() -> None:
        connection = Connection(spec["port"])
        while (scheduled := await due.get()) is not None:
            n = next(numbers)
            if await _send(connection, build_request(kinds[n % len(kinds)], n), tally):
                # From the scheduled moment: time spent waiting for a free connection or a
                # slow server is part of what a CRM would see.
                tally.latencies.append(time.perf_counter() - scheduled)
        connection.close()

    clients = [asyncio.ensure_future(client()) for _ in range(spec["connections"])]
    start = time.perf_counter() + 0.05
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(scheduled)
    for _ in clients:
        due.put_nowait(None)
    await asyncio.gather(*clients)
    return time.perf_counter() - start


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def generate(spec: dict[str, Any]) -> dict[str, Any]:
    tally = Tally()
    run = closed_loop if spec["mode"] == "closed" else open_loop
    elapsed = asyncio.run(run(spec, tally))
    acked = tally.statuses.get(200, 0)
    return {"mode": spec["mode"], "seconds": elapsed, "acked": acked,
            "per_second": acked / elapsed if elapsed else 0.0,
            "p50_ms": percentile(tally.latencies, 0.50) * 1000,
            "p99_ms": percentile(tally.latencies, 0.99) * 1000,
            "max_ms": max(tally.latencies, default=float("nan")) * 1000,
            "not_200": {str(k): v for k, v in tally.statuses.items() if k != 200},
            "failures": dict(tally.failures)}


# -- the bare app (its own process) ----------------------------------------------------------
def bare_app() -> Any:
    """The floor: Flask routing and a JSON answer, and nothing else (no parsing, no
    authentication, no storage)."""
    from flask import Flask, jsonify, request

    app = Flask("bare")

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.post("/<path:_path>")
    def accept(_path: str) -> Any:
        request.get_data()
        return jsonify(status="accepted", id=0)

    return app


def serve_bare(port: int, threads: int) -> None:
    """The bare app on the same WSGI server and thread count as `serve`."""
    from waitress import create_server

    app = bare_app()
    server = create_server(app, host="127.0.0.1", port=port, threads=threads)

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        server.run()
    finally:
        server.close()


# -- serve with the old WSGI layer (its own process) -----------------------------------------
LAYER_FILE = "webhooks/intake.py"


def layer_source(rev: str, scratch: Path) -> Path:
    """webhooks/intake.py as commit `rev` has it, written to the scratch directory."""
    done = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{LAYER_FILE}"],
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"--with-layer {rev}: no {LAYER_FILE} there "
                         f"({done.stderr.decode().strip()})")
    path = scratch / "intake_layer.py"
    path.write_bytes(done.stdout)
    return path


def with_layer(app: Any, layer_file: Path) -> Any:
    """The app with its two event routes answered below Flask by the layer of `layer_file`,
    wired as create_app wired it (the app's own services, body limit and outage log)."""
    from connector import logs

    spec = importlib.util.spec_from_file_location("intake_layer", layer_file)
    assert spec is not None and spec.loader is not None
    layer = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = layer  # its dataclass resolves annotations through it
    spec.loader.exec_module(layer)
    services = app.extensions["loyalty"]
    app.wsgi_app = layer.Intake(app.wsgi_app, services,
                                max_body=services.settings.server.max_body_bytes,
                                request_ids=logs.request_ids(),
                                outages=app.extensions["outage"])
    return app


def serve_layered(config: str, layer_file: Path) -> None:
    """`loyalty-connector --config <config> serve`, its app wrapped by the layer."""
    import webhooks
    from connector.cli import main as cli_main

    plain = webhooks.create_app
    # `serve` imports create_app from the package when it starts listening.
    webhooks.create_app = lambda *a, **k: with_layer(plain(*a, **k), layer_file)
    sys.argv = ["loyalty-connector", "--config", config, "serve"]
    cli_main()


# -- processes -------------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    # LOYALTY_* variables of the calling shell would override the benchmark's config file;
    # the secret key is not in that file (PostgreSQL needs it to seal stored CRM tokens).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LOYALTY_") or k == "LOYALTY_SECRET_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    acked: int = 0

    def cpu_seconds(self) -> float | None:
        """User + system CPU the server process has used (Linux /proc; else None). Per
        request, it is the one figure the other jobs on a shared machine barely move."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")
            with suppress(OSError):
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not answer /healthz in {timeout:.0f} s:\n"
                         f"{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(name: str, command: list[str], port: int, scratch: Path) -> Server:
    log = scratch / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env=child_env(), cwd=scratch)
    return Server(name, port, process, log)


def connector_command() -> list[str]:
    script = shutil.which("loyalty-connector", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-c", "from connector.cli import main; main()"]


def write_config(path: Path, *, port: int, threads: int, database_url: str) -> None:
    path.write_text(f"""\
[server]
host = "127.0.0.1"
port = {port}
threads = {threads}

[database]
url = {json.dumps(database_url)}

# `serve` also runs an inbox worker: it passes once at start (nothing to do yet) and then
# not for an hour, so the run measures ingestion alone (processing is part 2).
[inbox]
poll_seconds = 3600

[scheduler]
enabled = false

[bitrix24]
enabled = true
webhook_url = "https://{B24_PORTAL}/rest/1/benchhooksecret01/"
application_token = "{B24_TOKEN}"
member_id = "{B24_MEMBER}"

[amocrm]
enabled = true
base_url = "https://bench.amocrm.ru"
long_lived_token = "bench-long-lived-token"
webhook_secret = "{AMO_SECRET}"
""")


def run_load(server: Server, spec: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "_load",
               json.dumps({**spec, "port": server.port})]
    cpu_before = server.cpu_seconds()
    done = subprocess.run(command, capture_output=True, env=child_env(), check=False,
                          timeout=spec["duration"] + 300)
    cpu_after = server.cpu_seconds()
    if done.returncode != 0:
        raise SystemExit(f"load generator failed:\n{done.stderr.decode()[-3000:]}")
    result = json.loads(done.stdout)
    server.acked += result["acked"]
    result["cpu_ms"] = (cpu_after - cpu_before) * 1000 / max(result["acked"], 1) \
        if cpu_before is not None and cpu_after is not None else float("nan")
    return result


# -- databases -------------------------------------------------------------------------------
def check_target(url: str, allow_wipe: bool) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database or ""
    if name == "test":
        raise SystemExit("refusing to wipe the database `test` (shared); use ingest_bench")
    if not allow_wipe and "bench" not in name:
        raise SystemExit(f"this benchmark drops every table in {name!r}; use a database whose "
                         "name contains 'bench' or pass --allow-wipe")


def wipe(url: str) -> None:
    """An empty database: the SQLite file removed, or every PostgreSQL table dropped."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from connector.db import normalise_url

    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
        return
    engine = create_engine(parsed)
    try:
        with engine.begin() as connection:
            tables = connection.scalars(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).all()
            if tables:
                connection.execute(text(
                    "DROP TABLE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"))
    finally:
        engine.dispose()


def count_rows(url: str, table: str) -> int:
    from sqlalchemy import create_engine, text

    from connector.db import normalise_url

    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return int(connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
    finally:
        engine.dispose()


def backend_name(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgres") else "SQLite"


# -- part 1: ingestion -----------------------------------------------------------------------
def ingestion(url: str, scratch: Path, options: argparse.Namespace,
              progress: Callable[[str], None]) -> dict[str, Any]:
    wipe(url)
    serve_port, bare_port = free_port(), free_port()
    config = scratch / "ingest.toml"
    write_config(config, port=serve_port, threads=options.threads, database_url=url)
    servers = [
        start("serve", [*connector_command(), "--config", str(config), "serve"], serve_port,
              scratch),
        start("bare", [sys.executable, str(Path(__file__).resolve()), "_bare",
                       str(bare_port), str(options.threads)], bare_port, scratch),
    ]
    try:
        for server in servers:
            server.wait_ready()
        if options.with_layer:
            # The same database: started once serve has migrated it, loaded in turn with it.
            layer_port = free_port()
            layer_config = scratch / "ingest-layer.toml"
            write_config(layer_config, port=layer_port, threads=options.threads,
                         database_url=url)
            servers.insert(1, start("layer", [
                sys.executable, str(Path(__file__).resolve()), "_serve_layered",
                str(layer_config), str(layer_source(options.with_layer, scratch))],
                layer_port, scratch))
            servers[1].wait_ready()
        kinds = templates()
        numbers = itertools.count(1_000_000, 10_000_000)  # disjoint ids per load run

        def spec(**values: Any) -> dict[str, Any]:
            return {"templates": kinds, "first": next(numbers), **values}

        # Warm-up: first requests pay for imports, the ORM's compiled-statement cache and
        # fresh database pages; none of that belongs in the figures.
        for server in servers:
            run_load(server, spec(mode="closed", duration=options.warmup,
                                  connections=options.connections))
        closed: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        fixed: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        for round_ in range(options.rounds):
            # Alternate who goes first, so a drift in the machine's load hits both alike.
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                result = run_load(server, spec(mode="closed", duration=options.duration,
                                               connections=options.connections))
                closed[server.name].append(result)
                progress(f"  round {round_ + 1} closed loop  {server.name:<5} "
                         f"{result['per_second']:7.0f} req/s  p99 {result['p99_ms']:.1f} ms  "
                         f"CPU {result['cpu_ms']:.2f} ms/request")
        for round_ in range(options.rounds):
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                result = run_load(server, spec(mode="open", rate=options.rate,
                                               duration=options.rate_duration,
                                               connections=options.open_connections))
                fixed[server.name].append(result)
                progress(f"  round {round_ + 1} {options.rate:.0f}/s open loop {server.name:<5} "
                         f"p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms")
        stored = count_rows(url, "inbox_events")
    finally:
        for server in servers:
            server.stop()

    def med(results: list[dict[str, Any]], key: str) -> float:
        return median(r[key] for r in results)

    def problems(results: list[dict[str, Any]]) -> int:
        return sum(sum(r["not_200"].values()) + sum(r["failures"].values()) for r in results)

    figures: dict[str, Any] = {"database": backend_name(url)}
    for name in closed:
        figures[name] = {
            "throughput": med(closed[name], "per_second"),
            "throughput_runs": [round(r["per_second"]) for r in closed[name]],
            "closed_p50_ms": med(closed[name], "p50_ms"),
            "closed_p99_ms": med(closed[name], "p99_ms"),
            "cpu_ms": med(closed[name], "cpu_ms"),
            "fixed_rate": med(fixed[name], "per_second"),
            "fixed_p50_ms": med(fixed[name], "p50_ms"),
            "fixed_p99_ms": med(fixed[name], "p99_ms"),
            "fixed_p99_runs": [round(r["p99_ms"], 1) for r in fixed[name]],
            "errors": problems(closed[name]) + problems(fixed[name]),
        }
    figures["ratio"] = figures["serve"]["throughput"] / figures["bare"]["throughput"]
    figures["cpu_ratio"] = figures["bare"]["cpu_ms"] / figures["serve"]["cpu_ms"]
    if "layer" in figures:
        # Above 1: the Flask routes acknowledge more than the layer did.
        figures["layer_ratio"] = figures["serve"]["throughput"] / figures["layer"]["throughput"]
        figures["layer_cpu_ratio"] = figures["serve"]["cpu_ms"] / figures["layer"]["cpu_ms"]
    acked = sum(s.acked for s in servers if s.name != "bare")
    figures["acknowledged"] = acked
    figures["stored"] = stored
    figures["lost"] = max(acked - stored, 0)
    figures["unacknowledged_but_stored"] = max(stored - acked, 0)
    return figures


# -- part 1b: the same requests without a server --------------------------------------------
def environ_for(template: dict[str, str], n: int) -> dict[str, Any]:
    """The WSGI environ waitress would hand the app for one request of build_request's."""
    import io

    body = template["body"].replace(SLOT, str(n)).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": template["path"], "SCRIPT_NAME": "",
               "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": FORM,
               "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": "127.0.0.1",
               "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(body),
               "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
               "wsgi.multiprocess": False, "wsgi.run_once": False}
    for line in filter(None, template["headers"].replace(SLOT, str(n)).split("\r\n")):
        name, _, value = line.partition(": ")
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def in_process(url: str, scratch: Path, options: argparse.Namespace) -> dict[str, Any]:
    """CPU per request of each app called directly: one thread, no HTTP server, nothing
    competing for the GIL. The gap to part 1's server figures is what serving costs."""
    from connector.config import load_settings
    from connector.services import Services
    from webhooks import create_app

    wipe(url)
    config = scratch / "in-process.toml"
    write_config(config, port=8080, threads=1, database_url=url)  # not listened on
    services = Services.build(load_settings(config))
    services.migrate()
    kinds = templates()
    statuses: Counter[str] = Counter()

    def start_response(status: str, _headers: Any, _exc_info: Any = None) -> None:
        statuses[status.split()[0]] += 1

    def cpu_us(app: Any, first: int) -> float:
        numbers = range(first, first + options.in_process_requests)
        for n in range(first - 300, first):  # warm-up, as in part 1
            b"".join(app(environ_for(kinds[n % 2], n), start_response))
        started = time.process_time()
        for n in numbers:
            b"".join(app(environ_for(kinds[n % 2], n), start_response))
        return (time.process_time() - started) * 1e6 / len(numbers)

    try:
        with quiet_logs():
            figures = {"serve_us": cpu_us(create_app(services=services), 1_000_000),
                       "bare_us": cpu_us(bare_app(), 2_000_000)}
            if options.with_layer:
                layered = with_layer(create_app(services=services),
                                     layer_source(options.with_layer, scratch))
                figures["layer_us"] = cpu_us(layered, 3_000_000)
    finally:
        services.close()
    figures["not_200"] = sum(v for k, v in statuses.items() if k != "200")
    return figures


# -- part 2: processing ----------------------------------------------------------------------
@contextmanager
def quiet_logs() -> Iterator[None]:
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # per-item retry warnings would flood the table
    try:
        yield
    finally:
        logging.disable(previous)


def drain(services: Any, limit_seconds: float) -> tuple[dict[str, int], float]:
    """The scheduler's own job, run back to back until nothing is due."""
    from connector.scheduler import process_inbox

    totals: Counter[str] = Counter()
    started = time.perf_counter()
    while time.perf_counter() - started < limit_seconds:
        counts = process_inbox(services)
        totals.update(counts)
        if not any(counts.get(k) for k in ("done", "skipped", "failed", "dead", "deferred")):
            break
    return dict(totals), time.perf_counter() - started


def written(counts: dict[str, int]) -> int:
    # The write-back's count, whatever prefix a CRM's flush gives it.
    return sum(v for k, v in counts.items() if k.endswith("contacts_written"))


def fill_events(rng: random.Random, events: int, deals: list[int]) -> list[int]:
    # A deal is usually edited a few times in a row (stage, amount, then "won"), so
    # consecutive events often name the same deal; the rest is spread over all deals.
    chosen: list[int] = []
    while len(chosen) < events:
        chosen += [rng.choice(deals)] * rng.choice((1, 1, 2, 3, 4))
    return chosen[:events]


def bitrix24_processing(url: str, *, events: int, deals: int, contacts: int, full_bucket: bool,
                        seed: int) -> dict[str, Any]:
    from connector.config import load_settings
    from connector.crm.limiter import LeakyBucket
    from connector.sandbox import FakeBitrix24Portal
    from connector.services import Services

    wipe(url)
    rng = random.Random(seed)
    with FakeBitrix24Portal() as portal, quiet_logs():
        ids = [portal.add_contact(NAME=f"Client {n}") for n in range(contacts)]
        deal_ids = [portal.add_deal(contact_ids=[ids[d % contacts]], STAGE_ID="WON",
                                    OPPORTUNITY=f"{1000 + d % 7 * 250}.00")
                    for d in range(deals)]
        settings = load_settings(None, database={"url": url}, scheduler={"enabled": False},
                                 bitrix24={"enabled": True, "webhook_url": portal.webhook_url,
                                           "portal": B24_PORTAL,
                                           "application_token": portal.application_token})
        services = Services.build(settings)
        try:
            services.migrate()
            connector = services.bitrix24
            connector.installer.install()  # the contact fields write-back fills
            chosen = fill_events(rng, events, deal_ids)
            for deal_id in chosen:
                body, content_type = portal.event_body("ONCRMDEALUPDATE", deal_id)
                services.inbox.put(source="bitrix24", kind="ONCRMDEALUPDATE",
                                   dedup_key=f"bench:{rng.getrandbits(64):016x}", body=body,
                                   content_type=content_type, portal=portal.domain)
            # The install's calls must not eat the burst being measured: both buckets start
            # empty, or full for a portal that has been busy (every call waits its turn).
            b24 = settings.bitrix24
            limiter = connector.client.limiter = LeakyBucket.under(b24.requests_per_second,
                                                                   b24.burst)
            portal.bucket.reset()
            if full_bucket:
                portal.bucket.level = float(portal.bucket.burst)
                limiter.pause(0)
            calls_before, recorded_before = portal.http_requests, len(portal.calls)
            errors_before = portal.limit_errors
            counts, seconds = drain(services, limit_seconds=600)
            calls = portal.http_requests - calls_before
            commands = sum(1 for c in portal.calls[recorded_before:] if c.batch is not None)
            return {
                "crm": "Bitrix24", "bucket": "full" if full_bucket else "empty",
                "rate": f"{settings.bitrix24.requests_per_second:g}/s burst "
                        f"{settings.bitrix24.burst}",
                "events": events, "distinct": len(set(chosen)), "seconds": seconds,
                "per_second": events / seconds, "done": counts.get("done", 0),
                "not_done": events - counts.get("done", 0),
                "entries": count_rows(url, "entries"), "calls": calls,
                "commands": commands, "contacts_written": written(counts),
                "limit_errors": portal.limit_errors - errors_before,
                "waited_s": limiter.waited_seconds,
            }
        finally:
            services.close()


def amocrm_processing(url: str, *, events: int, deals: int, contacts: int, full_bucket: bool,
                      seed: int) -> dict[str, Any]:
    from connector.config import load_settings
    from connector.crm.limiter import LeakyBucket
    from connector.sandbox.amocrm import FakeAmoCRM, webhook_body
    from connector.services import Services

    wipe(url)
    rng = random.Random(seed)
    with FakeAmoCRM() as account, quiet_logs():
        for contact in range(1, contacts + 1):
            account.put_contact(contact)
        lead_ids = list(range(1, deals + 1))
        for lead in lead_ids:
            account.put_lead(lead, contact=(lead - 1) % contacts + 1, price=1000 + lead % 7 * 250)
        settings = load_settings(None, database={"url": url}, scheduler={"enabled": False},
                                 amocrm={"enabled": True, "base_url": account.base_url,
                                         "long_lived_token": "long-lived-token",
                                         "webhook_secret": AMO_SECRET})
        services = Services.build(settings)
        try:
            services.migrate()
            connector = services.amocrm
            connector.installer.install()
            chosen = fill_events(rng, events, lead_ids)
            for lead in chosen:
                body = webhook_body("leads", "status", [{
                    "id": str(lead), "status_id": "142", "old_status_id": "20067736",
                    "pipeline_id": "3104455", "price": "0"}])
                services.inbox.put(source="amocrm", kind="webhook",
                                   dedup_key=f"bench:{rng.getrandbits(64):016x}", body=body,
                                   content_type=FORM, portal=settings.amocrm.portal_key)
            amo = settings.amocrm
            limiter = connector.client.limiter = LeakyBucket.under(amo.requests_per_second,
                                                                   amo.burst)
            # The fake keeps its bucket to itself; set as the Bitrix24 run does (see there).
            with account._lock:
                account._level = float(account.burst) if full_bucket else 0.0
                account._at = account.clock.monotonic()
            if full_bucket:
                limiter.pause(0)
            calls_before = account.state.http_requests
            too_many_before = account.state.too_many
            counts, seconds = drain(services, limit_seconds=600)
            return {
                "crm": "amoCRM", "bucket": "full" if full_bucket else "empty",
                "rate": f"{settings.amocrm.requests_per_second:g}/s burst "
                        f"{settings.amocrm.burst}",
                "events": events, "distinct": len(set(chosen)), "seconds": seconds,
                "per_second": events / seconds, "done": counts.get("done", 0),
                "not_done": events - counts.get("done", 0),
                "entries": count_rows(url, "entries"),
                "calls": account.state.http_requests - calls_before, "commands": None,
                "contacts_written": written(counts),
                "limit_errors": account.state.too_many - too_many_before,
                "waited_s": limiter.waited_seconds,
            }
        finally:
            services.close()


# -- output ----------------------------------------------------------------------------------
def print_ingestion(figures: dict[str, Any], options: argparse.Namespace) -> None:
    serve, bare = figures["serve"], figures["bare"]
    print(f"\n### Ingestion, {figures['database']}: waitress {options.threads} threads; "
          f"closed loop {options.connections} connections x {options.duration:g} s; "
          f"open loop {options.rate:g}/s x {options.rate_duration:g} s; "
          f"median of {options.rounds} round(s)\n")
    print("| | serve | bare Flask | serve / bare |")
    print("|---|---:|---:|---:|")
    print(f"| durable acknowledgements/s (closed loop) | {serve['throughput']:,.0f} | "
          f"{bare['throughput']:,.0f} | **{figures['ratio']:.2f}** |")
    print(f"| – each round | {serve['throughput_runs']} | {bare['throughput_runs']} | |")
    print(f"| closed loop p50 / p99 ms | {serve['closed_p50_ms']:.1f} / "
          f"{serve['closed_p99_ms']:.1f} | {bare['closed_p50_ms']:.1f} / "
          f"{bare['closed_p99_ms']:.1f} | |")
    print(f"| server CPU ms per request (closed loop) | {serve['cpu_ms']:.2f} | "
          f"{bare['cpu_ms']:.2f} | {figures['cpu_ratio']:.2f} (bare / serve) |")
    print(f"| at {options.rate:g}/s: achieved req/s | {serve['fixed_rate']:,.0f} | "
          f"{bare['fixed_rate']:,.0f} | |")
    print(f"| at {options.rate:g}/s: p50 ms | {serve['fixed_p50_ms']:.1f} | "
          f"{bare['fixed_p50_ms']:.1f} | |")
    print(f"| at {options.rate:g}/s: p99 ms | **{serve['fixed_p99_ms']:.1f}** | "
          f"{bare['fixed_p99_ms']:.1f} | |")
    print(f"| – p99 each round | {serve['fixed_p99_runs']} | {bare['fixed_p99_runs']} | |")
    print(f"| non-200 answers, connection errors | {serve['errors']} | {bare['errors']} | |")
    who = "serve and the layer" if "layer" in figures else "serve"
    print(f"\nacknowledged (200) by {who}: {figures['acknowledged']:,}; rows in the inbox: "
          f"{figures['stored']:,}; **lost: {figures['lost']}** (stored without a 200: "
          f"{figures['unacknowledged_but_stored']})")
    own = figures["in_process"]
    print(f"\nthe same requests in-process (the app called directly, one thread, no server): "
          f"serve {own['serve_us']:.0f} µs, bare {own['bare_us']:.0f} µs CPU per request "
          f"(non-200: {own['not_200']})")
    if "layer" in figures:
        print_layer(figures, options)
    verdict = "met" if figures["ratio"] >= 0.8 and serve["fixed_p99_ms"] < 50 \
        and figures["lost"] == 0 else "MISSED"
    print(f"target (ratio >= 0.8, p99 < 50 ms at {options.rate:g}/s, 0 lost): {verdict}")


def print_layer(figures: dict[str, Any], options: argparse.Namespace) -> None:
    serve, layer, own = figures["serve"], figures["layer"], figures["in_process"]
    print(f"\n### The two event routes: Flask routes vs the WSGI layer of {options.with_layer}, "
          f"{figures['database']} (same run)\n")
    print("| | Flask routes | layer | Flask / layer |")
    print("|---|---:|---:|---:|")
    print(f"| durable acknowledgements/s (closed loop) | {serve['throughput']:,.0f} | "
          f"{layer['throughput']:,.0f} | **{figures['layer_ratio']:.2f}** |")
    print(f"| – each round | {serve['throughput_runs']} | {layer['throughput_runs']} | |")
    print(f"| server CPU ms per request | {serve['cpu_ms']:.3f} | {layer['cpu_ms']:.3f} | "
          f"{figures['layer_cpu_ratio']:.2f} |")
    print(f"| closed loop p50 / p99 ms | {serve['closed_p50_ms']:.1f} / "
          f"{serve['closed_p99_ms']:.1f} | {layer['closed_p50_ms']:.1f} / "
          f"{layer['closed_p99_ms']:.1f} | |")
    print(f"| at {options.rate:g}/s: p50 / p99 ms | {serve['fixed_p50_ms']:.1f} / "
          f"{serve['fixed_p99_ms']:.1f} | {layer['fixed_p50_ms']:.1f} / "
          f"{layer['fixed_p99_ms']:.1f} | |")
    print(f"| in-process CPU µs per request | {own['serve_us']:.0f} | {own['layer_us']:.0f} | "
          f"{own['serve_us'] / own['layer_us']:.2f} |")
    print(f"| non-200 answers, connection errors | {serve['errors']} | {layer['errors']} | |")


def print_processing(database: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n### Processing, {database}: `process_inbox` against the fake CRM at its limit\n")
    print("| CRM | limit | bucket at start | events (deals) | s | events/s | done | "
          "entries | CRM calls | batched commands | contacts written | 429/503 | "
          "limiter wait s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        commands = "–" if r["commands"] is None else f"{r['commands']:,}"
        print(f"| {r['crm']} | {r['rate']} | {r['bucket']} | {r['events']:,} ({r['distinct']}) "
              f"| {r['seconds']:.1f} | **{r['per_second']:,.0f}** | {r['done']:,} | "
              f"{r['entries']:,} | {r['calls']} | {commands} | {r['contacts_written']} | "
              f"{r['limit_errors']} | {r['waited_s']:.1f} |")


# -- main ------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", help="also run on this PostgreSQL database")
    parser.add_argument("--allow-wipe", action="store_true",
                        help="allow emptying a database whose name lacks 'bench'")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="closed-loop seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s")
    parser.add_argument("--rate-duration", type=float, default=15.0)
    parser.add_argument("--open-connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=16,
                        help="waitress threads (both apps; serve's default)")
    parser.add_argument("--in-process-requests", type=int, default=5000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--deals", type=int, default=500)
    parser.add_argument("--contacts", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-processing", action="store_true")
    parser.add_argument("--skip-ingestion", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--with-layer", metavar="REV",
                        help="also serve with the WSGI layer of webhooks/intake.py at commit "
                             "REV in front of Flask, and compare")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.duration, options.warmup = 1, 3.0, 1.0
        options.rate_duration = 4.0
        options.in_process_requests = 500
        options.events, options.deals, options.contacts = 300, 100, 50
    return options


def main(argv: list[str]) -> None:
    if argv[:1] == ["_load"]:
        print(json.dumps(generate(json.loads(argv[1]))))
        return
    if argv[:1] == ["_bare"]:
        serve_bare(int(argv[1]), int(argv[2]))
        return
    if argv[:1] == ["_serve_layered"]:
        serve_layered(argv[1], Path(argv[2]))
        return
    options = parse_args(argv)
    if options.database_url:
        check_target(options.database_url, options.allow_wipe)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        scratch = Path(tmp)
        urls = [f"sqlite:///{scratch}/ingest-bench.db"]
        if options.database_url:
            urls.append(options.database_url)
        for url in urls:
            result: dict[str, Any] = {"database": backend_name(url)}
            if not options.skip_ingestion:
                progress(f"{result['database']}: ingestion")
                result["ingestion"] = ingestion(url, scratch, options, progress)
                progress(f"{result['database']}: the same requests in-process")
                result["ingestion"]["in_process"] = in_process(url, scratch, options)
            if not options.skip_processing:
                rows = []
                for run, bucket in itertools.product(
                        (bitrix24_processing, amocrm_processing), (False, True)):
                    progress(f"{result['database']}: processing, "
                             f"{run.__name__.split('_')[0]}, bucket "
                             f"{'full' if bucket else 'empty'}")
                    rows.append(run(url, events=options.events, deals=options.deals,
                                    contacts=options.contacts, full_bucket=bucket,
                                    seed=options.seed))
                result["processing"] = rows
            results.append(result)
    if options.json:
        print(json.dumps({"machine": {"nproc": os.cpu_count(),
                                      "python": platform.python_version()},
                          "results": results}, indent=2))
        return
    for result in results:
        if "ingestion" in result:
            print_ingestion(result["ingestion"], options)
        if "processing" in result:
            print_processing(result["database"], result["processing"])


if __name__ == "__main__":
    main(sys.argv[1:])
