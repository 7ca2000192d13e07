"""CRM write-back on SQLite and the real PostgreSQL and MariaDB servers: every action, the
optimistic check, writes that are already there, consent records and task clearing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import sqlalchemy as sa

from mailbridge.config import MailbridgeConfig, load_config
from pipelines.crm.writer import CrmAction, CrmWriter
from pipelines.runner import extraction_named
from sandbox.crm_db import write_crm
from sandbox.scenario import load_scenario
from tests.conftest import SCENARIOS, write_project_config
from tests.conftest import crm_query as rows

SET_BY = "mailbridge:mailchimp:brand_main"
ESP_TIME = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)

# the PostgreSQL and MariaDB tests share one database and its table names: one worker runs them all


def extracted_world(
    tmp_path: Path, url: str, extra: dict[str, list[dict[str, Any]]] | None = None
) -> tuple[MailbridgeConfig, dict[str, dict[str, Any]]]:
    """The small scenario's CRM (plus `extra` rows by table), extracted; returns what the sync
    saw per contact id."""
    config = load_config(write_project_config(tmp_path, base_url=None, crm_url=url))
    tables = load_scenario(SCENARIOS / "small.yaml").tables
    for name, added in (extra or {}).items():
        tables[name] = pl.concat([tables[name], pl.DataFrame(added, schema=tables[name].schema)])
    write_crm(tables, url, config.crm)
    run = extraction_named(config, "crm", full_refresh=True, run_id="writer-test")
    run.pipeline.run(run.source)
    seen: dict[str, dict[str, Any]] = {}
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        for contact_id, email, first, last, salutation in db.execute(
            "select contact_id, email, first_name, last_name, salutation from raw_crm.contacts "
            "where _dlt_valid_to is null"
        ).fetchall():
            seen[contact_id] = {
                "contact": {"email": email, "first_name": first, "last_name": last, "salutation": salutation}
            }
        for contact_id, value, changed_at in db.execute(
            "select contact_id, crm_status_value, status_changed_at from raw_crm.assignments"
        ).fetchall():
            seen[contact_id] |= {"status_value": value, "changed_at": changed_at}
    return config, seen


def action(seen: dict[str, dict[str, Any]], contact_id: str | None, name: str, **extra: Any) -> CrmAction:
    row = seen.get(contact_id or "", {})
    values: dict[str, Any] = {
        "action_id": f"{name}-{contact_id}",
        "action": name,
        "action_source": "policy",
        "list_link_id": "newsletter_main",
        "crm_list_id": "NL",
        "crm_contact_id": contact_id,
        "email_address": row.get("contact", {}).get("email", "someone@beispiel.de"),
        "set_by": SET_BY,
        "esp_status": "subscribed",
        "esp_status_changed_at": ESP_TIME,
        "extracted_status_value": row.get("status_value"),
        "extracted_status_changed_at": row.get("changed_at"),
        "extracted_contact": row.get("contact", {}),
    }
    return CrmAction(**(values | extra))


def naive(value: Any) -> datetime:
    """A stored time (SQLite hands back text)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def execute(url: str, statement: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_every_crm_action_is_written_with_time_and_author(tmp_path: Path, crm_url: str) -> None:
    config, seen = extracted_world(tmp_path, crm_url)
    actions = [
        action(seen, "1", "set_status", esp_status="unsubscribed"),
        action(seen, "3", "create_assignment"),
        action(
            seen,
            None,
            "create_contact",
            email_address="emil.neu@beispiel.de",
            esp_values={"first_name": "Emil", "last_name": "Neu"},
        ),
        action(seen, "4", "mark_bounced", esp_status="bounced_hard"),
        action(seen, "2", "update_crm_fields", field_updates={"first_name": "Bernhard", "salutation": "Dr."}),
        action(seen, "3", "update_crm_email", email_address="carla.wolf@neu.de"),
        action(seen, "2", "record_consent"),
    ]
    with CrmWriter(crm_url, config.crm, config.field_mappings) as writer:
        outcomes = writer.apply(actions)
    assert [(o.action_id, o.status, o.error_code) for o in outcomes] == [(a.action_id, "sent", None) for a in actions]

    assignments = {
        (str(r["kontakt_id"]), r["verteiler_id"]): r for r in rows(crm_url, "select * from verteiler_zuordnungen")
    }
    contacts = {str(r["kontakt_id"]): r for r in rows(crm_url, "select * from kontakte")}
    anna = assignments[("1", "NL")]
    assert (anna["status"], anna["status_gesetzt_von"]) == ("abgemeldet", SET_BY)
    assert naive(anna["status_datum"]) == ESP_TIME.replace(tzinfo=None)  # the ESP's change time, in the CRM's zone

    carla = assignments[("3", "NL")]
    assert (carla["status"], bool(carla["zu_pruefen"]), carla["status_gesetzt_von"]) == ("angemeldet", True, SET_BY)
    emil_id = next(key for key, contact in contacts.items() if contact["email_adresse"] == "emil.neu@beispiel.de")
    emil = contacts[emil_id]
    assert (emil["vorname"], emil["nachname"], bool(emil["zu_pruefen"])) == ("Emil", "Neu", True)
    assert emil_id == "5"  # the next id after the CRM's highest
    assert assignments[(emil_id, "NL")]["status"] == "angemeldet"

    assert assignments[("4", "NL")]["status"] == "hardbounce"
    assert naive(contacts["4"]["bounce_am"]) == ESP_TIME.replace(tzinfo=None)
    assert (contacts["2"]["vorname"], contacts["2"]["anrede"]) == ("Bernhard", "Dr.")
    assert contacts["3"]["email_adresse"] == "carla.wolf@neu.de"
    history = rows(crm_url, "select * from email_historie")
    assert [(str(h["kontakt_id"]), h["email_adresse"]) for h in history] == [("3", "carla.wolf@beispiel.de")]

    consents = sorted(
        (str(c["kontakt_id"]), c["art"], c["quelle"]) for c in rows(crm_url, "select * from einwilligungen")
    )
    assert consents == [("2", "decided", SET_BY), ("3", "esp_opt_in", SET_BY), (emil_id, "esp_opt_in", SET_BY)]


def test_an_address_change_at_the_esp_moves_the_lists_duplicate_contacts_too(tmp_path: Path, crm_url: str) -> None:
    # Anna has a duplicate in the list (5) and another outside it (6); the ESP moves Anna's
    # address: a duplicate left at the former address would be transmitted as a new member
    base = {"first_name": "Anna", "last_name": "Schmidt", "salutation": "Frau", "modified_at": None}
    subscribed = {"status": "subscribed", "status_changed_at": ESP_TIME, "status_set_by": "web", "task": None}
    config, seen = extracted_world(
        tmp_path,
        crm_url,
        {
            "crm_contacts": [
                {"contact_id": 5, "email": "anna.schmidt@beispiel.de", **base},
                {"contact_id": 6, "email": "ANNA.SCHMIDT@beispiel.de", **base},
            ],
            "crm_assignments": [{"contact_id": 5, "list_id": "NL", **subscribed}],
        },
    )
    with CrmWriter(crm_url, config.crm, config.field_mappings) as writer:
        outcomes = writer.apply([action(seen, "1", "update_crm_email", email_address="anna@neu.de")])
    assert [(o.status, o.error_code) for o in outcomes] == [("sent", None)]
    contacts = {str(r["kontakt_id"]): r["email_adresse"] for r in rows(crm_url, "select * from kontakte")}
    assert (contacts["1"], contacts["5"], contacts["6"]) == ("anna@neu.de", "anna@neu.de", "ANNA.SCHMIDT@beispiel.de")
    history = sorted((str(h["kontakt_id"]), h["email_adresse"]) for h in rows(crm_url, "select * from email_historie"))
    assert history == [("1", "Anna.Schmidt@Beispiel.de"), ("5", "anna.schmidt@beispiel.de")]


def test_a_member_deleted_at_the_esp_takes_the_lists_duplicate_assignments_along(tmp_path: Path, crm_url: str) -> None:
    # Anna (1) has a duplicate in the list (5): left assigned, it would bring the deleted member
    # back as an ESP status to take
    base = {"first_name": "Anna", "last_name": "Schmidt", "salutation": "Frau", "modified_at": None}
    subscribed = {"status": "subscribed", "status_changed_at": ESP_TIME, "status_set_by": "web", "task": None}
    config, _ = extracted_world(
        tmp_path,
        crm_url,
        {
            "crm_contacts": [{"contact_id": 5, "email": "anna.schmidt@beispiel.de", **base}],
            "crm_assignments": [{"contact_id": 5, "list_id": "NL", **subscribed}],
        },
    )
    with CrmWriter(crm_url, config.crm, config.field_mappings) as writer:
        assert writer.remove_assignments([("1", "NL")]) == 2
    left = sorted(str(r["kontakt_id"]) for r in rows(crm_url, "select * from verteiler_zuordnungen"))
    assert left == ["2", "4"]


def test_a_row_changed_since_the_sync_is_skipped_as_stale(tmp_path: Path, crm_url: str) -> None:
    config, seen = extracted_world(tmp_path, crm_url)
    # a CRM user works on Bernd and Anna after the sync
    execute(crm_url, "update verteiler_zuordnungen set status_datum = '2025-09-09 09:09:09' where kontakt_id = 2")
    execute(crm_url, "update kontakte set vorname = 'Annemarie' where kontakt_id = 1")
    actions = [
        action(seen, "2", "set_status", esp_status="unsubscribed"),
        action(seen, "1", "update_crm_email", email_address="anna@neu.de"),
        action(seen, "1", "create_assignment", esp_status="unsubscribed"),  # Anna is subscribed there
        # Bernd's address has a contact now, already on the list with another status
        action(seen, None, "create_contact", email_address="BERND.meier@beispiel.de", esp_status="unsubscribed"),
    ]
    before = rows(crm_url, "select * from verteiler_zuordnungen order by kontakt_id")
    with CrmWriter(crm_url, config.crm) as writer:
        outcomes = writer.apply(actions)
    assert [o.status for o in outcomes] == ["stale"] * 4
    assert "status changed since the sync" in str(outcomes[0].error_message)
    assert "first_name changed" in str(outcomes[1].error_message)
    assert rows(crm_url, "select * from verteiler_zuordnungen order by kontakt_id") == before
    assert rows(crm_url, "select email_adresse from kontakte where kontakt_id = 1") == [
        {"email_adresse": "Anna.Schmidt@Beispiel.de"}
    ]


def test_a_write_already_in_the_crm_counts_as_written_and_tasks_are_cleared(tmp_path: Path, crm_url: str) -> None:
    config, seen = extracted_world(tmp_path, crm_url)
    execute(crm_url, "update verteiler_zuordnungen set aufgabe = 'abmelden' where kontakt_id in (1, 2)")
    unsubscribe = action(seen, "1", "set_status", esp_status="unsubscribed")
    with CrmWriter(crm_url, config.crm) as writer:
        first = writer.apply([unsubscribe])
        # the push died after the commit, before the outbox heard of it: the rerun finds it done
        again = writer.apply([unsubscribe])
        cleared = writer.clear_tasks([("1", "NL", "abmelden"), ("2", "NL", "loeschen")])
    assert (first[0].status, again[0].status, again[0].error_code) == ("sent", "sent", "already_applied")
    tasks = {str(r["kontakt_id"]): r["aufgabe"] for r in rows(crm_url, "select * from verteiler_zuordnungen")}
    # only a task that still says what was executed is cleared
    assert cleared == 1 and tasks["1"] is None and tasks["2"] == "abmelden"


def test_what_the_crm_cannot_hold_is_rejected_not_half_written(tmp_path: Path, crm_url: str) -> None:
    config, seen = extracted_world(tmp_path, crm_url)
    no_consents = config.crm.model_copy(update={"consents": None})
    actions = [
        action(seen, "1", "record_consent"),
        action(seen, "1", "set_status", esp_status="archived"),  # written as the CRM word "entfernt"
        action(seen, "3", "create_assignment", esp_status=None),
        action(seen, "2", "update_crm_fields", field_updates={"shoe_size": "44"}),
    ]
    with CrmWriter(crm_url, no_consents) as writer:
        outcomes = writer.apply(actions)
    assert [(o.status, o.error_code) for o in outcomes] == [
        ("rejected", "not_writable"),
        ("sent", None),
        ("rejected", "not_writable"),
        ("rejected", "not_writable"),
    ]
    assert "crm.consents is not mapped" in str(outcomes[0].error_message)
    assert "ESP has no member" in str(outcomes[2].error_message)
    assert rows(crm_url, "select count(*) as n from verteiler_zuordnungen where kontakt_id = 3") == [{"n": 0}]


def test_one_new_address_on_two_lists_is_one_contact(tmp_path: Path, crm_url: str) -> None:
    config, seen = extracted_world(tmp_path, crm_url)
    emil = {"email_address": "Emil.Neu@beispiel.de", "esp_values": {"first_name": "Emil"}}
    actions = [
        action(seen, None, "create_contact", **emil),
        action(seen, None, "create_contact", crm_list_id="PN", **emil),
    ]
    with CrmWriter(crm_url, config.crm) as writer:
        assert [o.status for o in writer.apply(actions)] == ["sent", "sent"]
        # run again (a push that died after the commit): nothing new
        assert [o.error_code for o in writer.apply(actions)] == ["already_applied", "already_applied"]
    contacts = rows(crm_url, "select kontakt_id from kontakte where lower(email_adresse) = 'emil.neu@beispiel.de'")
    assert len(contacts) == 1
    lists = rows(
        crm_url, f"select verteiler_id from verteiler_zuordnungen where kontakt_id = {contacts[0]['kontakt_id']}"
    )
    assert sorted(r["verteiler_id"] for r in lists) == ["NL", "PN"]
