"""Benchmarks: the demo full sync at several sizes, the email-key throughput, pushing 10k
actions (the writer alone and the whole push), and 10k CRM writes.

Run with `make bench` (or `make bench ARGS="--contacts 10000 100000 1000000"`). Timings are
medians of the repeats; compare figures measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mailbridge.email_key import email_keys, try_email_key

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")  # dlt's schema-hint notes drown the figures
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


def push_actions(actions: int, repeats: int) -> dict[str, float]:
    """The Mailchimp writer pushing `actions` transmits to the emulator, 10 connections at most."""

    from mailbridge.config import EspAccount
    from pipelines.mailchimp.writer import MailchimpWriter
    from pipelines.writers import EspWrite
    from sandbox.generator import generate_scenario
    from sandbox.mailchimp.app import MailchimpEmulator
    from sandbox.server import serve_in_background

    timings, requests, peak = [], 0, 0
    for repeat in range(repeats):
        emulator = MailchimpEmulator.from_scenario(generate_scenario(contacts=100, seed=1))
        with serve_in_background(emulator.app) as server:
            os.environ["MAILBRIDGE_BENCH_KEY"] = "sandbox0brandmain00000000000000-us1"
            account = EspAccount(
                name="brand_main", type="mailchimp", api_key_env="MAILBRIDGE_BENCH_KEY", base_url=f"{server.url}/3.0"
            )
            writer = MailchimpWriter(account)
            writes = [EspWrite(f"a{i}", "transmit", f"push.{repeat}.{i}@beispiel.de") for i in range(actions)]
            started = time.perf_counter()
            outcomes = writer.write("nl0001", writes)
            timings.append(time.perf_counter() - started)
            assert all(outcome.status == "sent" for outcome in outcomes)
            requests, peak = writer.requests, max(emulator.peak_in_flight.values())
    return {
        "actions": actions,
        "median_seconds": round(statistics.median(timings), 2),
        "actions_per_second": round(actions / statistics.median(timings)),
        "write_requests": requests,
        "peak_connections": peak,
    }


def crm_write_back(actions: int, repeats: int) -> dict[str, float]:
    """CRM write-back on SQLite: `actions` set_status writes, each behind its optimistic check."""
    import tempfile
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from mailbridge.config import load_config
    from pipelines.crm import _as_utc
    from pipelines.crm.writer import CrmAction, CrmWriter
    from sandbox.crm_db import write_crm
    from sandbox.generator import generate_scenario

    config = load_config(ROOT / "mailbridge.yaml")
    scenario = generate_scenario(contacts=actions, seed=3)
    timings = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/crm.sqlite"
            write_crm(scenario.tables, url, config.crm)
            engine = sa.create_engine(url)
            with engine.connect() as connection:
                rows = connection.execute(
                    sa.text("select kontakt_id, verteiler_id, status, status_datum from verteiler_zuordnungen")
                ).fetchall()[:actions]
            engine.dispose()
            batch = [
                CrmAction(
                    action_id=f"a{i}",
                    action="set_status",
                    action_source="policy",
                    list_link_id="bench",
                    crm_list_id=list_id,
                    crm_contact_id=str(contact_id),
                    email_address="bench@beispiel.de",
                    set_by="mailbridge:mailchimp:bench",
                    esp_status="bounced_soft",
                    esp_status_changed_at=datetime(2026, 1, 1, tzinfo=UTC),
                    extracted_status_value=status,
                    extracted_status_changed_at=_as_utc(changed_at, UTC),
                )
                for i, (contact_id, list_id, status, changed_at) in enumerate(rows)
            ]
            with CrmWriter(url, config.crm) as writer:
                started = time.perf_counter()
                outcomes = writer.apply(batch)
                timings.append(time.perf_counter() - started)
            assert all(outcome.status == "sent" for outcome in outcomes), outcomes[:3]
    return {
        "actions": len(batch),
        "median_seconds": round(statistics.median(timings), 2),
        "actions_per_second": round(len(batch) / statistics.median(timings)),
    }


def push_end_to_end(actions: int) -> dict[str, float]:
    """`push()` of `actions` ready transmits: queue read, outbox planned, batches to the
    emulator (10 connections at most), outcomes recorded; then the verifying sync confirms."""
    import tempfile

    import yaml

    from mailbridge.config import load_config
    from pipelines.pushback import push
    from pipelines.runner import run_extractions
    from sandbox.crm_db import write_crm
    from sandbox.mailchimp.app import MailchimpEmulator
    from sandbox.scenario import load_scenario, with_crm_subscribers
    from sandbox.server import serve_in_background

    scenario = with_crm_subscribers(
        load_scenario(ROOT / "tests" / "fixtures" / "scenarios" / "pushback.yaml"),
        actions,
        list_id="NL",
        first_id=100_000,
        prefix="p",
    )
    emulator = MailchimpEmulator.from_scenario(scenario)
    with tempfile.TemporaryDirectory() as folder, serve_in_background(emulator.app) as server:
        raw = yaml.safe_load((ROOT / "mailbridge.yaml").read_text("utf-8"))
        raw["esp_accounts"] = [dict(raw["esp_accounts"][0], base_url=f"{server.url}/3.0")]
        raw["list_links"] = [link for link in raw["list_links"] if link["esp_account"] == "brand_main"]
        raw["crm"]["url"] = f"sqlite:///{folder}/crm.sqlite"
        raw["warehouse"] = f"{folder}/warehouse.duckdb"
        raw["policy"]["transmit_new_members"] = True
        (Path(folder) / "mailbridge.yaml").write_text(yaml.safe_dump(raw), "utf-8")
        config = load_config(Path(folder) / "mailbridge.yaml")
        os.environ[config.esp_accounts[0].api_key_env] = scenario.accounts[0].api_key
        write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
        run_extractions(config, full_refresh=True, run_id="bench")
        _dbt_build(config.warehouse_path(), Path(folder))
        started = time.perf_counter()
        report = push(config, run_id="bench-push")
        seconds = time.perf_counter() - started
        sent = sum(counts.get("sent", 0) for counts in report.counts.values())
        run_extractions(config, full_refresh=False, run_id="bench-verify")
        _dbt_build(config.warehouse_path(), Path(folder))
        confirmed = push(config, run_id="bench-confirm").confirmed
    return {
        "ready_actions": sent,
        "push_seconds": round(seconds, 2),
        "actions_per_second": round(sent / seconds),
        "esp_write_requests": report.write_requests,
        "confirmed_by_next_sync": confirmed,
    }


def _dbt_build(warehouse: Path, folder: Path) -> None:
    from assets.resources import run_dbt_build

    result = run_dbt_build(warehouse, folder / "target")
    if result.returncode != 0:
        raise SystemExit(f"dbt build failed:\n{result.stdout}\n{result.stderr}")


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
        "push": push_actions(10_000, 3),
        "crm_write_back_sqlite": crm_write_back(10_000, 3),
        "push_end_to_end": push_end_to_end(10_000),
        "full_sync": [demo_full_sync(n, args.repeats) for n in args.contacts],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2), "utf-8")
    print(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
