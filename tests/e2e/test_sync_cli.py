"""End to end: `mailbridge sync` runs Dagster jobs over the emulator and a CRM, into the marts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from mailbridge.config import load_config
from sandbox.crm_db import write_crm
from sandbox.generator import generate_scenario
from tests.conftest import REPO_ROOT, RunningEmulator, write_project_config

pytestmark = pytest.mark.slow

KEYS = {
    "MAILBRIDGE_MAILCHIMP_MAIN_KEY": "sandbox0brandmain00000000000000-us1",
    "MAILBRIDGE_MAILCHIMP_SHOP_KEY": "sandbox0brandshop00000000000000-us1",
}


def mailbridge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailbridge.cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def mart_counts(warehouse: Path) -> dict[str, dict[str, int]]:
    with duckdb.connect(str(warehouse), read_only=True) as db:
        rows = db.execute(
            "select list_link_id, result, count(*) from marts.fct_list_reconciliation group by all"
        ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for link, result, count in rows:
        counts.setdefault(link, {})[result] = count
    return counts


def test_full_then_incremental_sync_through_dagster(tmp_path: Path, serve_mailchimp: Any) -> None:
    scenario = generate_scenario(contacts=2000, seed=21)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    config_file = write_project_config(
        tmp_path, base_url=emulator.base_url, crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}"
    )
    config = load_config(config_file)
    write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    env = {**KEYS, "DAGSTER_HOME": str(tmp_path / "dagster"), "MAILBRIDGE_WAREHOUSE": str(tmp_path / "wh.duckdb")}

    full = mailbridge("sync", "--full", "-c", str(config_file), env=env)
    assert full.returncode == 0, full.stderr + full.stdout
    assert "full_sync finished" in full.stdout
    assert mart_counts(tmp_path / "wh.duckdb") == scenario.expected

    newsletter = emulator.state.account_named("brand_main").lists["nl0001"]
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        in_sync = {
            row[0]
            for row in db.execute(
                "select esp_member_id from marts.fct_list_reconciliation "
                "where list_link_id = 'newsletter_main' and result = 'in_sync' and esp_status = 'subscribed'"
            ).fetchall()
        }
    chosen = [member for member in newsletter.members.values() if member.id in in_sync][:5]
    api = httpx.Client(base_url=emulator.base_url + "/", auth=("x", KEYS["MAILBRIDGE_MAILCHIMP_MAIN_KEY"]))
    for member in chosen:
        assert api.patch(f"lists/nl0001/members/{member.id}", json={"status": "unsubscribed"}).status_code == 200
    emulator.emulator.log.clear()

    incremental = mailbridge("sync", "--incremental", "-c", str(config_file), env=env)
    assert incremental.returncode == 0, incremental.stderr + incremental.stdout

    requests = [e for e in emulator.emulator.log.snapshot() if e.path == "/3.0/lists/nl0001/members"]
    # the changed members, and one count of the list (nothing is gone: no census of its ids)
    reads = [e for e in requests if e.query.get("fields") != "total_items"]
    assert len(requests) - len(reads) == 1
    assert all("since_last_changed" in e.query for e in reads)
    assert 5 <= sum(e.items or 0 for e in reads) <= 10
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        rows = db.execute(
            "select esp_member_id, esp_status, result from marts.fct_list_reconciliation "
            "where list_link_id = 'newsletter_main' and esp_member_id in ({})".format(",".join("?" * 5)),
            [m.id for m in chosen],
        ).fetchall()
    assert sorted(rows) == sorted((m.id, "unsubscribed", "esp_newer") for m in chosen)
    counts = mart_counts(tmp_path / "wh.duckdb")
    assert counts["newsletter_main"]["in_sync"] == scenario.expected["newsletter_main"]["in_sync"] - 5
    assert counts["newsletter_main"]["esp_newer"] == scenario.expected["newsletter_main"]["esp_newer"] + 5

    # an address changes in the CRM, another at the ESP: one email_changed row each
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        pairs = db.execute(
            "select crm_contact_id, esp_member_id, email_key from marts.fct_list_reconciliation "
            "where list_link_id = 'newsletter_main' and result = 'in_sync' and esp_status = 'subscribed' "
            "and crm_contact_id in (select crm_contact_id from marts.fct_list_reconciliation "
            "group by 1 having count(*) = 1) order by crm_contact_id limit 2"
        ).fetchall()
    (crm_changed, _, crm_old_key), (esp_changed, esp_member, esp_old_key) = pairs
    import sqlalchemy as sa

    engine = sa.create_engine(config.crm.connection_url(config.base_dir))
    with engine.begin() as connection:
        connection.execute(
            sa.text("update kontakte set email_adresse = :email where kontakt_id = :id"),
            {"email": "neue.adresse@beispiel.de", "id": int(crm_changed)},
        )
    engine.dispose()
    assert (
        api.patch(f"lists/nl0001/members/{esp_member}", json={"email_address": "umgezogen@beispiel.de"}).status_code
        == 200
    )

    changed = mailbridge("sync", "--incremental", "-c", str(config_file), env=env)
    assert changed.returncode == 0, changed.stderr + changed.stdout
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        rows = db.execute(
            "select crm_contact_id, email_key, former_email_key, result, rule, recommended_action "
            "from marts.fct_list_reconciliation where crm_contact_id in (?, ?) and list_link_id = 'newsletter_main'",
            [crm_changed, esp_changed],
        ).fetchall()
        stray = db.execute(
            "select count(*) from marts.fct_list_reconciliation where email_key in (?, ?, ?, ?) "
            "and result in ('new_contact', 'not_in_esp')",
            ["neue.adresse@beispiel.de", "umgezogen@beispiel.de", crm_old_key, esp_old_key],
        ).fetchone()[0]
    assert sorted(rows) == sorted(
        [
            (
                crm_changed,
                "neue.adresse@beispiel.de",
                crm_old_key,
                "email_changed",
                "email_changed_in_crm",
                "change_address_doi",
            ),
            (
                esp_changed,
                "umgezogen@beispiel.de",
                esp_old_key,
                "email_changed",
                "email_changed_at_esp",
                "update_crm_email",
            ),
        ]
    )
    assert stray == 0

    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    runs = DagsterInstance.get().get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert {run.job_name for run in runs} == {"full_sync", "incremental_sync"}
    assert len(runs) == 3
    # the analytics marts carry their headline KPIs into the UI
    from dagster import AssetKey

    performance = DagsterInstance.get().get_latest_materialization_event(
        AssetKey(["marts", "fct_campaign_performance"])
    )
    assert performance is not None and performance.asset_materialization is not None
    kpis = performance.asset_materialization.metadata["kpis"].value
    assert kpis.startswith("| campaign | sent on | sent |") and kpis.count("\n") >= 3

    # every build of the warehouse used one dbt target folder beside it, and the later ones
    # parsed only what changed (a folder of its own per run reparsed the project every time)
    # (dbt rotates its log at 10 MB: dbt.log.1 holds the earlier builds)
    log = "".join(path.read_text("utf-8") for path in sorted((tmp_path / "dbt_target").glob("dbt.log*")))
    assert log.count("running dbt with arguments") == 3
    assert log.count("Unable to do partial parsing") <= 1


def test_wrong_api_key_fails_the_sync_with_a_clear_message(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any
) -> None:
    emulator: RunningEmulator = serve_mailchimp(small_scenario)
    config_file = write_project_config(
        tmp_path,
        base_url=emulator.base_url,
        crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}",
        accounts=["brand_main"],
    )
    config = load_config(config_file)
    write_crm(small_scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    wrong = "feedfacefeedfacefeedfacefeedface-us1"
    env = {
        "MAILBRIDGE_MAILCHIMP_MAIN_KEY": wrong,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "MAILBRIDGE_WAREHOUSE": str(tmp_path / "wh.duckdb"),
    }
    result = mailbridge("sync", "--full", "-c", str(config_file), env=env)
    assert result.returncode == 1
    assert "brand_main" in result.stderr and "MAILBRIDGE_MAILCHIMP_MAIN_KEY" in result.stderr
    assert "401" in result.stderr
    assert wrong not in result.stderr + result.stdout
    logs = list((tmp_path).rglob("*.log"))
    assert all(wrong not in log.read_text(errors="replace") for log in logs)


def test_a_list_whose_read_breaks_off_is_aborted(tmp_path: Path, serve_mailchimp: Any) -> None:
    scenario = generate_scenario(contacts=300, seed=8)
    # every read of one list's members fails; the other lists load
    emulator: RunningEmulator = serve_mailchimp(scenario, rate_5xx=1.0, path_contains="/lists/pn0001/members")
    config_file = write_project_config(
        tmp_path,
        base_url=emulator.base_url,
        crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}",
        overrides={"extraction": {"max_retries": 1, "backoff_seconds": 0.01}},
    )
    config = load_config(config_file)
    write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    env = {**KEYS, "DAGSTER_HOME": str(tmp_path / "dagster"), "MAILBRIDGE_WAREHOUSE": str(tmp_path / "wh.duckdb")}
    result = mailbridge("sync", "--full", "-c", str(config_file), env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    counts = mart_counts(tmp_path / "wh.duckdb")
    assert set(counts["product_news_main"]) == {"aborted"}
    assert counts["newsletter_main"] == scenario.expected["newsletter_main"]
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        actions = db.execute(
            "select distinct recommended_action from marts.fct_list_reconciliation "
            "where list_link_id = 'product_news_main'"
        ).fetchall()
        events = db.execute(
            "select severity, message from marts.fct_sync_event_log where code = 'list_extraction_incomplete'"
        ).fetchall()
    assert actions == [("none",)]
    assert len(events) == 1 and events[0][0] == "error" and "pn0001" in events[0][1]


def test_a_report_that_cannot_be_read_warns_and_holds_nothing_up(tmp_path: Path, serve_mailchimp: Any) -> None:
    """A campaign report and another campaign's sent-to fail past their retries: the sync
    finishes, every list reconciles as it would without them, the sync output warns of each
    with its campaign, and the event log keeps them; the next sync reads them and is quiet."""
    scenario = generate_scenario(contacts=300, seed=8)
    rules = [
        {"method": "GET", "path_regex": r"/3\.0/reports/nl0001c01", "rate_5xx": 1.0},
        {"method": "GET", "path_regex": r"/3\.0/reports/sh0001c02/sent-to", "rate_5xx": 1.0},
    ]
    emulator: RunningEmulator = serve_mailchimp(scenario, rules=rules)
    config_file = write_project_config(
        tmp_path,
        base_url=emulator.base_url,
        crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}",
        overrides={"extraction": {"max_retries": 1, "backoff_seconds": 0.01}},
    )
    config = load_config(config_file)
    write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    env = {**KEYS, "DAGSTER_HOME": str(tmp_path / "dagster"), "MAILBRIDGE_WAREHOUSE": str(tmp_path / "wh.duckdb")}

    result = mailbridge("sync", "--full", "-c", str(config_file), env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert mart_counts(tmp_path / "wh.duckdb") == scenario.expected
    warnings = " ".join(result.stderr.split())
    assert "reports of campaign nl0001c01 at brand_main could not be read" in warnings
    assert "sent_to of campaign sh0001c02 at brand_shop could not be read" in warnings
    assert KEYS["MAILBRIDGE_MAILCHIMP_MAIN_KEY"] not in result.stderr + result.stdout
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        events = db.execute(
            "select severity, message, detail from marts.fct_sync_event_log where code = 'esp_read_failed' order by all"
        ).fetchall()
    assert [severity for severity, _, _ in events] == ["warning"] * 2
    assert "reports of campaign nl0001c01 at brand_main" in events[0][1] and "HTTP 50" in events[0][2]
    assert "sent_to of campaign sh0001c02 at brand_shop" in events[1][1]

    emulator.emulator.faults.configure(type(emulator.emulator.faults.settings)())
    healed = mailbridge("sync", "--incremental", "-c", str(config_file), env=env)
    assert healed.returncode == 0, healed.stderr + healed.stdout
    assert "could not be read" not in healed.stderr
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        report = db.execute("select count(*) from raw_mailchimp.reports where campaign_id = 'nl0001c01'").fetchone()
    assert report == (1,)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def text_columns_containing(warehouse: Path, needle: str) -> dict[str, int]:
    """Every warehouse column (schema.table.column) that holds `needle` in some row (text, JSON,
    structs and lists, as text), with the number of such rows."""
    found: dict[str, int] = {}
    with duckdb.connect(str(warehouse), read_only=True) as db:
        columns = db.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type = 'VARCHAR' or data_type like '%JSON%' or data_type like 'STRUCT%' "
            "or data_type like '%[]'"
        ).fetchall()
        for schema, table, column in columns:
            hits = db.execute(
                f'select count(*) from "{schema}"."{table}" where cast("{column}" as varchar) like ?', [f"%{needle}%"]
            ).fetchone()
            if hits and hits[0]:
                found[f"{schema}.{table}.{column}"] = hits[0]
    return found


@pytest.mark.parametrize("crm_url", ["postgresql"], indirect=True)
def test_demo_never_shows_or_stores_the_crm_password(tmp_path: Path, crm_url: str) -> None:
    import sqlalchemy as sa
    import yaml

    password = "Sentinel-Pw-7731"
    url = sa.engine.make_url(crm_url).set(password=password).render_as_string(hide_password=False)
    raw = yaml.safe_load((REPO_ROOT / "mailbridge.yaml").read_text("utf-8"))
    del raw["crm"]["url"]
    raw["crm"]["url_env"] = "MAILBRIDGE_TEST_CRM_URL"
    raw["warehouse"] = str(tmp_path / "mb" / "warehouse.duckdb")
    port = free_port()
    for account in raw["esp_accounts"]:
        account["base_url"] = f"http://127.0.0.1:{port}/3.0"
    config_file = tmp_path / "mailbridge.yaml"
    config_file.write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")

    result = mailbridge(
        "demo",
        "--contacts",
        "200",
        "-c",
        str(config_file),
        env={"MAILBRIDGE_TEST_CRM_URL": url, "DAGSTER_HOME": str(tmp_path / "dagster")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Rich folds a long URL over lines
    assert "demo CRM written (postgresql+psycopg://postgres:***@127.0.0.1:5432/test" in output.replace("\n", "")
    assert password not in output.replace("\n", "")
    assert text_columns_containing(tmp_path / "mb" / "warehouse.duckdb", password) == {}
    written = [
        str(path)
        for path in tmp_path.rglob("*")
        if path.is_file() and not path.name.endswith((".duckdb", ".parquet")) and password.encode() in path.read_bytes()
    ]
    assert written == []


def test_a_linked_list_the_crm_lacks_fails_the_sync_naming_the_key(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any
) -> None:
    emulator: RunningEmulator = serve_mailchimp(small_scenario)
    config_file = write_project_config(
        tmp_path, base_url=emulator.base_url, crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}", accounts=["brand_main"]
    )
    config = load_config(config_file)
    write_crm(small_scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    text = config_file.read_text("utf-8").replace("crm_list_id: PN", "crm_list_id: PNX")
    config_file.write_text(text, "utf-8")
    env = {**KEYS, "DAGSTER_HOME": str(tmp_path / "dagster"), "MAILBRIDGE_WAREHOUSE": str(tmp_path / "wh.duckdb")}
    result = mailbridge("sync", "--full", "-c", str(config_file), env=env)
    assert result.returncode == 1, result.stderr + result.stdout
    assert "list_links[1].crm_list_id" in result.stderr and "'PNX'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
