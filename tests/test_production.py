"""Running it in production: gunicorn serving `webhooks.wsgi:app()` for real (and no job in
its workers), the systemd units and proxy examples shipped in the package, and a package
whose modules need nothing from the test stack."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from connector.inbox import InboxEvent
from connector.job_runs import JobRun
from connector.ports import free_port
from connector.sandbox.amocrm import webhook_body
from tests.conftest import fresh_services, make_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "connector" / "deploy"
PACKAGES = ("connector", "mappings", "webhooks")
TEST_STACK = ("pytest", "_pytest", "responses", "hypothesis", "schemathesis", "ruff")
SECRET = "Wh00kSecret0123456789"


def write_config(tmp_path: Path, database_url: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n\n'
        '[inbox]\npoll_seconds = 0.5\n\n'
        '[amocrm]\nenabled = true\nbase_url = "https://example.amocrm.ru"\n'
        f'long_lived_token = "not-called"\nwebhook_secret = "{SECRET}"\n', encoding="utf-8")
    return config


@pytest.fixture
def gunicorn() -> str:
    pytest.importorskip("gunicorn", reason="gunicorn comes with the [production] extra")
    return str(Path(sys.executable).with_name("gunicorn"))


def start(gunicorn: str, config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOYALTY_CONFIG": str(config)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [gunicorn, "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
             "--workers", "2", "--threads", "4", "webhooks.wsgi:app()"],
            cwd=config.parent, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def stopping() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.storage
@pytest.mark.slow
def test_gunicorn_serves_the_app_and_runs_no_jobs(
        tmp_path: Path, database_url: str, gunicorn: str,
        stopping: list[subprocess.Popen[bytes]]) -> None:
    services = fresh_services(make_settings(tmp_path, database_url))  # `db upgrade` done
    config = write_config(tmp_path, database_url)
    port = free_port()
    log = tmp_path / "gunicorn.log"
    server = start(gunicorn, config, port, log)
    stopping.append(server)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    answer = None
    while time.monotonic() < deadline and server.poll() is None:
        try:
            # The master listens before its workers have loaded the app: a first request
            # may wait for one.
            answer = requests.get(f"{base}/healthz", timeout=15)
            break
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    assert answer is not None, log.read_text(errors="replace")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ok"
    stored = requests.post(f"{base}/amocrm/webhooks/{SECRET}",
                           data=webhook_body("leads", "status", [{"id": "1"}]),
                           headers={"Content-Type": "application/x-www-form-urlencoded"},
                           timeout=5)
    assert stored.status_code == 200, stored.text
    time.sleep(2)  # four of the worker's polls, had a worker started
    with services.db.transaction(write=False) as session:
        assert session.scalars(select(InboxEvent.status)).all() == ["pending"]
        assert session.scalar(select(func.count()).select_from(JobRun)) == 0
    if not services.db.is_postgres:
        assert not list(tmp_path.glob("*.scheduler.lock"))  # no scheduler took the lead
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=40) == 0, log.read_text(errors="replace")
    services.close()


def test_gunicorn_stops_on_a_missing_database_instead_of_making_one(
        tmp_path: Path, gunicorn: str, stopping: list[subprocess.Popen[bytes]]) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/absent.db")
    log = tmp_path / "gunicorn.log"
    server = start(gunicorn, config, free_port(), log)
    stopping.append(server)
    assert server.wait(timeout=60) != 0
    # In program.language, Russian by default, as the CLI's own refusal.
    assert f"error: нет базы данных в {tmp_path}/absent.db: выполните `loyalty-connector db " \
        "upgrade`" in log.read_text(errors="replace")
    assert not (tmp_path / "absent.db").exists()


def units(tmp_path: Path) -> list[Path]:
    """The shipped units with their install prefix pointing at this environment, so their
    executables exist where systemd-analyze looks."""
    copies = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/loyalty-connector/venv", sys.prefix))
        copies.append(copy)
    return copies


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    found = units(tmp_path)
    assert [u.name for u in found] == ["loyalty-scheduler.service", "loyalty-web.service",
                                       "loyalty-worker.service"]
    checked = subprocess.run([analyze, "verify", *map(str, found)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr


def test_units_run_the_three_roles_and_the_proxies_reach_the_web_unit(tmp_path: Path) -> None:
    starts = {u.name: re.search(r"^ExecStart=(.*)$", u.read_text().replace("\\\n", " "),
                                re.M) for u in units(tmp_path)}
    commands = {name: " ".join(m[1].split()) for name, m in starts.items() if m}
    assert commands["loyalty-worker.service"].endswith("/bin/loyalty-connector worker")
    assert commands["loyalty-scheduler.service"].endswith("/bin/loyalty-connector scheduler")
    web = commands["loyalty-web.service"]
    assert "/bin/gunicorn " in web and web.endswith("'webhooks.wsgi:app()'")
    bind = re.search(r"--bind (\S+)", web)
    assert bind is not None
    assert f"reverse_proxy {bind[1]}" in (DEPLOY / "Caddyfile").read_text()
    assert f"server {bind[1]};" in (DEPLOY / "nginx.conf").read_text()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key for nginx -t, which opens the files the example names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loyalty.example.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    chain, private = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return chain, private


def test_caddy_reads_the_caddyfile() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed here")
    checked = subprocess.run([caddy, "validate", "--adapter", "caddyfile", "--config",
                              str(DEPLOY / "Caddyfile")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_nginx_reads_the_site(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.skip("nginx is not installed here")
    chain, private = self_signed(tmp_path)
    site = tmp_path / "site.conf"
    site.write_text((DEPLOY / "nginx.conf").read_text()
                    .replace("/etc/letsencrypt/live/loyalty.example.com/fullchain.pem",
                             str(chain))
                    .replace("/etc/letsencrypt/live/loyalty.example.com/privkey.pem",
                             str(private)))
    (tmp_path / "logs").mkdir()
    main = tmp_path / "main.conf"
    # The directories and logs nginx -t opens, here rather than under /var.
    temp = " ".join(f"{kind}_temp_path {tmp_path}/{kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    temp += f" access_log {tmp_path}/logs/access.log;"
    main.write_text(f"error_log {tmp_path}/logs/error.log;\npid {tmp_path}/nginx.pid;\n"
                    f"events {{}}\nhttp {{ {temp} include {site}; }}\n")
    checked = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_every_module_imports_without_the_test_stack() -> None:
    program = f"""
