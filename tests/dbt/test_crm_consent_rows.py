"""CRM rows that could hide an opt-out: a contact with an unreadable value, and two assignment
rows for one contact and list. Extracted and built end to end, the CRM opt-out must reach the
reconciliation, and what was set aside must be in the event log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from mailbridge.config import MailbridgeConfig, load_config
from pipelines.runner import run_extractions
from sandbox.crm_db import write_crm
from tests.conftest import RunningEmulator, scenario_named, write_project_config
from tests.dbt.test_dbt_build import dbt_build
from tests.pipelines.test_crm_source import crm_execute, drop_assignment_key

RUN_ID = "consent-rows"
ASSIGNMENT_COLUMNS = "kontakt_id, verteiler_id, status, status_datum, status_gesetzt_von, aufgabe, zu_pruefen"


def build_world(
    tmp_path: Path, serve_mailchimp: Any, monkeypatch: pytest.MonkeyPatch, *crm_statements: str
) -> MailbridgeConfig:
    """The small scenario (its ESP has Anna and Dieter subscribed since 2025-01-01) in a SQLite
    CRM without a key on its assignments, changed by `crm_statements`, extracted and built."""
    scenario = scenario_named("small")
    emulator: RunningEmulator = serve_mailchimp(scenario)
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    config = load_config(
        write_project_config(tmp_path, base_url=emulator.base_url, crm_url=url, accounts=["brand_main"])
    )
    write_crm(scenario.tables, url, config.crm)
    drop_assignment_key(url)
    crm_execute(url, *crm_statements)
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", scenario.account("brand_main").api_key)
    run_extractions(config, full_refresh=True, run_id=RUN_ID)
    dbt_build(tmp_path, config.warehouse_path(), RUN_ID)
    return config


def reconciliation_of(db: duckdb.DuckDBPyConnection, email_key: str) -> tuple[Any, ...]:
    row = db.execute(
        "select result, rule, recommended_action, crm_status, esp_status from marts.fct_list_reconciliation "
        "where list_link_id = 'newsletter_main' and email_key = ?",
        [email_key],
    ).fetchone()
    assert row is not None, f"{email_key} is not in the reconciliation"
    return tuple(row)


def test_an_opt_out_of_a_contact_with_an_unreadable_value_still_propagates(
    tmp_path: Path, serve_mailchimp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = build_world(
        tmp_path,
        serve_mailchimp,
        monkeypatch,
        # Anna opted out by phone after her ESP subscribe; her record's modified time is unreadable
        "update verteiler_zuordnungen set status = 'abgemeldet', status_datum = '2025-06-01 09:00:00', "
        "status_gesetzt_von = 'telefon' where kontakt_id = 1",
        "update kontakte set geaendert_am = 'garbage' where kontakt_id = 1",
        # Dieter's opt-out has an unreadable time: unknown, so the opt-out wins
        "update verteiler_zuordnungen set status = 'abgemeldet', status_datum = 'letzte Woche' where kontakt_id = 4",
    )
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        anna = reconciliation_of(db, "anna.schmidt@beispiel.de")
        dieter = reconciliation_of(db, "dieter@xn--mller-kva.de")
        new_contacts = db.execute(
            "select email_key from marts.fct_list_reconciliation where result = 'new_contact'"
        ).fetchall()
        events = db.execute(
            "select severity, code, detail from marts.fct_sync_event_log "
            "where code = 'crm_row_rejected' order by detail"
        ).fetchall()
    assert anna == ("conflict", "crm_optout_newer", "unsubscribe", "unsubscribed", "subscribed")
    assert dieter == ("conflict", "crm_optout_newer", "unsubscribe", "unsubscribed", "subscribed")
    assert new_contacts == [("emil.neu@beispiel.de",)]
    # the values set aside are not lost without a word
    assert all(detail.startswith("row_key=") for _, _, detail in events)
    assert sorted((severity, code, detail.split("; ", 1)[1]) for severity, code, detail in events) == [
        ("error", "crm_row_rejected", "modified_at=garbage"),
        ("error", "crm_row_rejected", "status_changed_at=letzte Woche"),
    ]


def test_two_assignment_rows_for_one_contact_and_list_end_with_the_opt_out_and_a_warning(
    tmp_path: Path, serve_mailchimp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = build_world(
        tmp_path,
        serve_mailchimp,
        monkeypatch,
        # Dieter: subscribed on 2025-01-01 (as at the ESP), and a second row, unsubscribed later by phone
        f"insert into verteiler_zuordnungen ({ASSIGNMENT_COLUMNS}) "
        "values (4, 'NL', 'abgemeldet', '2025-06-01 09:00:00', 'telefon', null, 0)",
        # Bernd: two identical rows, nothing to decide
        f"insert into verteiler_zuordnungen ({ASSIGNMENT_COLUMNS}) "
        "select kontakt_id, verteiler_id, status, status_datum, status_gesetzt_von, aufgabe, zu_pruefen "
        "from verteiler_zuordnungen where kontakt_id = 2",
    )
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        dieter = reconciliation_of(db, "dieter@xn--mller-kva.de")
        assert dieter == ("conflict", "crm_optout_newer", "unsubscribe", "unsubscribed", "subscribed")
        memberships = db.execute(
            "select crm_contact_id, status, crm_status_value, assignment_rows from intermediate.int_crm__memberships "
            "order by crm_contact_id"
        ).fetchall()
        warnings = db.execute(
            "select severity, code, message, list_link_id, email_key, crm_contact_id, detail "
            "from marts.fct_sync_event_log where code like '%assignments'"
        ).fetchall()
    assert memberships == [
        ("1", "subscribed", "angemeldet", 1),
        ("2", "subscribed", "angemeldet", 2),
        ("4", "unsubscribed", "abgemeldet", 2),
    ]
    assert warnings == [
        (
            "warning",
            "conflicting_assignments",
            "CRM contact 4 has 2 differing assignment rows for list NL; the opt-out abgemeldet (unsubscribed) is taken",
            "newsletter_main",
            "dieter@xn--mller-kva.de",
            "4",
            "abgemeldet (unsubscribed) since 2025-06-01 09:00:00+00 by telefon, task -"
            " | angemeldet (subscribed) since 2025-01-01 10:00:00+00 by web, task -",
        )
    ]
