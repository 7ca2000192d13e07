"""Benchmarks: the demo full sync at several sizes, the email-key throughput, pushing 10k
actions (the writer alone and the whole push), 10k CRM writes, mailbridge's Mailchimp
extraction side by side with a plain dlt `rest_api` pull of the same resources, how long
a process takes to load the Dagster definitions and to start the CLI, and the sandbox Mailchimp
on its own (start-up, page walks, peak RSS).

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
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def push_actions(actions: int, repeats: int, port: int = 8497) -> dict[str, float]:
    """The Mailchimp writer pushing `actions` transmits to the sandbox, 10 connections at most.
    The sandbox runs in a process of its own, as in the syncs: the writer's CPU seconds and the
    sandbox's are measured apart."""

    from mailbridge.config import EspAccount
    from pipelines.mailchimp.writer import MailchimpWriter
    from pipelines.writers import EspWrite

    timings, cpu, sandbox_cpu, requests = [], [], [], 0
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        _, env, _ = _bench_world(folder, 100, port)
        os.environ["MAILBRIDGE_BENCH_KEY"] = env["MAILBRIDGE_MAILCHIMP_MAIN_KEY"]
        account = EspAccount(
            name="brand_main",
            type="mailchimp",
            api_key_env="MAILBRIDGE_BENCH_KEY",
            base_url=f"http://127.0.0.1:{port}/3.0",
            max_connections=10,
        )
        with _bench_sandbox(folder, port, env) as sandbox:
            for repeat in range(repeats):
                writer = MailchimpWriter(account)
                writes = [EspWrite(f"a{i}", "transmit", f"push.{repeat}.{i}@beispiel.de") for i in range(actions)]
                before = _cpu_seconds(sandbox.pid)
                started, cpu_started = time.perf_counter(), time.process_time()
                outcomes = writer.write("nl0001", writes)
                timings.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
                sandbox_cpu.append(_cpu_seconds(sandbox.pid) - before)
                assert all(outcome.status == "sent" for outcome in outcomes)
                requests = writer.requests
            sandbox_peak = _peak_rss_mib(sandbox.pid)
    return {
        "actions": actions,
        "median_seconds": round(statistics.median(timings), 2),
        "cpu_median_seconds": round(statistics.median(cpu), 2),
        "sandbox_cpu_median_seconds": round(statistics.median(sandbox_cpu), 2),
        "actions_per_second": round(actions / statistics.median(timings)),
        "write_requests": requests,
        "sandbox_peak_rss_mib": round(sandbox_peak),
    }


def crm_write_back(actions: int, repeats: int) -> dict[str, float]:
    """CRM write-back on SQLite: `actions` set_status writes, each behind its optimistic check."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    import sqlalchemy as sa

    from mailbridge.config import load_config
    from pipelines.crm.values import _as_utc
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
                    crm_list_id=str(list_id),
                    crm_contact_id=str(contact_id),
                    email_address="bench@beispiel.de",
                    set_by="mailbridge:mailchimp:bench",
                    esp_status="bounced_soft",
                    esp_status_changed_at=datetime(2026, 1, 1, tzinfo=UTC),
                    extracted_status_value=str(status),
                    extracted_status_changed_at=_as_utc(changed_at, ZoneInfo("UTC")),
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


def _run_measured(
    args: list[str], env: dict[str, str], *, json_output: bool = True, cwd: Path = ROOT
) -> dict[str, Any]:
    """A child process to its end: wall and CPU seconds, peak RSS, its output (the rows of its
    JSON output line)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        errors.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"{' '.join(args[2:4])} failed:\n{errors.read().decode(errors='replace')[-3000:]}")
        output = out.read().decode()
    lines = output.strip().splitlines()
    return {
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "rows": json.loads(lines[-1]) if json_output and lines else {},
        "output": output,
    }


# what a process starts with: the Dagster code location (`dagster dev`, `mailbridge sync` and
# `mailbridge ui` load it) and the CLI before it does anything
START_UPS = {
    "definitions": ["-c", "import assets.definitions"],
    "cli_help": ["-m", "mailbridge.cli", "--help"],
}


