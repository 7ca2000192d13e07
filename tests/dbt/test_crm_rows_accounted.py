"""Every CRM row read is accounted for: it reaches a mart, or it is in raw_crm.rejected_rows and
the event log with a reason. Bad rows never leave a state that fails the next build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mailbridge.config import MailbridgeConfig, load_config
from pipelines.runner import run_extractions
from sandbox.crm_db import write_crm
from tests.conftest import RunningEmulator, scenario_named, shared_dbt_target, write_project_config
from tests.dbt.test_dbt_build import dbt_build
from tests.pipelines.test_crm_source import crm_execute, drop_assignment_key, drop_table_key

RUN_ID = "rows-accounted"


def extract_world(
    tmp_path: Path, serve_mailchimp: Any, monkeypatch: pytest.MonkeyPatch, *crm_statements: str
) -> MailbridgeConfig:
    """The small scenario in a SQLite CRM whose tables have no keys, changed by `crm_statements`
    and extracted (not built)."""
    scenario = scenario_named("small")
    emulator: RunningEmulator = serve_mailchimp(scenario)
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    config = load_config(
        write_project_config(tmp_path, base_url=emulator.base_url, crm_url=url, accounts=["brand_main"])
    )
    write_crm(scenario.tables, url, config.crm)
    drop_assignment_key(url)
    drop_table_key(url, "kontakte")
    crm_execute(url, *crm_statements)
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", scenario.account("brand_main").api_key)
    run_extractions(config, full_refresh=True, run_id=RUN_ID)
    return config


def build(tmp_path: Path, config: MailbridgeConfig, run_id: str = RUN_ID) -> None:
    """The build a sync runs, in this process on the worker's parsed project; it must pass."""
    dbt_build(tmp_path, config.warehouse_path(), run_id)


ASSIGNMENT_COLUMNS = "kontakt_id, verteiler_id, status, status_datum, status_gesetzt_von"


