"""Push-back end to end on a small world: decide, dry run, push, rerun, sync again, confirmed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mailbridge.config import MailbridgeConfig
from mailbridge.decisions import record_decision
from mailbridge.export import export_crm_changes
from pipelines.mailchimp.helpers import subscriber_hash
from pipelines.pushback import QueuedAction, _planned, mark_stale_decisions, push
from pipelines.runner import run_extractions
from tests.conftest import (
    RunningEmulator,
    crm_query,
    scenario_named,
    start_mailchimp,
)
from tests.dbt.test_dbt_build import dbt_build, load_small_world


@pytest.fixture(scope="module")
def decided_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small world reconciled, with a manual transmit for the CRM-only Bernd in the queue:
    built once per worker, for each test to copy."""
    folder = tmp_path_factory.mktemp("decided-template")
    scenario = scenario_named("small")
    emulator = start_mailchimp(scenario)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            _, config = load_small_world(folder, lambda _: emulator, scenario, monkeypatch, "push-test")
            dbt_build(folder, config.warehouse_path())
            record_decision(config.warehouse_path(), "bernd.meier@beispiel.de", "newsletter_main", "transmit", "test")
            dbt_build(folder, config.warehouse_path())
    finally:
        emulator.server.stop()
    return folder


def world_with_a_decision(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch, template: Path
) -> tuple[MailbridgeConfig, RunningEmulator]:
    """A copy of the decided template, with an emulator of its own."""
    emulators: list[RunningEmulator] = []

    def serve(world: Any) -> RunningEmulator:
        emulators.append(serve_mailchimp(world))
        return emulators[-1]

    _, config = load_small_world(tmp_path, serve, scenario, monkeypatch, "push-test", template)
    return config, emulators[0]


def test_decide_push_rerun_and_confirm(
    tmp_path: Path,
    serve_mailchimp: Any,
    small_scenario: Any,
    monkeypatch: pytest.MonkeyPatch,
    decided_template: Path,
) -> None:
    config, emulator = world_with_a_decision(tmp_path, serve_mailchimp, small_scenario, monkeypatch, decided_template)
    warehouse = config.warehouse_path()

    def writes() -> int:
        return sum(1 for e in emulator.emulator.log.snapshot() if e.method in ("POST", "PUT", "PATCH", "DELETE"))

    crm_before = crm_rows(config)
    dry = push(config, run_id="dry", dry_run=True)
    assert dry.counts == {
        ("newsletter_main", "transmit", "manual"): {"would_send": 1},
        ("newsletter_main", "create_assignment", "policy"): {"would_write": 1},
        ("newsletter_main", "create_contact", "policy"): {"would_write": 1},
    }
    assert writes() == 0 and crm_rows(config) == crm_before

    pushed = push(config, run_id="push-1")
    assert pushed.counts == {
        ("newsletter_main", "transmit", "manual"): {"sent": 1},
        ("newsletter_main", "create_assignment", "policy"): {"sent": 1},
        ("newsletter_main", "create_contact", "policy"): {"sent": 1},
    }
    contacts, assignments = crm_rows(config)
    emil = next(row for row in contacts if row["email_adresse"] == "emil.neu@beispiel.de")
    assert (emil["vorname"], emil["nachname"], emil["zu_pruefen"]) == ("Emil", "Neu", 1)
    new_assignments = {
        (row["kontakt_id"], row["status"], row["status_gesetzt_von"], row["zu_pruefen"])
        for row in assignments
        if row["status_gesetzt_von"].startswith("mailbridge")
    }
    assert new_assignments == {
        (3, "angemeldet", "mailbridge:mailchimp:brand_main", 1),
        (emil["kontakt_id"], "angemeldet", "mailbridge:mailchimp:brand_main", 1),
    }
    member = (
        emulator.state.account_named("brand_main").lists["nl0001"].members[subscriber_hash("bernd.meier@beispiel.de")]
    )
    assert member.status == "subscribed" and member.merge_fields["FNAME"] == "Bernd"

    sent_requests = writes()
    again = push(config, run_id="push-2")
    assert again.counts == {} and again.write_requests == 0 and writes() == sent_requests

    run_extractions(config, full_refresh=False, run_id="verify")
    dbt_build(tmp_path, warehouse)
    verify = push(config, run_id="push-3")
    assert verify.confirmed == 3 and verify.counts == {}
    with duckdb.connect(str(warehouse), read_only=True) as db:
        outbox = db.execute("select action, status, run_id from ops.pushback_outbox order by action").fetchall()
        results = db.execute("select distinct result from marts.fct_list_reconciliation").fetchall()
        # every dbt run records itself when it ends: the gates read this
        dbt_runs = db.execute("select count(*), max(failures), min(nodes) from ops.dbt_runs").fetchone()
    assert dbt_runs is not None and dbt_runs[0] == 3 and dbt_runs[1] == 0 and dbt_runs[2] > 50
    assert outbox == [
        ("create_assignment", "confirmed", "push-1"),
        ("create_contact", "confirmed", "push-1"),
        ("transmit", "confirmed", "push-1"),
    ]
    assert results == [("in_sync",)]


