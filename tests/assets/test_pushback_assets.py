"""The push-back assets in Dagster: the blocking push gate stops the push, the push refuses by
itself when run alone, the jobs are wired, and a failed run becomes a logged alert."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture
def old_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A warehouse whose reconciliation is two hours old."""
    monkeypatch.setenv("MAILBRIDGE_CONFIG", str(REPO_ROOT / "mailbridge.yaml"))
    warehouse = tmp_path / "old.duckdb"
    monkeypatch.setenv("MAILBRIDGE_WAREHOUSE", str(warehouse))
    with duckdb.connect(str(warehouse)) as db:
        db.execute(
            "create schema marts; create table marts.fct_list_reconciliation "
            "(list_link_id varchar, email_key varchar, result varchar, reconciled_at timestamptz)"
        )
        db.execute(
            "insert into marts.fct_list_reconciliation values ('newsletter_main', 'a@x.de', 'in_sync', ?)",
            [datetime.now(UTC) - timedelta(hours=2)],
        )
    return warehouse


def resources(warehouse: Path) -> dict[str, object]:
    from assets.resources import WarehouseResource

    return {"warehouse": WarehouseResource(path=str(warehouse))}


def test_the_blocking_gate_keeps_the_push_from_running(old_warehouse: Path) -> None:
    from assets.pushback import QUEUE_KEY, push_gate_check, pushback_outbox

    @dg.asset(key=QUEUE_KEY)
    def queue() -> None:
        """Stands in for the dbt model."""

    result = dg.materialize(
        [queue, pushback_outbox, push_gate_check], resources=resources(old_warehouse), raise_on_error=False
    )
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("push_gate", False)]
    assert "minutes old, the limit is 60" in str(checks[0].description)
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert materialized == {QUEUE_KEY}  # the push asset never ran


def test_the_push_alone_refuses_and_the_failure_is_an_alert(old_warehouse: Path) -> None:
    from assets.pushback import alert_log_path, log_run_failures, pushback_outbox

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [pushback_outbox], resources=resources(old_warehouse), raise_on_error=False, instance=instance
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "push refused" in failure.step_failure_data.error.message
    with duckdb.connect(str(old_warehouse), read_only=True) as db:
        schemas = {row[0] for row in db.execute("select schema_name from information_schema.schemata").fetchall()}
    assert "ops" not in schemas  # nothing was planned, nothing written

    run_failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="log_run_failures",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=run_failure,
    ).for_run_failure()
    log_run_failures(context)
    alerts = [json.loads(line) for line in alert_log_path().read_text("utf-8").splitlines()]
    assert alerts[-1]["run_id"] == result.run_id and alerts[-1]["job"] == result.dagster_run.job_name


def test_push_jobs_are_wired(monkeypatch: pytest.MonkeyPatch) -> None:
    os.environ.setdefault("MAILBRIDGE_CONFIG", str(REPO_ROOT / "mailbridge.yaml"))
    from assets.definitions import defs

    sync_and_push = defs.resolve_job_def("sync_and_push")
    nodes = set(sync_and_push.graph.node_dict)
    assert {"raw_crm", "raw_mailchimp", "pushback__outbox", "pushback__verification"} <= nodes
    assert "marts__fct_pushback_queue_push_gate" in nodes
    assert "pushback__outbox" not in defs.resolve_job_def("incremental_sync").graph.node_dict
    assert "pushback__outbox" not in defs.resolve_job_def("full_sync").graph.node_dict
    graph = defs.resolve_asset_graph()
    gate = next(key for key in graph.asset_check_keys if key.name == "push_gate")
    assert graph.get_check_spec(gate).blocking
    sensors = {sensor.name: sensor for sensor in defs.sensors or []}
    assert sensors["log_run_failures"].default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_job_def("send_campaign_job") is not None
