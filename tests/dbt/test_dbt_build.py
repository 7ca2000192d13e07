"""`dbt build` over a loaded warehouse: models, data tests and the reconciliation unit tests pass."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dbt.cli.main import dbtRunner

from assets.resources import DBT_BUILD, RUN_ID_ENV
from mailbridge.config import MailbridgeConfig, load_config
from pipelines.runner import run_extractions
from sandbox.crm_db import write_crm
from tests.conftest import REPO_ROOT, RunningEmulator, copy_synced_world, shared_dbt_target, write_project_config

DBT_DIR = REPO_ROOT / "dbt_project"


def load_small_world(
    tmp_path: Path,
    serve_mailchimp: Any,
    scenario: Any,
    monkeypatch: pytest.MonkeyPatch,
    run_id: str,
    template: Path | None = None,
) -> tuple[Path, MailbridgeConfig]:
    """The small scenario in an emulator and a SQLite CRM, extracted into a fresh warehouse, or
    copied from `template`, a world of the same scenario synced before."""
    emulator: RunningEmulator = serve_mailchimp(scenario)
    config_file = write_project_config(
        tmp_path, base_url=emulator.base_url, crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}", accounts=["brand_main"]
    )
    config = load_config(config_file)
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", scenario.account("brand_main").api_key)
    if template is not None:
        copy_synced_world(template, tmp_path)
        return config_file, config
    write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    run_extractions(config, full_refresh=True, run_id=run_id)
    return config_file, config


# the parsed project, once per test worker and warehouse file name (dbt names the database after it)
_MANIFESTS: dict[str, Any] = {}


def dbt_build(
    tmp_path: Path, warehouse: Path, run_id: str = "manual", *, full_refresh: bool = False, select: str = ""
) -> None:
    """`dbt build` of the models and data tests into `warehouse` (with `--full-refresh`, as a full
    sync builds, when `full_refresh`; only the nodes `select` names, when given); it must succeed.

    It runs in this process, on a manifest parsed once per worker: a build in a process of its
    own spends about 5 of its 10 seconds importing dbt and loading and writing the manifest. Syncs
    build in a process of their own (`run_dbt_build`), which the CLI, Dagster and push tests run.
    The unit tests, which read no warehouse, run once, in test_dbt_build_on_the_small_scenario."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    flags = ["--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    flags += ["--target-path", str(shared_dbt_target(tmp_path)), "--quiet"]
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("MAILBRIDGE_WAREHOUSE", str(warehouse))
        environment.setenv(RUN_ID_ENV, run_id)
        try:
            manifest = _MANIFESTS.get(warehouse.name)
            if manifest is None:
                parsed = dbtRunner().invoke(["parse", *flags])
                assert parsed.success, parsed.exception
                manifest = _MANIFESTS[warehouse.name] = parsed.result
            refresh = ["--full-refresh"] if full_refresh else []
            selected = ["--select", select] if select else []
            result = dbtRunner(manifest=manifest).invoke([*DBT_BUILD, *flags, *refresh, *selected])
        finally:
            # dbt-duckdb keeps the database open for the next invocation: the test reads it next
            if DuckDBConnectionManager._ENV is not None:
                DuckDBConnectionManager._ENV.close()
                DuckDBConnectionManager._ENV = None
    failed = [
        f"{node.node.unique_id}: {node.status} {node.message}"
        for node in (result.result or [])
        if str(node.status) in ("error", "fail")
    ]
    assert result.success, failed or result.exception