def crm_rows(config: MailbridgeConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    url = config.crm.connection_url(config.base_dir)
    return crm_query(url, "select * from kontakte"), crm_query(url, "select * from verteiler_zuordnungen")


def test_an_interrupted_push_is_sent_again_and_its_trace_closed(
    tmp_path: Path,
    serve_mailchimp: Any,
    small_scenario: Any,
    monkeypatch: pytest.MonkeyPatch,
    decided_template: Path,
) -> None:
    config, emulator = world_with_a_decision(tmp_path, serve_mailchimp, small_scenario, monkeypatch, decided_template)
    warehouse = config.warehouse_path()

    class DiesMidway:
        requests = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def write(self, list_id: str, writes: Any, on_batch: Any = None) -> Any:
            raise KeyboardInterrupt  # the process stops between planning and the ESP's answer

    with pytest.raises(KeyboardInterrupt):
        push(config, run_id="dies", writer_factory=DiesMidway)
    resumed = push(config, run_id="resumes")
    assert resumed.interrupted == 1
    assert resumed.counts[("newsletter_main", "transmit", "manual")] == {"sent": 1}
    dbt_build(tmp_path, warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as db:
        outbox = db.execute(
            "select run_id, status, error_code from ops.pushback_outbox where action = 'transmit' order by run_id"
        ).fetchall()
        events = db.execute(
            "select distinct code, severity from marts.fct_sync_event_log where code like 'pushback_%' order by code"
        ).fetchall()
    assert outbox == [("dies", "failed", "interrupted"), ("resumes", "sent", None)]
    assert events == [("pushback_failed", "warning"), ("pushback_sent", "info")]
    member = emulator.state.account_named("brand_main").lists["nl0001"].members
    assert member[subscriber_hash("bernd.meier@beispiel.de")].status == "subscribed"


def test_a_read_only_crm_is_left_alone_and_its_changes_exported(
    tmp_path: Path,
    serve_mailchimp: Any,
    small_scenario: Any,
    monkeypatch: pytest.MonkeyPatch,
    decided_template: Path,
) -> None:
    config, _ = world_with_a_decision(tmp_path, serve_mailchimp, small_scenario, monkeypatch, decided_template)
    read_only = config.model_copy(update={"crm": config.crm.model_copy(update={"write_back": False})})
    before = crm_rows(config)
    pushed = push(read_only, run_id="esp-only")
    assert pushed.counts == {("newsletter_main", "transmit", "manual"): {"sent": 1}}
    assert crm_rows(config) == before
    out = tmp_path / "changes.csv"
    assert export_crm_changes(config.warehouse_path(), out) == 2
    assert "create_contact" in out.read_text("utf-8") and "create_assignment" in out.read_text("utf-8")


def test_a_permanent_delete_waits_for_its_flag_and_removes_the_crm_assignment(
    tmp_path: Path,
    serve_mailchimp: Any,
    small_scenario: Any,
    monkeypatch: pytest.MonkeyPatch,
    decided_template: Path,
) -> None:
    config, emulator = world_with_a_decision(tmp_path, serve_mailchimp, small_scenario, monkeypatch, decided_template)
    record_decision(config.warehouse_path(), "anna.schmidt@beispiel.de", "newsletter_main", "delete_permanent", "t")
    dbt_build(tmp_path, config.warehouse_path())
    members = emulator.state.account_named("brand_main").lists["nl0001"].members
    anna = subscriber_hash("anna.schmidt@beispiel.de")

    held = push(config, run_id="no-flag")
    assert held.counts[("newsletter_main", "delete_permanent", "manual")] == {"needs_flag": 1}
    assert anna in members
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        attempts = db.execute("select count(*) from ops.pushback_outbox where action = 'delete_permanent'").fetchone()
    assert attempts == (0,)  # not attempted, so it waits for a push with the flag

    erased = push(config, run_id="with-flag", allow_permanent_delete=True)
    assert erased.counts[("newsletter_main", "delete_permanent", "manual")] == {"sent": 1}
    assert anna not in members and erased.assignments_removed == 1
    _, assignments = crm_rows(config)
    assert 1 not in {row["kontakt_id"] for row in assignments}
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        summary = db.execute(
            "select payload_summary from ops.pushback_outbox where action = 'delete_permanent'"
        ).fetchone()
    assert summary is not None and "irreversible" in summary[0]


def test_the_dagster_push_asset_in_dry_run_reports_and_changes_nothing(
    tmp_path: Path,
    serve_mailchimp: Any,
    small_scenario: Any,
    monkeypatch: pytest.MonkeyPatch,
    decided_template: Path,
) -> None:
    import dagster as dg

    from assets.project import project_config
    from assets.pushback import PushConfig, pushback_outbox
    from assets.resources import WarehouseResource

    config, emulator = world_with_a_decision(tmp_path, serve_mailchimp, small_scenario, monkeypatch, decided_template)
    monkeypatch.setenv("MAILBRIDGE_CONFIG", str(config.source_file))
    monkeypatch.setenv("MAILBRIDGE_WAREHOUSE", str(config.warehouse_path()))
    project_config.cache_clear()  # the code location reads this test's config
    crm_before = crm_rows(config)
    emulator.emulator.log.clear()
    result = dg.materialize(
        [pushback_outbox],
        resources={"warehouse": WarehouseResource(path=str(config.warehouse_path()))},
        run_config=dg.RunConfig(ops={"pushback__outbox": PushConfig(dry_run=True)}),
    )
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["dry_run"].value is True
    assert metadata["outcomes"].value == {"would_send": 1, "would_write": 2}
    by_list = metadata["by_list_and_action"].value
    assert "newsletter_main · transmit · from manual: would_send 1" in by_list and "bernd.meier@beispiel.de" in by_list
    assert not [e for e in emulator.emulator.log.snapshot() if e.method in ("POST", "PUT", "PATCH", "DELETE")]
    assert crm_rows(config) == crm_before
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        assert db.execute("select count(*) from ops.pushback_outbox").fetchone() == (0,)
    project_config.cache_clear()


def test_writes_for_an_address_changed_in_the_crm_go_to_the_esp_member_at_the_former_address() -> None:
    # a task word asks for update_fields while the CRM address changed: the ESP member still
    # has the former address, and the new one is not on the list
    def queued(action: str) -> QueuedAction:
        return QueuedAction(
            action_id="a1",
            list_link_id="newsletter_main",
            esp_account="brand_main",
            esp_list_id="nl0001",
            email_key="anna@neu.de",
            email_address="anna@neu.de",
            former_email_key="anna@alt.de",
            action=action,
            action_source="crm_task",
            rule="email_changed_in_crm",
            crm_contact_id="1",
            crm_list_id="NL",
            crm_task="daten_uebermitteln",
            first_name="Anna",
            last_name=None,
        )

    def addresses(action: str) -> list[tuple[str, str]]:
        return [(write.action, write.email_address) for write in queued(action).writes()]

    assert addresses("update_fields") == [("update_fields", "anna@alt.de")]
    assert addresses("unsubscribe") == [("unsubscribe", "anna@alt.de")]
    assert addresses("delete") == [("delete", "anna@alt.de")]
    assert addresses("change_address_doi") == [("unsubscribe", "anna@alt.de"), ("start_doi", "anna@neu.de")]

    # the outbox records the former address an address change retires: mailbridge's own
    # unsubscribe, which is no opt-out of the person at the new address
    assert _planned(queued("change_address_doi"))[-1] == "anna@alt.de"
    assert _planned(dataclasses.replace(queued("unsubscribe"), action_source="policy"))[-1] == "anna@alt.de"
    still = dataclasses.replace(
        queued("unsubscribe"), rule="former_address_still_subscribed", email_key="anna@alt.de", former_email_key=None
    )
    assert _planned(still)[-1] == "anna@alt.de"
    assert _planned(dataclasses.replace(queued("unsubscribe"), rule="crm_optout_newer"))[-1] is None

    # a blocklisted former address goes with the person (rule blocklisted, not email_changed_in_crm):
    # the unsubscribe still goes to the member at the former address, as the ESP spells it
    blocked = dataclasses.replace(queued("unsubscribe"), rule="blocklisted", esp_former_email_address="Anna@Alt.de")
    assert [(write.action, write.email_address) for write in blocked.writes()] == [("unsubscribe", "Anna@Alt.de")]


def test_a_write_to_a_list_whose_verifying_read_broke_off_is_not_confirmed(tmp_path: Path) -> None:
    """The sync after a push could not read the list (aborted): nothing shows whether the
    unsubscribe it sent took effect, so it stays sent, to be confirmed or sent again by the
    next sync that reads the list. Confirmed unverified, it would never be sent again."""
    from datetime import UTC, datetime, timedelta

    from pipelines.pushback import confirm_previous_attempts

    sent_at = datetime.now(UTC) - timedelta(minutes=5)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as db:
        db.execute("create schema marts; create schema ops")
        db.execute(
            "create table marts.fct_list_reconciliation as select * from (values "
            "('aborted_list', 'a@x.de', 'aborted', now()), ('read_list', 'b@x.de', 'in_sync', now())) "
            "as t(list_link_id, email_key, result, reconciled_at)"
        )
        db.execute(
            "create table marts.fct_pushback_queue as select * from (values ('other', 'ready')) "
            "as t(action_id, queue_status)"
        )
        db.execute(
            "create table ops.pushback_outbox (attempt_id varchar, action_id varchar, list_link_id varchar, "
            "status varchar, error_code varchar, error_message varchar, attempted_at timestamptz, "
            "updated_at timestamptz)"
        )
        db.execute(
            "insert into ops.pushback_outbox values "
            "('1', 'unsubscribe-a', 'aborted_list', 'sent', null, null, ?, ?), "
            "('2', 'unsubscribe-b', 'read_list', 'sent', null, null, ?, ?)",
            [sent_at] * 4,
        )
        assert confirm_previous_attempts(db) == 1
        statuses = dict(db.execute("select action_id, status from ops.pushback_outbox").fetchall())
    assert statuses == {"unsubscribe-a": "sent", "unsubscribe-b": "confirmed"}


def test_a_push_marks_the_decisions_the_queue_found_stale_once() -> None:
    with duckdb.connect() as db:
        db.execute("create schema ops; create schema marts")
        db.execute("create table ops.decisions (decision_id varchar, closed_at timestamptz, stale_at timestamptz)")
        db.execute("create table marts.fct_pushback_queue (decision_id varchar, queue_status varchar)")
        db.execute(
            "insert into ops.decisions values ('stale', null, null), ('ready', null, null), "
            "('closed', now(), null), ('before', null, '2020-01-01 00:00:00+00')"
        )
        db.execute(
            "insert into marts.fct_pushback_queue values ('stale', 'stale'), ('ready', 'ready'), "
            "('closed', 'stale'), ('before', 'stale'), (null, 'ready')"
        )
        assert mark_stale_decisions(db) == 1
        assert mark_stale_decisions(db) == 0
        marked = db.execute("select decision_id from ops.decisions where stale_at is not null order by 1").fetchall()
    assert marked == [("before",), ("stale",)]
