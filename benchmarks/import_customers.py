"""How long `import customers --apply` takes for 100,000 rows.

Generates a CSV of `--rows` customers named by contact id (every row an opening balance;
a third with an expiry date, a fifth with a tier, a quarter with a birthday, a tenth with a
card number, a seventh with a referrer: the contact id of an earlier row, so the link is
made to an account this same import opens), then runs the real command as a separate
process on a fresh database (`db upgrade` first, not timed) and reports the wall time of
the command: reading the file, the plan, the bulk writes, the referral links and the verify
of the imported accounts. No CRM is enabled, so the file has no phone or e-mail column:
finding a contact by phone or e-mail is a CRM lookup (Bitrix24 50 values a call, amoCRM one
a call, at the CRM's rate limit), as is the write-back; see README. Then the same command
again (a repeat: every row unchanged), and `verify` over the whole ledger.

    .venv/bin/python benchmarks/import_customers.py [--rows 100000]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_bench] [--json]

The SQLite file is a fresh one in a temporary directory. A PostgreSQL database is used as
given: its accounts of the portal "bench.bitrix24.ru" must not exist yet (use an empty
database).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PORTAL = "bench.bitrix24.ru"
TIERS = ("Bronze", "Silver", "Gold")


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("contact_id,balance,expires,tier,birthday,card_number,referrer\n")
        for n in range(1, rows + 1):
            balance = f"{rng.randint(1, 500_000) / 100:.2f}"
            expires = f"2099-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" \
                if n % 3 == 0 else ""
            tier = TIERS[rng.randrange(3)] if n % 5 == 0 else ""
            birthday = f"19{rng.randint(50, 99)}-{rng.randint(1, 12):02d}-" \
                       f"{rng.randint(1, 28):02d}" if n % 4 == 0 else ""
            card = str(8_000_000_000 + n) if n % 10 == 0 else ""
            # An earlier row's contact: never oneself, never a cycle.
            referrer = str(100_000 + rng.randint(1, n - 1)) if n % 7 == 0 else ""
            handle.write(f"{100_000 + n},{balance},{expires},{tier},{birthday},{card},"
                         f"{referrer}\n")


def command(config: Path, *args: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds, CPU seconds (user + system: less swayed by other jobs on a shared
    machine) and the finished command."""
    started, used = time.perf_counter(), _children_cpu()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "loyalty-connector"), "--config",
                           str(config), *args], capture_output=True, text=True, check=False,
                          env={**os.environ})
    return time.perf_counter() - started, _children_cpu() - used, done


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = args.database_url or f"sqlite:///{folder}/bench.db"
        config = folder / "config.toml"
        config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
        csv = folder / "customers.csv"
        generate(csv, args.rows)
        _, _, upgraded = command(config, "db", "upgrade")
        if upgraded.returncode:
            sys.exit(upgraded.stderr)
        results: dict[str, Any] = {"rows": args.rows, "database": url.split(":", 1)[0]}
        for name in ("first", "repeat"):
            # The text report, as an operator runs it (one line per row, then the summary).
            seconds, cpu, done = command(config, "import", "customers", str(csv), "--crm",
                                         "bitrix24", "--portal", PORTAL, "--apply")
            if done.returncode:
                sys.exit(f"import failed ({done.returncode}): {done.stderr[-2000:]}")
            summary = done.stdout.splitlines()[-3:-1]  # "applied to ...", "verify: ..."
            results[name] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                             "summary": summary}
        seconds, cpu, done = command(config, "verify")
        results["verify_all"] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                                 "output": done.stdout.strip()}
        results["load_average"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.rows:,} rows on {results['database']}")
    for name, label in (("first", "import --apply"), ("repeat", "the same again")):
        print(f"  {label}: {results[name]['seconds']:.2f} s "
              f"(CPU {results[name]['cpu_seconds']:.2f} s)")
        for line in results[name]["summary"]:
            print(f"    {line}")
    print(f"  verify (whole ledger): {results['verify_all']['seconds']:.2f} s "
          f"(CPU {results['verify_all']['cpu_seconds']:.2f} s): "
          f"{results['verify_all']['output']}")
    print(f"  load average at the end: {results['load_average']:.1f}")

if __name__ == "__main__":
    main()
