"""A sync killed with SIGKILL while dbt builds: dbt dies with it, and the next sync completes
by itself (the killed run is marked failed, its warehouse slot freed); a push started during
that sync waits for it and pushes the queue it built."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mailbridge.config import load_config
from sandbox.crm_db import write_crm
from sandbox.generator import generate_scenario
from tests.conftest import REPO_ROOT, RunningEmulator, write_project_config
from tests.e2e.test_sync_cli import KEYS, mart_counts
from tests.test_child import wait_until_dead

pytestmark = pytest.mark.slow


def start(config_file: Path, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailbridge.cli", *args, "-c", str(config_file)],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def children(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
            found[int(entry.name)] = command
    return found


def wait_for(condition: Callable[[], Any], process: subprocess.Popen[str], what: str, seconds: float = 300) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        assert process.poll() is None, f"the sync ended (code {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds:.0f}s"
        time.sleep(0.05)


def test_a_sync_killed_during_dbt_blocks_nothing(tmp_path: Path, serve_mailchimp: Any) -> None:
    scenario = generate_scenario(contacts=300, seed=8)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    config_file = write_project_config(
        tmp_path, base_url=emulator.base_url, crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}"
    )
    config = load_config(config_file)
    write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    warehouse = config.warehouse_path()
    env = {**KEYS, "DAGSTER_HOME": str(tmp_path / "dagster")}

    killed = start(config_file, env, tmp_path / "killed.log", "sync", "--full")
    dbt = wait_for(
        lambda: [pid for pid, command in children(killed.pid).items() if "dbt build" in command],
        killed,
        "dbt build",
    )[0]
    time.sleep(1.0)  # dbt is building the models into the warehouse
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert wait_until_dead(dbt), "dbt went on after its sync was killed"

    from mailbridge.warehouse_lock import current_holder

    following = start(config_file, env, tmp_path / "following.log", "sync", "--full")
    wait_for(lambda: (holder := current_holder(warehouse)) and "sync" in holder.command, following, "the lock")
    push = start(config_file, env, tmp_path / "push.log", "push")
    try:
        following.wait(timeout=400)
        push.wait(timeout=300)
    finally:
        for process in (following, push):
            if process.poll() is None:
                process.kill()
                process.wait()
    following_log = (tmp_path / "following.log").read_text()
    push_log = (tmp_path / "push.log").read_text()
    assert following.returncode == 0, following_log
    assert push.returncode == 0, push_log

    from dagster import DagsterInstance, DagsterRunStatus

    with DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        runs = {run.run_id: run.status for run in instance.get_runs()}
        slots = instance.event_log_storage.get_concurrency_info("duckdb_warehouse").claimed_slots
    assert sorted(status.value for status in runs.values()) == ["FAILURE", "SUCCESS"], runs
    (killed_run,) = [run_id for run_id, status in runs.items() if status == DagsterRunStatus.FAILURE]
    assert f"run {killed_run} (full_sync) was left unfinished by process {killed.pid}" in following_log
    assert slots == []
    assert mart_counts(warehouse) == scenario.expected

    # the push waited for the sync and pushed the queue that sync built
    assert "Waiting:" in push_log and "mailbridge sync (full_sync)" in push_log, push_log
    with duckdb.connect(str(warehouse), read_only=True) as db:
        attempts, before_reconciliation = db.execute(
            "select count(*), count(*) filter (where attempted_at < (select max(reconciled_at) "
            "from marts.fct_list_reconciliation)) from ops.pushback_outbox"
        ).fetchone()  # type: ignore[misc]
    assert attempts > 0 and before_reconciliation == 0
