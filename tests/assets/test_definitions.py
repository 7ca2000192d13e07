"""The Dagster code location: loads, names its layers, serialises warehouse writes, schedules off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    os.environ.setdefault("MAILBRIDGE_CONFIG", str(REPO_ROOT / "mailbridge.yaml"))
    from assets.definitions import defs

    return defs


def test_workspace_loads_without_error(tmp_path: Path) -> None:
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_asset_keys_name_the_layer(defs: dg.Definitions) -> None:
    keys = {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()}
    assert {"raw/mailchimp/members", "raw/crm/assignments", "raw/mailbridge/list_links"} <= keys
    assert {"staging/stg_mailchimp__members", "intermediate/int_esp__memberships"} <= keys
    assert "marts/fct_list_reconciliation" in keys


def test_dbt_tests_are_asset_checks(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    checks = {key.name for key in graph.asset_check_keys}
    assert "unique_fct_list_reconciliation_reconciliation_id" in checks
    assert any(name.startswith("accepted_values_fct_list_reconciliation_result") for name in checks)


def test_every_warehouse_writer_shares_one_pool(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    pools = {
        node.assets_def.op.pool
        for node in graph.asset_nodes
        if node.assets_def.is_executable and node.assets_def.op is not None
    }
    assert pools == {"duckdb_warehouse"}


def test_sync_jobs_and_their_schedules_are_off_by_default(defs: dg.Definitions) -> None:
    full = defs.resolve_job_def("full_sync")
    incremental = defs.resolve_job_def("incremental_sync")
    assert full.executor_def.name == "in_process" and incremental.executor_def.name == "in_process"
    schedules = {schedule.name: schedule for schedule in defs.schedules or []}
    assert schedules["nightly_full_sync"].job_name == "full_sync"
    assert schedules["incremental_sync_every_30_minutes"].job_name == "incremental_sync"
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules.values())


def test_full_and_incremental_differ_only_in_the_refresh_flag(defs: dg.Definitions) -> None:
    full = defs.resolve_job_def("full_sync").run_config
    incremental = defs.resolve_job_def("incremental_sync").run_config
    assert full is not None and incremental is not None
    ops = {"raw_mailbridge", "raw_crm", "raw_mailchimp"}
    assert {op: cfg["config"]["full_refresh"] for op, cfg in full["ops"].items()} == dict.fromkeys(ops, True)
    assert {op: cfg["config"]["full_refresh"] for op, cfg in incremental["ops"].items()} == dict.fromkeys(ops, False)
