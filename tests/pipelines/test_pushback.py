"""Push-back end to end on a small world: decide, dry run, push, rerun, sync again, confirmed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mailbridge.decisions import record_decision
from pipelines.pushback import push_to_esps
from pipelines.runner import run_extractions
from sandbox.mailchimp.state import subscriber_hash
from tests.conftest import RunningEmulator
from tests.dbt.test_dbt_build import DBT_DIR, load_small_world


def dbt_build(tmp_path: Path, warehouse: Path) -> None:
    command = [
        str(Path(sys.executable).parent / "dbt"),
        "build",
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
        "--target-path",
        str(tmp_path / "target"),
        "--quiet",
    ]
    result = subprocess.run(command, env={**os.environ, "MAILBRIDGE_WAREHOUSE": str(warehouse)}, capture_output=True)
    assert result.returncode == 0, result.stdout


def test_decide_push_rerun_and_confirm(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulators: list[RunningEmulator] = []

    def serve(scenario: Any) -> RunningEmulator:
        emulators.append(serve_mailchimp(scenario))
        return emulators[-1]

    _, config = load_small_world(tmp_path, serve, small_scenario, monkeypatch, "push-test")
    emulator = emulators[0]
    warehouse = config.warehouse_path()
    dbt_build(tmp_path, warehouse)
    record_decision(warehouse, "bernd.meier@beispiel.de", "newsletter_main", "transmit", "test")
    dbt_build(tmp_path, warehouse)

    def writes() -> int:
        return sum(1 for e in emulator.emulator.log.snapshot() if e.method in ("POST", "PUT", "PATCH", "DELETE"))

    dry = push_to_esps(config, run_id="dry", dry_run=True)
    assert dry.counts == {("newsletter_main", "transmit", "manual"): {"would_send": 1}}
    assert writes() == 0

    pushed = push_to_esps(config, run_id="push-1")
    assert pushed.counts == {("newsletter_main", "transmit", "manual"): {"sent": 1}}
    member = (
        emulator.state.account_named("brand_main").lists["nl0001"].members[subscriber_hash("bernd.meier@beispiel.de")]
    )
    assert member.status == "subscribed" and member.merge_fields["FNAME"] == "Bernd"

    sent_requests = writes()
    again = push_to_esps(config, run_id="push-2")
    assert again.counts == {} and again.write_requests == 0 and writes() == sent_requests

    run_extractions(config, full_refresh=False, run_id="verify")
    dbt_build(tmp_path, warehouse)
    verify = push_to_esps(config, run_id="push-3")
    assert verify.confirmed == 1 and verify.counts == {}
    with duckdb.connect(str(warehouse), read_only=True) as db:
        outbox = db.execute("select action, status, run_id from ops.pushback_outbox").fetchall()
        result = db.execute(
            "select result from marts.fct_list_reconciliation where email_key = 'bernd.meier@beispiel.de'"
        ).fetchall()
    assert outbox == [("transmit", "confirmed", "push-1")]
    assert result == [("in_sync",)]


def test_an_interrupted_push_is_sent_again_and_its_trace_closed(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulators: list[RunningEmulator] = []

    def serve(scenario: Any) -> RunningEmulator:
        emulators.append(serve_mailchimp(scenario))
        return emulators[-1]

    _, config = load_small_world(tmp_path, serve, small_scenario, monkeypatch, "interrupt-test")
    warehouse = config.warehouse_path()
    dbt_build(tmp_path, warehouse)
    record_decision(warehouse, "bernd.meier@beispiel.de", "newsletter_main", "transmit", "test")
    dbt_build(tmp_path, warehouse)

    class DiesMidway:
        requests = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def write(self, list_id: str, writes: Any) -> Any:
            raise KeyboardInterrupt  # the process stops between planning and the ESP's answer

    with pytest.raises(KeyboardInterrupt):
        push_to_esps(config, run_id="dies", writer_factory=DiesMidway)
    resumed = push_to_esps(config, run_id="resumes")
    assert resumed.interrupted == 1
    assert resumed.counts == {("newsletter_main", "transmit", "manual"): {"sent": 1}}
    dbt_build(tmp_path, warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as db:
        outbox = db.execute("select run_id, status, error_code from ops.pushback_outbox order by run_id").fetchall()
        events = db.execute(
            "select code, severity from marts.fct_sync_event_log where code like 'pushback_%' order by code"
        ).fetchall()
    assert outbox == [("dies", "failed", "interrupted"), ("resumes", "sent", None)]
    assert events == [("pushback_failed", "warning"), ("pushback_sent", "info")]
    member = emulators[0].state.account_named("brand_main").lists["nl0001"].members
    assert member[subscriber_hash("bernd.meier@beispiel.de")].status == "subscribed"