import importlib, pkgutil, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TEST_STACK!r}:
            raise ImportError(f"{{name}} is a test dependency")
sys.meta_path.insert(0, Refuse())
count = 0
for package in {PACKAGES!r}:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        count += 1
print(count)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 100


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_what_the_package_imports_is_a_runtime_dependency() -> None:
    """Every third-party module the package imports comes from a distribution named in
    [project] dependencies, not only in an extra (gunicorn runs the app, never imported)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    owners = importlib.metadata.packages_distributions()
    imported: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - set(PACKAGES)
    needed = {name: {_requirement_name(d) for d in owners.get(name, [])}
              for name in third_party}
    assert all(needed.values()), {n: d for n, d in needed.items() if not d}
    assert {name for name, dists in needed.items() if not dists & declared} == set()


@pytest.mark.slow
def test_the_wheel_ships_the_deploy_examples_and_the_migrations(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True,
                           text=True, timeout=300)
    if built.returncode != 0 and "No matching distribution found for setuptools" in \
            built.stderr:
        pytest.skip("no package index to build the wheel with")
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("loyalty_connector-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"connector/deploy/Caddyfile", "connector/deploy/nginx.conf",
            "connector/deploy/systemd/loyalty-web.service",
            "connector/deploy/systemd/loyalty-worker.service",
            "connector/deploy/systemd/loyalty-scheduler.service",
            "webhooks/wsgi.py", "connector/migrations/script.py.mako"} <= names
    assert any(n.startswith("connector/migrations/versions/0001_") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(
        n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert not [r for r in runtime if _requirement_name(r) in TEST_STACK]
    assert 'gunicorn>=23; extra == "production"' in requires
