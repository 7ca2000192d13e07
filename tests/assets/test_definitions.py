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


# what only a run needs: loading the definitions (`dagster dev`, `mailbridge sync`) imports none of it
RUN_ONLY_MODULES = (
    "duckdb",
    "sqlalchemy",
    "httpx",
    "polars",
    "pipelines.pushback",
    "pipelines.send",
    "pipelines.gate",
    "pipelines.crm.writer",
    "mailbridge.key_store",
)


def test_loading_the_definitions_imports_nothing_only_a_run_needs(tmp_path: Path) -> None:
    import json

    script = (
        "import json, sys\n"
        "import assets.definitions\n"
        f"print(json.dumps([name for name in {RUN_ONLY_MODULES!r} if name in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path), "MAILBRIDGE_CONFIG": str(REPO_ROOT / "mailbridge.yaml")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


GC_AFTER_LOADING = """
import atexit, gc, json
# registered first, so it runs last: after what the definitions registered
atexit.register(lambda: print(json.dumps({"frozen_at_exit": gc.get_freeze_count()})))
try:
    import assets.definitions
    loaded = True
except Exception:
    loaded = False
print(json.dumps({"loaded": loaded, "collecting": gc.isenabled(), "frozen": gc.get_freeze_count() > 0}))
"""


def test_the_collector_runs_again_once_the_definitions_are_loaded_or_failed_to(tmp_path: Path) -> None:
    """Loading pauses the garbage collector (assets.definitions._loading); whatever happens, it
    runs again afterwards. What the load made is left out of its passes only when it loaded, and
    only until the process ends: at exit everything is collected and finalized as before."""
    import json

    outcomes = []
    for config in (REPO_ROOT / "mailbridge.yaml", url_env_project(tmp_path)):  # the second fails to load
        env = {key: value for key, value in os.environ.items() if key != "MAILBRIDGE_TEST_CRM_URL"}
        result = subprocess.run(
            [sys.executable, "-c", GC_AFTER_LOADING],
            cwd=REPO_ROOT,
            env={**env, "DAGSTER_HOME": str(tmp_path), "MAILBRIDGE_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        outcomes.append([json.loads(line) for line in result.stdout.strip().splitlines()[-2:]])
    assert outcomes == [
        [{"loaded": True, "collecting": True, "frozen": True}, {"frozen_at_exit": 0}],
        [{"loaded": False, "collecting": True, "frozen": False}, {"frozen_at_exit": 0}],
    ]


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


def test_only_the_headline_marts_and_what_is_built_from_them_wait_for_the_end_of_the_build() -> None:
    """Their KPIs are read once dbt has let go of the warehouse, so their events wait; the events
    of every other model and test are handed to Dagster as dbt sends them."""
    from types import SimpleNamespace

    from assets.transform import _headlines_and_below, mailbridge_dbt_models

    waiting = {key.to_user_string() for key in _headlines_and_below(SimpleNamespace(assets_def=mailbridge_dbt_models))}
    assert waiting == {
        "marts/fct_campaign_performance",
        "marts/fct_list_growth",
        "marts/fct_member_engagement",
        "marts/fct_consent_ledger",
        "marts/fct_sync_event_log",  # built from the consent ledger
        "marts/fct_crm_row_accounting",  # built from the event log
    }


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


def url_env_project(tmp_path: Path) -> Path:
    import yaml

    raw = yaml.safe_load((REPO_ROOT / "mailbridge.yaml").read_text("utf-8"))
    del raw["crm"]["url"]
    raw["crm"]["url_env"] = "MAILBRIDGE_TEST_CRM_URL"
    raw["warehouse"] = str(tmp_path / "warehouse.duckdb")
    path = tmp_path / "mailbridge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")
    return path


def test_loading_without_the_crm_url_variable_names_the_key_and_the_variable(tmp_path: Path) -> None:
    dagster = Path(sys.executable).parent / "dagster"
    env = {key: value for key, value in os.environ.items() if key != "MAILBRIDGE_TEST_CRM_URL"}
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env={**env, "DAGSTER_HOME": str(tmp_path), "MAILBRIDGE_CONFIG": str(url_env_project(tmp_path))},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "crm.url_env: the environment variable MAILBRIDGE_TEST_CRM_URL is not set" in result.stderr + result.stdout


RUN_WITHOUT_KEYS = """
import json
from dagster import DagsterInstance
from assets.definitions import defs
from assets.ingest import SyncConfig
from assets.jobs import sync_run_config

result = defs.resolve_job_def("full_sync").execute_in_process(
    instance=DagsterInstance.ephemeral(),
    run_config=sync_run_config(SyncConfig(full_refresh=True)),
    raise_on_error=False,
)
failures = {}
for event in result.all_events:
    if event.event_type_value == "STEP_FAILURE":
        error = event.step_failure_data.error
        while error.cause is not None:
            error = error.cause
        failures[event.step_key] = error.message
print(json.dumps({"success": result.success, "failures": failures}))
"""


def test_a_run_without_an_account_key_fails_before_any_extraction(tmp_path: Path) -> None:
    import json

    secrets = ("MAILBRIDGE_MAILCHIMP_MAIN_KEY", "MAILBRIDGE_MAILCHIMP_SHOP_KEY")
    env = {key: value for key, value in os.environ.items() if key not in secrets}
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_KEYS],
        cwd=REPO_ROOT,
        env={
            **env,
            "MAILBRIDGE_CONFIG": str(url_env_project(tmp_path)),
            "MAILBRIDGE_TEST_CRM_URL": f"sqlite:///{tmp_path / 'crm.sqlite'}",
            "MAILBRIDGE_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
            "DAGSTER_HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["success"] is False
    assert set(outcome["failures"]) == {"raw_mailbridge", "raw_crm", "raw_mailchimp"}
    for message in outcome["failures"].values():
        assert "'brand_main'" in message and "MAILBRIDGE_MAILCHIMP_MAIN_KEY is not set" in message
    # nothing was extracted
    assert not (tmp_path / "warehouse.duckdb").exists()