def definitions_load(repeats: int, checkouts: Sequence[Path] = ()) -> dict[str, Any]:
    """Loading the Dagster definitions and starting `mailbridge --help`, each in a fresh process
    (bytecode compiled, files cached: one discarded run first): medians of wall and CPU seconds.
    Other `checkouts` of the project (`--compare`) take turns with this one, in alternating
    order, so a noisy machine weighs on each alike."""
    roots = [ROOT, *checkouts]
    runs: dict[Path, dict[str, list[dict[str, Any]]]] = {root: {kind: [] for kind in START_UPS} for root in roots}
    with tempfile.TemporaryDirectory() as dagster_home:
        env = {key: value for key, value in os.environ.items() if not key.startswith("MAILBRIDGE_")}
        env["DAGSTER_HOME"] = dagster_home
        for root in roots:
            for args in START_UPS.values():
                _run_measured([sys.executable, *args], env, json_output=False, cwd=root)
        for repeat in range(repeats):
            for root in roots if repeat % 2 == 0 else roots[::-1]:
                for kind, args in START_UPS.items():
                    runs[root][kind].append(_run_measured([sys.executable, *args], env, json_output=False, cwd=root))

    def summary(measured: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "wall_median_seconds": round(statistics.median(m["wall_seconds"] for m in measured), 2),
            "cpu_median_seconds": round(statistics.median(m["cpu_seconds"] for m in measured), 2),
            "walls": [round(m["wall_seconds"], 2) for m in measured],
            "peak_rss_mib": round(max(m["peak_rss_mib"] for m in measured)),
        }

    report: dict[str, Any] = {"repeats": repeats}
    for root, kinds in runs.items():
        report["this checkout" if root == ROOT else str(root)] = {kind: summary(m) for kind, m in kinds.items()}
    return report


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 300) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the bench sandbox stopped (exit {process.returncode})")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"the bench sandbox did not open port {port} in {seconds:.0f}s")


def extraction_side_by_side(contacts: int, repeats: int, port: int = 8499) -> dict[str, Any]:
    """mailbridge's Mailchimp extraction against a plain dlt `rest_api` pull of the same
    resources (bench/extract.py), from one sandbox, alternating which goes first, each a full
    extraction into a fresh warehouse: medians of wall and CPU seconds, peak RSS, and the ratio.
    The sandbox's own CPU seconds are measured beside each run (the machine is shared)."""
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        config_file, env, _ = _bench_world(folder, contacts, port)
        runs: dict[str, list[dict[str, Any]]] = {"mailbridge": [], "rest_api": []}
        with _bench_sandbox(folder, port, env) as sandbox:
            for repeat in range(repeats):
                order = ["mailbridge", "rest_api"] if repeat % 2 == 0 else ["rest_api", "mailbridge"]
                for kind in order:
                    warehouse = folder / f"{kind}-{repeat}" / "warehouse.duckdb"
                    warehouse.parent.mkdir()
                    before = _cpu_seconds(sandbox.pid)
                    measured = _run_measured(
                        [sys.executable, "-m", "bench.extract", kind, str(config_file), str(warehouse)], env
                    )
                    measured["sandbox_cpu_seconds"] = _cpu_seconds(sandbox.pid) - before
                    runs[kind].append(measured)
            sandbox_peak = _peak_rss_mib(sandbox.pid)

    def summary(kind: str) -> dict[str, Any]:
        measured = runs[kind]
        return {
            "wall_median_seconds": round(statistics.median(m["wall_seconds"] for m in measured), 2),
            "cpu_median_seconds": round(statistics.median(m["cpu_seconds"] for m in measured), 2),
            "sandbox_cpu_median_seconds": round(statistics.median(m["sandbox_cpu_seconds"] for m in measured), 2),
            "peak_rss_mib": round(max(m["peak_rss_mib"] for m in measured)),
            "walls": [round(m["wall_seconds"], 2) for m in measured],
            "rows": measured[-1]["rows"],
        }

    mailbridge, rest_api = summary("mailbridge"), summary("rest_api")
    return {
        "contacts": contacts,
        "repeats": repeats,
        "mailbridge": mailbridge,
        "rest_api": rest_api,
        "speedup_wall": round(rest_api["wall_median_seconds"] / mailbridge["wall_median_seconds"], 2),
        "speedup_cpu": round(rest_api["cpu_median_seconds"] / mailbridge["cpu_median_seconds"], 2),
        "sandbox_peak_rss_mib": round(sandbox_peak),
    }


