"""`loyalty-connector demo` end to end, as a user runs it: a subprocess against each sandbox CRM,
with the test-only libraries made unimportable (an install without [test] must run it) and a
LOYALTY_DATABASE__URL in the environment that the demo must not touch."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from connector.ports import free_port
from tests.test_scheduler import command

REPO = Path(__file__).resolve().parents[1]
TEST_ONLY = ("pytest", "responses", "hypothesis", "schemathesis")
BLOCKER = f"""
import sys

class _TestOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TEST_ONLY!r}:
            raise ImportError(f"{{name}} is a test dependency")
        return None

sys.meta_path.insert(0, _TestOnly())
"""
# Every step, in order; the numbers follow from the demo's program: welcome 100, 3% at Bronze
# on 12 000 and on 25 000 (the purchase that reaches Silver earns at the old rate), 500 redeemed.
STEPS = [
    r"\[1/7\] `install {crm}` against the {what} at http://127\.0\.0\.1:\d+: 12 loyalty contact "
    r"fields created",
    r"\[2/7\] seeded 3 contacts and 4 open {deal}s; each new contact got the welcome bonus",
    r"\[3/7\] {deal} \d+ won \(12 000 RUB\): \+360 points at Bronze, written back into the "
    r"{what}",
    r"\[4/7\] {deal} \d+ won: \+750 points \(at Bronze, the rate before this purchase\); spend "
    r"37 000 reaches Silver: tier up, discount 3%",
    r"\[5/7\] a robot on {deal} \d+ redeems 500 points: 500 redeemed",
    r"\[6/7\] dashboard: (?P<dashboard>http://127\.0\.0\.1:{port}/dashboard) \(any user name, "
    r"password (?P<token>\S+)\)",
    r"\[7/7\] Anna Smirnova's card page, the URL the {what} holds in her card_url field: "
    r"(?P<card>http://127\.0\.0\.1:{port}/card/[A-Za-z0-9_-]{{32}})",
]
SHOWN = r"      the {what} now shows: balance (?P<b>\d+), available (?P=b), tier (?P<t>\w+), " \
        r"discount (?P<d>[\d.]+), card (?P<number>\d{{10}})"
CRMS = {
    "bitrix24": {"what": "portal", "deal": "deal",
                 "trigger": r"trigger loyalty_tier_up \(code demo\d+\) on DEAL_\d+",
                 "outcome": "on the deal: Loyalty: redeemed 500.00 points, balance 710.00"},
    "amocrm": {"what": "account", "deal": "lead",
               "trigger": r"tag loyalty_tier_up on contact 10971465",
               "outcome": "on the lead: loyalty: redeemed 500.00, balance 710.00"},
}


def demo_env(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    path = [str(blocker), str(REPO), os.environ.get("PYTHONPATH", "")]
    # Were it read, the demo could not start: nothing listens there.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)),
            "LOYALTY_DATABASE__URL": "postgresql+psycopg://nobody@127.0.0.1:9/nothing"}


def start(tmp_path: Path, crm: str, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*command(), "demo", "--crm", crm, "--port", str(port), *extra],
                            cwd=tmp_path, env=demo_env(tmp_path), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def check_story(output: str, crm: str, port: int) -> dict[str, str]:
    """The steps in order with their numbers, what the CRM showed after each, the automation it
    recorded; the final field values read back from the simulated CRM."""
    words = CRMS[crm]
    found: dict[str, str] = {}
    position = 0
    for pattern in STEPS:
        match = re.compile(pattern.format(crm=crm, port=port, **words)).search(output, position)
        assert match is not None, f"missing {pattern!r} after:\n{output[position:]}"
        position = match.end()
        found.update(match.groupdict())
    shown = [m.groupdict() for m in re.finditer(SHOWN.format(what=words["what"]), output)]
    assert [(s["b"], s["t"], s["d"]) for s in shown] == [
        ("100", "Bronze", "0"), ("460", "Bronze", "0"), ("1210", "Silver", "3"),
        ("710", "Silver", "3")]
    assert len({s["number"] for s in shown}) == 1  # one card, written back once and kept
    assert re.search(r"automation fired: " + words["trigger"], output)
    assert words["outcome"] in output
    workdir = re.search(r"temporary SQLite database in (\S+), against", output)
    assert workdir is not None
    found["workdir"] = workdir.group(1)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("crm", ["bitrix24", "amocrm"])
def test_demo_plays_the_story_against_the_simulated_crm_and_cleans_up(
        tmp_path: Path, crm: str) -> None:
    port = free_port()
    process = start(tmp_path, crm, port, "--no-wait")
    started = time.monotonic()
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert time.monotonic() - started < 60, "the demo is meant to take well under a minute"
    found = check_story(output, crm, port)
    assert output.rstrip().endswith("demo stopped, temporary files removed")
    assert not Path(found["workdir"]).exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "blocker"]  # nothing left where it ran


@pytest.mark.slow
def test_demo_keeps_the_dashboard_and_card_page_open_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process = start(tmp_path, "bitrix24", port)
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while not lines or "Ctrl-C to stop" not in lines[-1]:
            line = process.stdout.readline()
            assert line, "the demo ended before waiting:\n" + "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        found = check_story("".join(lines), "bitrix24", port)
        dashboard = requests.get(found["dashboard"], timeout=10,
                                 auth=("owner", found["token"]))
        assert dashboard.status_code == 200 and "text/html" in dashboard.headers["Content-Type"]
        assert requests.get(found["dashboard"], timeout=10).status_code in (401, 403)
        card = requests.get(found["card"], timeout=10)
        assert card.status_code == 200 and "text/html" in card.headers["Content-Type"]
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # the test failed: stop it the way that cleans up
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, rest
    assert "demo stopped, temporary files removed" in rest
    assert not Path(found["workdir"]).exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(found["dashboard"], timeout=5)


def test_a_taken_port_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(tmp_path, "amocrm", port, "--no-wait")
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    assert re.search(rf"^error: cannot listen on 127\.0\.0\.1:{port}: .+ \(choose another "
                     r"--port\)$", output, re.MULTILINE), output
    assert "Traceback" not in output
    workdir = re.search(r"temporary SQLite database in (\S+), against", output)
    assert workdir is not None and not Path(workdir.group(1)).exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "blocker"]


def test_an_unknown_crm_is_bad_usage(tmp_path: Path) -> None:
    process = start(tmp_path, "salesforce", free_port(), "--no-wait")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "Invalid value for '--crm'" in output



def test_the_readme_shows_the_steps_the_demo_prints() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    shown = [line for line in section.splitlines() if re.match(r"\[\d/7\]", line)]
    assert len(shown) == len(STEPS)
    words = {**CRMS["bitrix24"], "crm": "bitrix24", "port": r"\d+"}
    for line, step in zip(shown, STEPS, strict=True):
        # The README abridges the card page's link.
        assert re.match(step.format(**words).split("(?P<card>")[0], line), line
