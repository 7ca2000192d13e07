"""The commands while another one writes the warehouse: writers wait (and say for whom) or give
up cleanly, SIGTERM and SIGINT stop a waiting command, readers read the state before the write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO_ROOT, write_project_config
from tests.e2e.test_sync_cli import KEYS, mailbridge
from tests.test_warehouse_lock import holding, small_warehouse

HOLDER_PARTS = ("mailbridge sync (full_sync)", "run-of-the-holder")


def project(tmp_path: Path, **overrides: object) -> tuple[Path, dict[str, str]]:
    """A project whose ESP nobody answers: these commands must not get that far."""
    config_file = write_project_config(
        tmp_path,
        base_url="http://127.0.0.1:9/3.0",
        crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}",
        overrides=dict(overrides),
    )
    return config_file, {**KEYS, "DAGSTER_HOME": str(tmp_path / "dagster")}


def dagster_runs(home: Path) -> list[object]:
    if not home.exists():
        return []
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs())


@pytest.mark.parametrize("how", ["option", "config"])
def test_a_sync_waiting_for_the_warehouse_says_for_whom_and_gives_up(tmp_path: Path, how: str) -> None:
    config_file, env = project(tmp_path, **({"warehouse_wait_seconds": 2} if how == "config" else {}))
    wait = ["--wait", "2"] if how == "option" else []
    with holding(tmp_path / "warehouse.duckdb") as holder:
        started = time.monotonic()
        result = mailbridge("sync", "--full", *wait, "-c", str(config_file), env=env)
        took = time.monotonic() - started
    assert result.returncode == 75, result.stderr + result.stdout
    assert 2 <= took < 60
    waiting = [line for line in result.stderr.splitlines() if line.startswith("Waiting:")]
    assert len(waiting) == 1, result.stderr
    for part in (*HOLDER_PARTS, f"pid {holder.pid}", "giving up after 2s"):
        assert part in waiting[0], waiting[0]
    assert "gave up after waiting 2s" in result.stderr and "Nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert dagster_runs(tmp_path / "dagster") == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_sync_that_waits(tmp_path: Path, signum: signal.Signals) -> None:
    config_file, env = project(tmp_path)
    with holding(tmp_path / "warehouse.duckdb"):
        process = subprocess.Popen(
            [sys.executable, "-m", "mailbridge.cli", "sync", "--full", "-c", str(config_file)],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stderr is not None
            first = process.stderr.readline()
            assert first.startswith("Waiting:") and HOLDER_PARTS[0] in first, first
            time.sleep(0.5)
            sent = time.monotonic()
            process.send_signal(signum)
            _, rest = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 128 + signum, rest
        assert time.monotonic() - sent < 10
        assert f"Stopped by {signum.name}" in rest and "Traceback" not in rest
    assert dagster_runs(tmp_path / "dagster") == []


def test_status_and_export_during_a_write_show_the_state_before_it(tmp_path: Path) -> None:
    config_file, env = project(tmp_path)
    small_warehouse(tmp_path / "warehouse.duckdb")
    with holding(tmp_path / "warehouse.duckdb", "write") as holder:
        status = mailbridge("status", "-c", str(config_file), env=env)
        export = mailbridge("export", "--out", str(tmp_path / "changes.csv"), "-c", str(config_file), env=env)
    assert status.returncode == 0, status.stderr + status.stdout
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip() for line in status.stdout.splitlines() if "│" in line
    }
    assert rows["in_sync"] == "2" and rows["not_in_esp"] == "1" and "conflict" not in rows
    assert "is writing the warehouse" in status.stderr and f"pid {holder.pid}" in status.stderr
    assert export.returncode == 0, export.stderr + export.stdout
    assert "anna@beispiel.de" in (tmp_path / "changes.csv").read_text("utf-8")
    # once the write is over, status reads it
    after = mailbridge("status", "-c", str(config_file), env=env)
    assert after.returncode == 0 and "conflict" in after.stdout and after.stderr == ""


def test_push_and_decide_during_a_sync_wait_and_give_up_without_writing(tmp_path: Path) -> None:
    config_file, env = project(tmp_path)
    small_warehouse(tmp_path / "warehouse.duckdb")
    with holding(tmp_path / "warehouse.duckdb", "write") as holder:
        push = mailbridge("push", "--wait", "1", "-c", str(config_file), env=env)
        decide = mailbridge(
            "decide", "anna@beispiel.de", "--list", "newsletter_main", "--action", "unsubscribe", "--wait", "1",
            "-c", str(config_file), env=env,
        )  # fmt: skip
    for result in (push, decide):
        assert result.returncode == 75, result.stderr + result.stdout
        for part in (*HOLDER_PARTS, f"pid {holder.pid}", "gave up after waiting 1s", "Nothing was changed"):
            assert part in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "IOException" not in result.stderr
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as db:
        schemas = {row[0] for row in db.execute("select schema_name from information_schema.schemata").fetchall()}
    assert "ops" not in schemas  # no outbox, no decision: nothing was written
