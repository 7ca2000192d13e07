"""Benchmarks: the demo full sync at several sizes, and the email-key throughput.

Run with `make bench` (or `make bench ARGS="--contacts 10000 100000 1000000"`). Timings are
medians of the repeats; compare figures measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mailbridge.email_key import email_keys, try_email_key

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def email_key_throughput(rows: int, repeats: int) -> dict[str, float]:
    """Keys of distinct addresses: cold (validated) and warm (the per-sync cache answers)."""
    addresses = [f"Vorname.Nachname.{i}@Firma-{i % 997}.de" for i in range(rows)]
    cold, warm = [], []
    for _ in range(repeats):
        try_email_key.cache_clear()
        started = time.perf_counter()
        email_keys(addresses)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        email_keys(addresses)
        warm.append(time.perf_counter() - started)
    return {
        "rows": rows,
        "cold_rows_per_second": round(rows / statistics.median(cold)),
        "warm_rows_per_second": round(rows / statistics.median(warm)),
    }


def demo_full_sync(contacts: int, repeats: int) -> dict[str, float]:
    """`mailbridge demo --contacts N`: generate (cached), load the CRM, start the sandbox, full sync."""
    syncs, totals = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "mailbridge.cli", "demo", "--contacts", str(contacts)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        totals.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"demo --contacts {contacts} failed:\n{result.stdout}\n{result.stderr}")
        match = re.search(r"Full sync of [\d,]+ contacts: ([\d.]+)s", result.stdout)
        if match is None:
            raise SystemExit(f"no timing in the demo's output:\n{result.stdout}")
        syncs.append(float(match.group(1)))
    return {
        "contacts": contacts,
        "full_sync_median_seconds": round(statistics.median(syncs), 1),
        "demo_wall_median_seconds": round(statistics.median(totals), 1),
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=1, help="full syncs per size")
    args = parser.parse_args()
    report = {
        "email_key": email_key_throughput(200_000, 3),
        "full_sync": [demo_full_sync(n, args.repeats) for n in args.contacts],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2), "utf-8")
    print(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