def sandbox_alone(contacts: int, repeats: int, checkouts: Sequence[Path] = (), port: int = 8496) -> dict[str, Any]:
    """The sandbox Mailchimp on its own, in a process of its own, on a generated world: the
    seconds until it answers (wall, and its CPU seconds), a walk of every member page and one of
    every campaign's report with its email-activity, sent-to and unsubscribed pages (1,000 a
    page; wall, and the sandbox's CPU seconds), and its peak RSS (VmHWM). Other `checkouts`
    (`--compare`) take turns with this one, in alternating order."""
    import httpx

    from sandbox.generator import ACCOUNTS, generate_scenario

    roots = [ROOT, *checkouts]
    runs: dict[Path, list[dict[str, float]]] = {root: [] for root in roots}
    with tempfile.TemporaryDirectory() as folder_name:
        world = Path(folder_name) / "world"
        generate_scenario(contacts=contacts, seed=42).save(world)
        base = f"http://127.0.0.1:{port}/3.0"

        def pages(client: httpx.Client, key: str, path: str, collection: str) -> int:
            offset = 0
            while True:
                response = client.get(f"{base}{path}", params={"count": 1000, "offset": offset}, auth=("x", key))
                response.raise_for_status()
                got = len(response.json()[collection])
                offset += got
                if got < 1000:
                    return offset

        def measure(root: Path) -> dict[str, float]:
            args = [sys.executable, "-m", "mailbridge.cli", "sandbox", "--scenario", str(world), "--port", str(port)]
            started = time.perf_counter()
            process = subprocess.Popen(args, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_for_port(port, process)
                measured = {
                    "start_wall_seconds": time.perf_counter() - started,
                    "start_cpu_seconds": _cpu_seconds(process.pid),
                }
                with httpx.Client(timeout=300) as client:
                    before, started = _cpu_seconds(process.pid), time.perf_counter()
                    members = sum(
                        pages(client, account.api_key, f"/lists/{item.id}/members", "members")
                        for account in ACCOUNTS
                        for item in account.lists
                    )
                    measured["members_wall_seconds"] = time.perf_counter() - started
                    measured["members_sandbox_cpu_seconds"] = _cpu_seconds(process.pid) - before
                    before, started = _cpu_seconds(process.pid), time.perf_counter()
                    rows = 0
                    for account in ACCOUNTS:
                        auth = ("x", account.api_key)
                        campaigns = client.get(f"{base}/campaigns", params={"count": 1000}, auth=auth).json()
                        for campaign in campaigns["campaigns"]:
                            client.get(f"{base}/reports/{campaign['id']}", auth=auth).raise_for_status()
                            for kind, collection in (
                                ("email-activity", "emails"),
                                ("sent-to", "sent_to"),
                                ("unsubscribed", "unsubscribes"),
                            ):
                                rows += pages(client, account.api_key, f"/reports/{campaign['id']}/{kind}", collection)
                    measured["reports_wall_seconds"] = time.perf_counter() - started
                    measured["reports_sandbox_cpu_seconds"] = _cpu_seconds(process.pid) - before
                measured["peak_rss_mib"] = _peak_rss_mib(process.pid)
                measured["members"], measured["report_rows"] = members, rows
                return measured
            finally:
                process.terminate()
                process.wait(timeout=30)

        for repeat in range(repeats):
            for root in roots if repeat % 2 == 0 else roots[::-1]:
                runs[root].append(measure(root))

    def summary(measured: list[dict[str, float]]) -> dict[str, Any]:
        kinds = [key for key in measured[0] if key.endswith("_seconds")]
        return {
            **{
                f"{kind.removesuffix('_seconds')}_median_seconds": round(
                    statistics.median(m[kind] for m in measured), 2
                )
                for kind in kinds
            },
            "peak_rss_mib": round(max(m["peak_rss_mib"] for m in measured)),
            "runs": [{key: round(value, 2) for key, value in m.items()} for m in measured],
        }

    report: dict[str, Any] = {"contacts": contacts, "repeats": repeats}
    for root, measured in runs.items():
        report["this checkout" if root == ROOT else str(root)] = summary(measured)
    return report


def _bench_world(folder: Path, contacts: int, port: int) -> tuple[Path, dict[str, str], Any]:
    """A generated world in `folder`: its scenario, a config whose ESPs are the bench sandbox on
    `port` and whose CRM is a SQLite file written from the scenario; the environment with the
    sandbox keys."""
    import yaml

    from mailbridge.config import load_config
    from sandbox.crm_db import write_crm
    from sandbox.generator import generate_scenario

    scenario = generate_scenario(contacts=contacts, seed=42)
    scenario.save(folder / "world")
    raw = yaml.safe_load((ROOT / "mailbridge.yaml").read_text("utf-8"))
    for account in raw["esp_accounts"]:
        account["base_url"] = f"http://127.0.0.1:{port}/3.0"
    raw["crm"]["url"] = f"sqlite:///{folder}/crm.sqlite"
    raw["warehouse"] = str(folder / "warehouse" / "warehouse.duckdb")
    config_file = folder / "mailbridge.yaml"
    config_file.write_text(yaml.safe_dump(raw), "utf-8")
    config = load_config(config_file)
    write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    env = dict(os.environ)
    env.pop("MAILBRIDGE_WAREHOUSE", None)
    env["DAGSTER_HOME"] = str(folder / "dagster")
    for spec, account in zip(raw["esp_accounts"], scenario.accounts, strict=True):
        env[spec["api_key_env"]] = account.api_key
    return config_file, env, scenario


@contextmanager
def _bench_sandbox(folder: Path, port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "mailbridge.cli", "sandbox", "--scenario", str(folder / "world"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, sandbox)
        yield sandbox
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)


def _step_seconds(dagster_home: Path, run_id: str) -> dict[str, float]:
    """Seconds per step of a Dagster run (the sync's phases), from the instance's event log."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        return {
            stats.step_key: round(stats.end_time - stats.start_time, 2)
            for stats in instance.get_run_step_stats(run_id)
            if stats.start_time is not None and stats.end_time is not None
        }


def _change_one_percent(config_file: Path, scenario: Any, round_: int) -> int:
    """1 % of the world changed on both sides, every kind among them (`sandbox.changes`: statuses,
    fields, addresses, deletes and new subscribers; the CRM through its tables, the ESP through
    its API). Returns the changes made."""
    from mailbridge.config import load_config
    from sandbox.changes import change_world

    return change_world(load_config(config_file), scenario, 0.01, round_).total


def sync_phases(contacts: int, repeats: int, port: int = 8498) -> dict[str, Any]:
    """`mailbridge sync --full`, then `mailbridge sync` with nothing changed and with 1 % changed,
    `repeats` times each, as the CLI runs them (Dagster in process): wall and CPU seconds, the
    peak RSS of the sync process and of the sandbox, and the seconds of each phase (Dagster
    step). Medians."""
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        config_file, env, scenario = _bench_world(folder, contacts, port)
        results: dict[str, list[dict[str, Any]]] = {"full": [], "incremental_unchanged": [], "incremental_1pct": []}
        with _bench_sandbox(folder, port, env) as sandbox:
            for round_ in range(repeats):
                for kind in results:
                    changes = _change_one_percent(config_file, scenario, round_) if "1pct" in kind else 0
                    args = [sys.executable, "-m", "mailbridge.cli", "sync", "--config", str(config_file)]
                    if kind == "full":
                        args.append("--full")
                    before = _cpu_seconds(sandbox.pid)
                    measured = _run_measured(args, env, json_output=False)
                    measured["sandbox_cpu_seconds"] = _cpu_seconds(sandbox.pid) - before
                    match = re.search(r"Dagster run\s+([0-9a-f-]{36})", measured["output"])
                    measured["phases"] = _step_seconds(folder / "dagster", match.group(1)) if match else {}
                    measured["changes"] = changes
                    results[kind].append(measured)
            sandbox_peak = _peak_rss_mib(sandbox.pid)

    def summary(measured: list[dict[str, Any]]) -> dict[str, Any]:
        steps = sorted({step for m in measured for step in m["phases"]})
        return {
            "wall_median_seconds": round(statistics.median(m["wall_seconds"] for m in measured), 1),
            "cpu_median_seconds": round(statistics.median(m["cpu_seconds"] for m in measured), 1),
            "sandbox_cpu_median_seconds": round(statistics.median(m["sandbox_cpu_seconds"] for m in measured), 1),
            "peak_rss_mib": round(max(m["peak_rss_mib"] for m in measured)),
            "phases_median_seconds": {
                step: round(statistics.median(m["phases"].get(step, 0.0) for m in measured), 1) for step in steps
            },
            "changes": measured[-1]["changes"],
        }

    return {
        "contacts": contacts,
        "repeats": repeats,
        **{kind: summary(measured) for kind, measured in results.items()},
        "sandbox_peak_rss_mib": round(sandbox_peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=1, help="full syncs per size")
    parser.add_argument(
        "--extraction-contacts",
        type=int,
        default=100_000,
        help="world size of the side-by-side extraction against plain dlt rest_api (0: skip it)",
    )
    parser.add_argument(
        "--sync-contacts",
        type=int,
        nargs="*",
        default=[100_000],
        help="world sizes of the full and incremental syncs with their phases (none: skip them)",
    )
    parser.add_argument("--sync-repeats", type=int, default=3, help="rounds of the syncs (medians of them)")
    parser.add_argument(
        "--push-actions",
        type=int,
        nargs="+",
        default=[10_000],
        help="sizes of the writer's push to the emulator (1000000 for the million; about 5 minutes)",
    )
    parser.add_argument("--start-repeats", type=int, default=5, help="processes per start-up measurement (medians)")
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        default=[],
        help="other checkouts of the project whose start-up (and sandbox) is measured in turns with this one",
    )
    parser.add_argument(
        "--sandbox-contacts",
        type=int,
        nargs="*",
        default=[100_000],
        help="world sizes of the sandbox on its own: start-up, member and report walks, peak RSS",
    )
    parser.add_argument("--sandbox-repeats", type=int, default=3, help="sandbox processes per size and checkout")
    parser.add_argument(
        "--only", choices=["extraction", "syncs", "push", "definitions", "sandbox"], help="run only this part"
    )
    args = parser.parse_args()
    if args.only is not None:
        parts: dict[str, Any] = {
            "extraction": lambda: {"extraction_vs_rest_api": extraction_side_by_side(args.extraction_contacts, 3)},
            "syncs": lambda: {"syncs": [sync_phases(n, args.sync_repeats) for n in args.sync_contacts]},
            "push": lambda: {"push": [push_actions(n, 1 if n > 100_000 else 3) for n in args.push_actions]},
            "definitions": lambda: {"definitions_load": definitions_load(args.start_repeats, args.compare)},
            "sandbox": lambda: {
                "sandbox": [sandbox_alone(n, args.sandbox_repeats, args.compare) for n in args.sandbox_contacts]
            },
        }
        _write(parts[args.only]())
        return
    report: dict[str, Any] = {
        "definitions_load": definitions_load(args.start_repeats, args.compare),
        "email_key": email_key_throughput(200_000, 3),
        "push": [push_actions(n, 1 if n > 100_000 else 3) for n in args.push_actions],
        "crm_write_back_sqlite": crm_write_back(10_000, 3),
        "push_end_to_end": push_end_to_end(10_000),
        "full_sync": [demo_full_sync(n, args.repeats) for n in args.contacts],
    }
    if args.extraction_contacts:
        report["extraction_vs_rest_api"] = extraction_side_by_side(args.extraction_contacts, 3)
    report["syncs"] = [sync_phases(n, args.sync_repeats) for n in args.sync_contacts]
    report["sandbox"] = [sandbox_alone(n, args.sandbox_repeats, args.compare) for n in args.sandbox_contacts]
    _write(report)


def _write(report: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2), "utf-8")
    print(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
