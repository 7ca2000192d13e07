"""Push-back end to end on a small world: decide, dry run, push, rerun, sync again, confirmed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from mailbridge.config import MailbridgeConfig
from mailbridge.decisions import record_decision
from pipelines.mailchimp.helpers import subscriber_hash
from pipelines.pushback import push_to_esps
from pipelines.runner import run_extractions
from tests.conftest import RunningEmulator
from tests.dbt.test_dbt_build import dbt_build, load_small_world


def world_with_a_decision(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[MailbridgeConfig, RunningEmulator]:
    """The small world reconciled, with a manual transmit for the CRM-only Bernd in the queue."""
    emulators: list[RunningEmulator] = []

    def serve(world: Any) -> RunningEmulator:
        emulators.append(serve_mailchimp(world))
        return emulators[-1]

    _, config = load_small_world(tmp_path, serve, scenario, monkeypatch, "push-test")
    dbt_build(tmp_path, config.warehouse_path())
    record_decision(config.warehouse_path(), "bernd.meier@beispiel.de", "newsletter_main", "transmit", "test")
    dbt_build(tmp_path, config.warehouse_path())
    return config, emulators[0]


def test_decide_push_rerun_and_confirm(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, emulator = world_with_a_decision(tmp_path, serve_mailchimp, small_scenario, monkeypatch)
    warehouse = config.warehouse_path()

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
    config, emulator = world_with_a_decision(tmp_path, serve_mailchimp, small_scenario, monkeypatch)
    warehouse = config.warehouse_path()

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
    member = emulator.state.account_named("brand_main").lists["nl0001"].members
    assert member[subscriber_hash("bernd.meier@beispiel.de")].status == "subscribed"