def test_dbt_build_on_the_small_scenario(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = load_small_world(tmp_path, serve_mailchimp, small_scenario, monkeypatch, "dbt-test")
    monkeypatch.setenv("MAILBRIDGE_WAREHOUSE", str(config.warehouse_path()))
    target = tmp_path / "target"
    result = dbtRunner().invoke(
        [
            "build",
            "--project-dir",
            str(DBT_DIR),
            "--profiles-dir",
            str(DBT_DIR),
            "--target-path",
            str(target),
            "--vars",
            '{"run_id": "dbt-test"}',
            "--quiet",
        ]
    )
    assert result.success, result.exception
    kinds = [node.node.resource_type for node in result.result]
    assert kinds.count("unit_test") >= 9
    with duckdb.connect(os.environ["MAILBRIDGE_WAREHOUSE"]) as db:
        rows = db.execute(
            "select list_link_id, result, count(*) from marts.fct_list_reconciliation group by all"
        ).fetchall()
        run_ids = db.execute("select distinct run_id from marts.fct_list_reconciliation").fetchall()
    assert {(link, res): n for link, res, n in rows} == {
        ("newsletter_main", res): n for res, n in small_scenario.expected["newsletter_main"].items()
    }
    assert run_ids == [("dbt-test",)]


def test_explain_tells_both_sides_the_rule_and_the_history(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file, config = load_small_world(tmp_path, serve_mailchimp, small_scenario, monkeypatch, "explain-test")
    dbt_build(tmp_path, config.warehouse_path(), "explain-test")

    def explain(address: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailbridge.cli", "explain", address, "-c", str(config_file)],
            env={**os.environ, "COLUMNS": "200"},
            capture_output=True,
            text=True,
        )

    carla = explain("CARLA.WOLF@beispiel.de")
    assert carla.returncode == 0, carla.stderr
    out = carla.stdout
    assert "carla.wolf@beispiel.de" in out
    assert "CRM contacts" in out and "ESP memberships" in out and "Reconciliation" in out and "Event log" in out
    assert "new_in_list" in out and "esp_member_crm_contact" in out and "create_assignment" in out
    assert "the CRM knows the contact but not in this list" in out

    unknown = explain("niemand@beispiel.de")
    assert unknown.returncode == 1 and "Neither side knows this address" in unknown.stdout
    invalid = explain("kein-at-zeichen")
    assert "is not a valid address" in invalid.stdout
    assert invalid.returncode == 1 and "Traceback" not in invalid.stderr


def test_a_decision_enters_the_push_back_queue(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file, config = load_small_world(tmp_path, serve_mailchimp, small_scenario, monkeypatch, "decide-test")
    env = {**os.environ, "MAILBRIDGE_WAREHOUSE": str(config.warehouse_path()), "COLUMNS": "200"}
    dbt_build(tmp_path, config.warehouse_path())

    def decide(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mailbridge.cli", "decide", *args, "-c", str(config_file), "--by", "test"]
        return subprocess.run(command, env=env, capture_output=True, text=True)

    made = decide("Bernd.Meier@beispiel.de", "--list", "newsletter_main", "--action", "transmit")
    assert made.returncode == 0, made.stderr
    assert "transmit for bernd.meier@beispiel.de on newsletter_main (now not_in_esp)" in made.stdout
    wrong_list = decide("bernd.meier@beispiel.de", "--list", "nowhere", "--action", "transmit")
    assert wrong_list.returncode == 1 and "list links: newsletter_main" in wrong_list.stderr
    wrong_action = decide("bernd.meier@beispiel.de", "--list", "newsletter_main", "--action", "subscribe")
    assert wrong_action.returncode == 1 and "unknown action 'subscribe'" in wrong_action.stderr

    dbt_build(tmp_path, config.warehouse_path())
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        queue = db.execute(
            "select email_key, action, action_source, decided_by, queue_status, target "
            "from marts.fct_pushback_queue order by email_key"
        ).fetchall()
    assert ("bernd.meier@beispiel.de", "transmit", "manual", "test", "ready", "esp") in queue
    assert ("emil.neu@beispiel.de", "create_contact", "policy", None, "ready", "crm") in queue

    out = tmp_path / "export" / "crm_changes.csv"
    exported = subprocess.run(
        [sys.executable, "-m", "mailbridge.cli", "export", "--out", str(out), "-c", str(config_file)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr
    with out.open(encoding="utf-8", newline="") as handle:
        rows = {(row["action"], row["email_address"]) for row in csv.DictReader(handle)}
    assert rows == {("create_contact", "emil.neu@beispiel.de"), ("create_assignment", "carla.wolf@beispiel.de")}


def test_esp_members_with_invalid_addresses_each_have_an_id_of_their_own(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = load_small_world(tmp_path, serve_mailchimp, small_scenario, monkeypatch, "invalid-members")
    with duckdb.connect(str(config.warehouse_path())) as db:
        # two members whose addresses the validator refuses: neither an email key nor a CRM contact
        for number, address in enumerate(("kaputt@@beispiel.de", "auch kaputt@beispiel.de"), 1):
            db.execute(
                "insert into raw_mailchimp.members by name select * replace ("
                "?::varchar as id, ?::varchar as email_address, null::varchar as email_key, "
                "'invalid'::varchar as email_error, ?::varchar as unique_email_id, ?::varchar as contact_id) "
                "from raw_mailchimp.members where email_key = 'emil.neu@beispiel.de'",
                [f"invalid{number}", address, f"u-invalid{number}", f"c-invalid{number}"],
            )
    dbt_build(tmp_path, config.warehouse_path(), "invalid-members")
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        rows = db.execute(
            "select esp_member_id, result from marts.fct_list_reconciliation where email_key is null order by 1"
        ).fetchall()
        ids = db.execute(
            "select count(distinct reconciliation_id) from marts.fct_list_reconciliation where email_key is null"
        ).fetchone()[0]
    assert rows == [("invalid1", "invalid_email"), ("invalid2", "invalid_email")]
    assert ids == 2


def test_dbt_sends_no_usage_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dbt tells dbt Labs about every invocation, model and test unless the project says not to:
    mailbridge talks to the warehouse and the systems it is configured for, and nothing else."""
    monkeypatch.setenv("MAILBRIDGE_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    events: list[str] = []
    result = dbtRunner(callbacks=[lambda event: events.append(event.info.name)]).invoke(
        ["debug", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    )
    assert result.success, result.exception
    assert "AdapterRegistered" in events, events[:20]
    # (dbt announces a flush at its end either way; with nothing to send it sends nothing)
    assert [name for name in events if name in ("SendingEvent", "SendEventFailure", "FlushEventsFailure")] == []
