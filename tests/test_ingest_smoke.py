"""The ingestion benchmark's machinery, briefly: the real `serve` process under a second
process's load acknowledges every event only once it is in the inbox."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "ingest.py"


def load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ingest_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_acknowledged_event_is_in_the_inbox(tmp_path: Path) -> None:
    ingest = load_benchmark()
    url = f"sqlite:///{tmp_path}/smoke.db"
    port = ingest.free_port()
    config = tmp_path / "smoke.toml"
    ingest.write_config(config, port=port, threads=4, database_url=url)
    server = ingest.start("serve", [*ingest.connector_command(), "--config", str(config),
                                    "serve"], port, tmp_path)
    try:
        server.wait_ready(timeout=60)
        kinds = ingest.templates()
        closed = ingest.run_load(server, {"templates": kinds, "first": 1, "mode": "closed",
                                          "duration": 1.0, "connections": 4})
        fixed = ingest.run_load(server, {"templates": kinds, "first": 10_000_000,
                                         "mode": "open", "rate": 50, "duration": 1.0,
                                         "connections": 4})
    finally:
        server.stop()
    for result in (closed, fixed):
        assert result["acked"] > 0
        assert result["not_200"] == {} and result["failures"] == {}
    assert fixed["acked"] == 50
    assert ingest.count_rows(url, "inbox_events") == server.acked == \
        closed["acked"] + fixed["acked"]


def test_the_in_process_figures_come_from_stored_events(tmp_path: Path) -> None:
    ingest = load_benchmark()
    url = f"sqlite:///{tmp_path}/in-process.db"
    options = ingest.parse_args(["--quick"])
    options.in_process_requests = 50
    figures = ingest.in_process(url, tmp_path, options)
    assert figures["not_200"] == 0
    assert figures["serve_us"] > 0 and figures["bare_us"] > 0
    # Every request the serve app answered (warm-up included) is an event in the inbox.
    assert ingest.count_rows(url, "inbox_events") == 300 + 50