def test_bad_crm_rows_are_each_an_event_and_every_row_read_is_accounted_for(
    tmp_path: Path, serve_mailchimp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = extract_world(
        tmp_path,
        serve_mailchimp,
        monkeypatch,
        # two rows rejected for the same reason with the same value
        "insert into kontakte (kontakt_id, email_adresse) values (null, 'ohne.id@beispiel.de')",
        "insert into kontakte (kontakt_id, email_adresse) values (null, 'auch.ohne.id@beispiel.de')",
        # a contact id held twice
        "insert into kontakte (kontakt_id, email_adresse, geaendert_am) "
        "values (2, 'bernd.zweit@beispiel.de', '2019-01-01 00:00:00')",
        # a contact on no list
        "insert into kontakte (kontakt_id, email_adresse) values (5, 'fritz@beispiel.de')",
        # an opt-out by phone for a contact the CRM does not have, twice; one on a list no link names
        f"insert into verteiler_zuordnungen ({ASSIGNMENT_COLUMNS}) "
        "values (99, 'NL', 'abgemeldet', '2025-06-01 09:00:00', 'telefon')",
        f"insert into verteiler_zuordnungen ({ASSIGNMENT_COLUMNS}) "
        "values (99, 'NL', 'abgemeldet', '2025-06-01 09:00:00', 'telefon')",
        f"insert into verteiler_zuordnungen ({ASSIGNMENT_COLUMNS}) "
        "values (1, 'XX', 'angemeldet', '2025-06-01 09:00:00', 'web')",
        # blocklist entries that block nothing, and one that does
        "insert into sperrliste (email_adresse) values ('***')",
        "insert into sperrliste (email_adresse) values ('*@')",
        "insert into sperrliste (email_adresse) values ('*@ex ample.com')",
        "insert into sperrliste (email_adresse) values ('*@beispiel.de')",
    )
    build(tmp_path, config)
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        events = db.execute(
            "select event_id, severity, code, list_link_id, crm_contact_id, message, detail "
            "from marts.fct_sync_event_log where code in ('crm_row_rejected', 'crm_assignment_unknown_contact') "
            "order by code, detail"
        ).fetchall()
        accounted = db.execute(
            "select entity, outcome, row_count from marts.fct_crm_row_accounting "
            "where run_id = ? order by entity, outcome",
            [RUN_ID],
        ).fetchall()
        read = dict(db.execute("select entity, rows_read from raw_crm.extractions").fetchall())
        blocked = db.execute("select count(*) from marts.fct_list_reconciliation where result = 'blocked'")
        blocked_count = blocked.fetchone()[0]
    assert len({event[0] for event in events}) == len(events) == 7
    rejected = [(severity, message) for _, severity, code, _, _, message, _ in events if code == "crm_row_rejected"]
    assert [severity for severity, _ in rejected] == ["error"] * 6
    assert sum("the row has no contact_id" in message for _, message in rejected) == 2
    assert sum("2 rows have contact_id '2'" in message for _, message in rejected) == 1
    assert sum("it blocks nothing" in message for _, message in rejected) == 3
    unknown = [event[1:] for event in events if event[2] == "crm_assignment_unknown_contact"]
    assert unknown == [
        (
            "error",
            "crm_assignment_unknown_contact",
            "newsletter_main",
            "99",
            "CRM contact 99 is assigned to list NL but the CRM has no such contact: the assignment is not "
            "reconciled, and its opt-out (abgemeldet) reaches no ESP",
            "2 assignment rows: abgemeldet (unsubscribed) since 2025-06-01 09:00:00+00 by telefon, task -",
        )
    ]
    assert blocked_count == 4  # the *@beispiel.de entry is enforced
    assert accounted == [
        ("assignments", "list_not_linked", 1),
        ("assignments", "reconciled", 3),
        ("assignments", "unknown_contact", 2),
        ("blocklist", "enforced", 1),
        ("blocklist", "rejected", 3),
        ("contacts", "not_on_a_linked_list", 1),
        ("contacts", "reconciled", 4),
        ("contacts", "rejected", 3),
        ("lists", "linked", 2),  # NL and PN; SH is a CRM list no link names
        ("lists", "not_linked", 1),
    ]
    for entity, rows_read in read.items():
        assert sum(rows for name, _, rows in accounted if name == entity) == rows_read, entity

    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        esp = db.execute(
            "select esp_list_id, outcome, sum(row_count), max(rows_read) from marts.fct_esp_row_accounting "
            "where run_id = ? group by all order by all",
            [RUN_ID],
        ).fetchall()
        members = dict(db.execute("select list_id, count(*) from raw_mailchimp.members group by all").fetchall())
    # every member read is a reconciliation row, and each list's count adds up
    assert {outcome for _, outcome, _, _ in esp} == {"reconciled"}
    assert {list_id: (rows, read) for list_id, _, rows, read in esp} == {
        list_id: (count, count) for list_id, count in members.items()
    }


def test_an_event_log_left_with_shared_ids_is_repaired_by_the_next_build(
    tmp_path: Path, serve_mailchimp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = extract_world(tmp_path, serve_mailchimp, monkeypatch)
    build(tmp_path, config, "first")
    with duckdb.connect(str(config.warehouse_path())) as db:
        # what an earlier build whose ids collided left behind: the same event twice, and a
        # different event under the same id
        db.execute(
            "insert into marts.fct_sync_event_log select * from marts.fct_sync_event_log where code = 'new_contact'"
        )
        db.execute(
            "insert into marts.fct_sync_event_log select event_id, run_id, logged_at, severity, code, "
            "'another event', list_link_id, email_key, crm_contact_id, detail from marts.fct_sync_event_log "
            "where code = 'not_in_esp'"
        )
        before = db.execute("select count(*), count(distinct event_id) from marts.fct_sync_event_log").fetchone()
    build(tmp_path, config, "second")
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        first_run = db.execute(
            "select code, message from marts.fct_sync_event_log where run_id = 'first' order by code, message"
        ).fetchall()
        after = db.execute("select count(*), count(distinct event_id) from marts.fct_sync_event_log").fetchone()
    assert before[0] == before[1] + 2
    assert after[0] == after[1]
    # the exact copy is gone, the different event is kept under an id of its own
    assert [code for code, _ in first_run].count("new_contact") == 1
    assert [message for code, message in first_run if code == "not_in_esp"] == [
        "another event",
        "not_in_esp (rule crm_subscribed_unknown_to_esp): recommended await_decision",
    ]


def test_a_crm_row_or_esp_member_lost_on_the_way_is_warned_of_by_the_count_checks(
    tmp_path: Path, serve_mailchimp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = extract_world(tmp_path, serve_mailchimp, monkeypatch)
    with duckdb.connect(str(config.warehouse_path())) as db:
        db.execute("delete from raw_crm.assignments where contact_id = '4'")
        db.execute("delete from raw_mailchimp.members where id = (select min(id) from raw_mailchimp.members)")
    # warned of, but the build passes: a failed one would hold back every push, opt-outs too
    build(tmp_path, config)
    results = json.loads((shared_dbt_target(tmp_path) / "run_results.json").read_text())["results"]
    warned = [r["unique_id"] for r in results if r["status"] == "warn"]
    for check in ("every_crm_row_is_accounted_for", "every_esp_row_is_accounted_for"):
        assert [name for name in warned if check in name], (check, warned)
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        lost = db.execute("select sum(row_count) from marts.fct_esp_row_accounting where outcome = 'lost'")
        assert lost.fetchone()[0] == 1
