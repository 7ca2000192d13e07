"""Ways an opt-out was lost in the push-back loop, each kept fixed by a test on one small world
(tests/fixtures/scenarios/compliance.yaml): extract → dbt build → decide → push → extract again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import sqlalchemy as sa
import yaml

from mailbridge.config import MailbridgeConfig, load_config
from mailbridge.decisions import record_decision
from pipelines.mailchimp.helpers import subscriber_hash
from pipelines.pushback import PushAccountFailed, push
from pipelines.runner import run_extractions
from sandbox.crm_db import write_crm
from sandbox.scenario import Scenario
from tests.conftest import (
    RunningEmulator,
    copy_synced_world,
    crm_query,
    scenario_named,
    start_mailchimp,
    write_project_config,
)
from tests.dbt.test_dbt_build import dbt_build

LINK = "newsletter_main"
KEY_VARIABLE = "MAILBRIDGE_MAILCHIMP_MAIN_KEY"


class World:
    """The compliance scenario in an emulator, a SQLite CRM and a warehouse, synced once."""

    def __init__(self, folder: Path, emulator: RunningEmulator, scenario: Scenario) -> None:
        self.folder = folder
        self.emulator = emulator
        self.scenario = scenario
        config_file = write_project_config(
            folder, base_url=emulator.base_url, crm_url=f"sqlite:///{folder / 'crm.sqlite'}", accounts=["brand_main"]
        )
        self.config: MailbridgeConfig = load_config(config_file)
        self.syncs = 0

    def first_sync(self, template: Path | None) -> None:
        """The CRM written and synced once; from `template` when given: a copy of a world synced
        once from the same scenario (a sync only reads, so the fresh emulator is the one it read)."""
        if template is None:
            write_crm(self.scenario.tables, self.crm_url, self.config.crm)
            self.sync()
            return
        copy_synced_world(template, self.folder)
        self.syncs = 1

    @property
    def crm_url(self) -> str:
        return self.config.crm.connection_url(self.config.base_dir)

    @property
    def warehouse(self) -> Path:
        return self.config.warehouse_path()

    def sync(self) -> None:
        self.syncs += 1
        run_extractions(self.config, full_refresh=self.syncs == 1, run_id=f"sync-{self.syncs}")
        dbt_build(self.folder, self.warehouse, f"sync-{self.syncs}")

    def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        with duckdb.connect(str(self.warehouse), read_only=True) as db:
            cursor = db.execute(query, list(params))
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def reconciliation(self, address: str) -> dict[str, Any]:
        (row,) = self.rows("select * from marts.fct_list_reconciliation where email_key = ?", address)
        return row

    def queue(self, address: str) -> dict[str, tuple[str, str]]:
        rows = self.rows("select * from marts.fct_pushback_queue where email_key = ?", address)
        return {row["action"]: (row["action_source"], row["queue_status"]) for row in rows}

    def member(self, address: str) -> Any:
        return self.emulator.state.account_named("brand_main").get_list("nl0001").members.get(subscriber_hash(address))

    def patch_member(self, address: str, body: dict[str, Any]) -> None:
        """A change at the ESP through its API, with the account's key; it must be taken."""
        answer = httpx.patch(
            f"{self.emulator.base_url}/lists/nl0001/members/{subscriber_hash(address)}",
            json=body,
            auth=("mailbridge", self.scenario.account("brand_main").api_key),
        )
        assert answer.status_code == 200, answer.text

    def assignment(self, contact_id: int) -> dict[str, Any]:
        (row,) = crm_query(
            self.crm_url, f"select * from verteiler_zuordnungen where kontakt_id = {contact_id} and verteiler_id = 'NL'"
        )
        return row


def _world(folder: Path, monkeypatch: pytest.MonkeyPatch, template: Path | None = None) -> Iterator[World]:
    scenario = scenario_named("compliance")
    emulator = start_mailchimp(scenario)
    monkeypatch.setenv(KEY_VARIABLE, scenario.account("brand_main").api_key)
    monkeypatch.setenv("MAILBRIDGE_WAREHOUSE", str(folder / "warehouse.duckdb"))
    try:
        world = World(folder, emulator, scenario)
        world.first_sync(template)
        yield world
    finally:
        emulator.server.stop()


@pytest.fixture(scope="module")
def synced_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world synced once, for each test to copy: the first sync (extract and dbt build, about
    15 s) runs once per worker instead of once per test."""
    folder = tmp_path_factory.mktemp("template")
    with pytest.MonkeyPatch.context() as monkeypatch:
        worlds = _world(folder, monkeypatch)
        next(worlds)
        worlds.close()  # its emulator stops: each test serves one of its own
    return folder


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synced_template: Path) -> Iterator[World]:
    """A fresh world of its own, for a test that pushes."""
    yield from _world(tmp_path, monkeypatch, synced_template)


@pytest.fixture(scope="module")
def decided_world(tmp_path_factory: pytest.TempPathFactory, synced_template: Path) -> Iterator[World]:
    """One world for the tests that only read: synced, two refused decisions, rebuilt."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for world in _world(tmp_path_factory.mktemp("decided"), monkeypatch, synced_template):
            for address in ("gesperrt@beispiel.de", "crmabmeldung@beispiel.de"):
                record_decision(world.warehouse, address, LINK, "transmit", "lena")
            dbt_build(world.folder, world.warehouse, "decided")
            yield world


def test_a_profile_edit_at_the_esp_does_not_revive_a_crm_opt_out(decided_world: World) -> None:
    """Opted in at the ESP in January, out by phone in the CRM in June, a profile edit at the
    ESP in September: last_changed is no subscribe time, the CRM opt-out is the newer status."""
    row = decided_world.reconciliation("profil@beispiel.de")
    assert (row["rule"], row["recommended_action"], row["resolved_status"]) == (
        "crm_optout_newer",
        "unsubscribe",
        "unsubscribed",
    )
    assert row["esp_status_changed_at"].isoformat().startswith("2025-01-01")
    assert row["esp_status_time_precision"] == "opt_in"


def test_a_refused_decision_does_not_shadow_the_compliance_action(decided_world: World) -> None:
    # a blocklisted address still subscribed at the ESP: a transmit is refused, the unsubscribe runs
    assert decided_world.queue("gesperrt@beispiel.de") == {
        "transmit": ("manual", "refused"),
        "unsubscribe": ("policy", "ready"),
    }
    # an ESP opt-out newer than the CRM subscribe: the CRM task's transmit is refused, the CRM takes the opt-out
    assert decided_world.queue("espabmeldung@beispiel.de") == {
        "transmit": ("crm_task", "refused"),
        "set_status": ("policy", "ready"),
    }


def test_duplicate_contacts_outside_the_list_follow_the_duplicate_rule(decided_world: World) -> None:
    undecided = decided_world.reconciliation("doppelt@beispiel.de")
    assert (undecided["result"], undecided["crm_contact_id"]) == ("new_in_list", "4")
    assert "duplicate_contacts_undecided" in (undecided["warnings"] or "")
    by_name = decided_world.reconciliation("namensgleich@beispiel.de")
    assert (by_name["result"], by_name["crm_contact_id"]) == ("new_in_list", "7")
    assert not by_name["warnings"]
    events = decided_world.rows(
        "select code from marts.fct_sync_event_log where email_key = 'doppelt@beispiel.de' and severity = 'warning'"
    )
    assert {"code": "duplicate_contacts_undecided"} in events


def test_a_transmit_of_an_address_the_crm_opted_out_is_refused(decided_world: World) -> None:
    assert decided_world.queue("crmabmeldung@beispiel.de") == {"transmit": ("manual", "refused")}
    (row,) = decided_world.rows(
        "select queue_reason from marts.fct_pushback_queue where email_key = 'crmabmeldung@beispiel.de'"
    )
    assert "opted out in the CRM" in row["queue_reason"]


@pytest.mark.slow
def test_the_doi_grace_period_counts_from_when_the_doi_started(world: World) -> None:
    """The CRM subscribed in August against an older ESP opt-out: the push starts a DOI; the
    next sync finds it pending within the grace period, not past it (the CRM date is old)."""
    assert world.queue("doi@beispiel.de") == {"start_doi": ("policy", "ready")}
    push(world.config, run_id="push-doi")
    assert world.member("doi@beispiel.de").status == "pending"
    world.sync()
    row = world.reconciliation("doi@beispiel.de")
    assert (row["result"], row["rule"]) == ("in_sync", "doi_pending_within_grace")


@pytest.mark.slow
def test_a_manual_unsubscribe_reaches_both_sides_in_one_push(world: World) -> None:
    record_decision(world.warehouse, "beide@beispiel.de", LINK, "unsubscribe", "lena", note="asked by phone")
    dbt_build(world.folder, world.warehouse, "decided")
    assert world.queue("beide@beispiel.de") == {
        "unsubscribe": ("manual", "ready"),
        "set_status": ("manual", "ready"),
    }
    push(world.config, run_id="push-unsubscribe")
    assert world.member("beide@beispiel.de").status == "unsubscribed"
    assignment = world.assignment(10)
    assert (assignment["status"], assignment["status_gesetzt_von"]) == ("abgemeldet", "lena")
    (consent,) = crm_query(world.crm_url, "select * from einwilligungen where kontakt_id = 10")
    assert (consent["art"], consent["quelle"], consent["notiz"]) == ("decided_opt_out", "lena", "asked by phone")
    world.sync()
    assert world.reconciliation("beide@beispiel.de")["result"] == "in_sync"


@pytest.mark.slow
def test_push_and_its_dry_run_act_on_a_decision_made_after_the_sync(world: World) -> None:
    record_decision(world.warehouse, "nurcrm@beispiel.de", LINK, "transmit", "lena")
    dry = push(world.config, run_id="dry", dry_run=True)
    assert dry.counts[(LINK, "transmit", "manual")] == {"would_send": 1}
    pushed = push(world.config, run_id="push-decided")
    assert pushed.counts[(LINK, "transmit", "manual")] == {"sent": 1}
    assert world.member("nurcrm@beispiel.de").status == "subscribed"


@pytest.mark.slow
def test_a_task_word_the_crm_writer_rejects_is_answered_not_run_in_the_next_push(world: World) -> None:
    """A task word asks the CRM to take the ESP's status for a contact the ESP does not have yet,
    which the policy transmits. The writer rejects the word for good (no member to take a status
    from); kept in the CRM, the word ran in the next push, once the transmit had made the member,
    and a no-change rerun wrote to the CRM."""
    config_file = world.config.base_dir / "mailbridge.yaml"
    raw = yaml.safe_load(config_file.read_text("utf-8"))
    raw["policy"]["transmit_new_members"] = True
    config_file.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), "utf-8")
    world.config = load_config(config_file)
    engine = sa.create_engine(world.crm_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("update verteiler_zuordnungen set aufgabe = 'status_uebernehmen' where kontakt_id = 11")
        )
    engine.dispose()
    world.sync()
    assert world.queue("nurcrm@beispiel.de") == {"transmit": ("policy", "ready"), "set_status": ("crm_task", "ready")}
    push(world.config, run_id="push-1")
    assert world.member("nurcrm@beispiel.de").status == "subscribed"
    (rejected,) = world.rows(
        "select status, error_code, crm_task, task_cleared_at from ops.pushback_outbox "
        "where email_key = 'nurcrm@beispiel.de' and action = 'set_status'"
    )
    assert (rejected["status"], rejected["error_code"], rejected["crm_task"]) == (
        "rejected",
        "not_writable",
        "status_uebernehmen",
    )
    assert rejected["task_cleared_at"] is not None
    assert world.assignment(11)["aufgabe"] is None
    world.sync()
    assert world.queue("nurcrm@beispiel.de") == {}
    again = push(world.config, run_id="push-2")
    assert not [key for key in again.counts if key[1] == "set_status"], again.counts


@pytest.mark.slow
def test_refused_credentials_stop_the_account_and_keep_its_actions_ready(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = world.rows("select action_id from marts.fct_pushback_queue where queue_status = 'ready' and target = 'esp'")
    assert ready
    monkeypatch.setenv(KEY_VARIABLE, "0000000000000000wrongkey000000000-us1")
    with pytest.raises(PushAccountFailed) as failed:
        push(world.config, run_id="push-wrong-key")
    assert "brand_main" in str(failed.value) and "wrongkey" not in str(failed.value)
    attempts = world.rows(
        "select status, error_code from ops.pushback_outbox where run_id = 'push-wrong-key' and target like 'esp:%'"
    )
    assert attempts and {(a["status"], a["error_code"]) for a in attempts} == {("failed", "account_refused")}
    assert world.member("gesperrt@beispiel.de").status == "subscribed"  # nothing reached the ESP

    monkeypatch.setenv(KEY_VARIABLE, world.scenario.account("brand_main").api_key)
    again = push(world.config, run_id="push-right-key")
    assert again.counts[(LINK, "unsubscribe", "policy")] == {"sent": 2}
    assert world.member("gesperrt@beispiel.de").status == "unsubscribed"


@pytest.mark.slow
def test_a_crm_subscribe_taken_from_the_esp_waits_when_the_member_changed_since_the_sync(world: World) -> None:
    """The sync saw an ESP subscriber the CRM knows (its assignment is to be created); the
    member unsubscribes before the push: the push does not write the old subscribe."""
    assert world.queue("doppelt@beispiel.de") == {"create_assignment": ("policy", "ready")}
    world.patch_member("doppelt@beispiel.de", {"status": "unsubscribed"})
    push(world.config, run_id="push-after-change")
    (attempt,) = world.rows(
        "select status, error_code from ops.pushback_outbox where email_key = 'doppelt@beispiel.de'"
    )
    assert (attempt["status"], attempt["error_code"]) == ("stale", "esp_member_changed")
    assert crm_query(world.crm_url, "select * from verteiler_zuordnungen where kontakt_id in (4, 5)") == []
    world.sync()
    assert world.reconciliation("doppelt@beispiel.de")["esp_status"] == "unsubscribed"


@pytest.mark.slow
def test_a_refused_task_word_is_answered_and_cleared_not_run_once_the_state_changes(world: World) -> None:
    """A DOI asked by task word for a member still subscribed at the ESP is refused, while the
    CRM's newer phone opt-out goes out. Kept in the CRM, the word ran in the next push, once
    the unsubscribe had changed the state, and mailed a DOI to the person who had opted out."""
    engine = sa.create_engine(world.crm_url)
    with engine.begin() as connection:
        connection.execute(sa.text("update verteiler_zuordnungen set aufgabe = 'doi_starten' where kontakt_id = 1"))
    engine.dispose()
    world.sync()
    assert world.queue("profil@beispiel.de") == {
        "start_doi": ("crm_task", "refused"),
        "set_status": ("crm_task", "refused"),  # its CRM half (pending) stands or falls with it
        "unsubscribe": ("policy", "ready"),
    }
    push(world.config, run_id="push-1")
    assert world.member("profil@beispiel.de").status == "unsubscribed"
    assert world.assignment(1)["aufgabe"] is None
    (refusal,) = world.rows(
        "select status, error_code, crm_task from ops.pushback_outbox "
        "where email_key = 'profil@beispiel.de' and action = 'start_doi'"
    )
    assert refusal == {"status": "rejected", "error_code": "refused", "crm_task": "doi_starten"}
    world.sync()
    assert world.queue("profil@beispiel.de") == {}
    again = push(world.config, run_id="push-2")
    assert not [key for key in again.counts if key[1] == "start_doi"]
    assert world.member("profil@beispiel.de").status == "unsubscribed"


@pytest.mark.slow
def test_a_manual_unsubscribe_runs_on_a_state_that_changed_since_it_was_decided(world: World) -> None:
    """A person asked to be unsubscribed; before the next sync their name changed at the ESP.
    Any other decision made on the former state goes stale: this one ran on no state at all, and
    the opt-out was lost. An opt-out is carried out on today's state, once."""
    record_decision(world.warehouse, "beide@beispiel.de", LINK, "unsubscribe", "lena", note="asked by phone")
    world.patch_member("beide@beispiel.de", {"merge_fields": {"FNAME": "Beatrix"}})
    world.sync()
    assert world.queue("beide@beispiel.de") == {
        "unsubscribe": ("manual", "ready"),
        "set_status": ("manual", "ready"),
    }
    push(world.config, run_id="push-unsubscribe")
    assert world.member("beide@beispiel.de").status == "unsubscribed"
    assert world.assignment(10)["status"] == "abgemeldet"
    world.sync()
    assert world.queue("beide@beispiel.de") == {}
    again = push(world.config, run_id="push-again")
    assert not [key for key in again.counts if key[2] == "manual"]


@pytest.mark.slow
def test_a_decided_unsubscribe_that_was_already_done_does_not_come_back_when_the_person_opts_in_again(
    world: World,
) -> None:
    """Both sides had the address unsubscribed when the next push ran: the decision was done,
    for good. Once the person confirmed a new DOI, it came back and unsubscribed them again."""
    record_decision(world.warehouse, "beide@beispiel.de", LINK, "unsubscribe", "lena")
    world.patch_member("beide@beispiel.de", {"status": "unsubscribed"})
    engine = sa.create_engine(world.crm_url)
    with engine.begin() as connection:
        connection.execute(sa.text("update verteiler_zuordnungen set status = 'abgemeldet' where kontakt_id = 10"))
    world.sync()
    assert world.queue("beide@beispiel.de") == {}
    push(world.config, run_id="push-done")
    # the person opts in again: a DOI confirmed at the ESP, taken by the CRM
    world.patch_member("beide@beispiel.de", {"status": "pending"})
    confirm = f"{world.emulator.base_url.rsplit('/3.0', 1)[0]}/_sandbox/accounts/brand_main/lists/nl0001/members/"
    assert httpx.post(confirm + f"{subscriber_hash('beide@beispiel.de')}/confirm").status_code == 200
    world.sync()
    assert world.member("beide@beispiel.de").status == "subscribed"
    assert "unsubscribe" not in world.queue("beide@beispiel.de")


@pytest.mark.slow
def test_an_unsubscribe_task_word_on_a_duplicate_contact_runs_and_is_cleared_there(world: World) -> None:
    """Two contacts share the address; the duplicate rule picks the one whose name the ESP
    has. A CRM user set the unsubscribe word on the other: it was ignored, sync after sync."""
    engine = sa.create_engine(world.crm_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "insert into kontakte (kontakt_id, email_adresse, vorname, nachname, geaendert_am) "
                "values (20, 'beide@beispiel.de', 'Berta', 'Zweit', '2025-01-01 10:00:00')"
            )
        )
        connection.execute(
            sa.text(
                "insert into verteiler_zuordnungen (kontakt_id, verteiler_id, status, status_datum, "
                "status_gesetzt_von, aufgabe) values (20, 'NL', 'angemeldet', '2025-01-01 10:00:00', 'web', 'abmelden')"
            )
        )
    engine.dispose()
    world.sync()
    assert world.reconciliation("beide@beispiel.de")["crm_contact_id"] == "10"
    assert world.queue("beide@beispiel.de")["unsubscribe"] == ("crm_task", "ready")
    push(world.config, run_id="push-duplicate-task")
    assert world.member("beide@beispiel.de").status == "unsubscribed"
    assert world.assignment(20)["aufgabe"] is None
    world.sync()
    assert "unsubscribe" not in world.queue("beide@beispiel.de")


@pytest.mark.slow
def test_a_member_that_moved_on_from_an_opted_out_address_is_unsubscribed_with_its_new_crm_contact(
    world: World,
) -> None:
    """The CRM contact opted out by phone; before the push carried it to the ESP, the member
    changed its address there. The push unsubscribed the former address (a new member), and
    the moved member, unknown to the CRM, came to the CRM subscribed: the opt-out reached it
    only one push later, from the contact that push had made."""
    engine = sa.create_engine(world.crm_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "update verteiler_zuordnungen set status = 'abgemeldet', status_datum = :now, "
                "status_gesetzt_von = 'telefon' where kontakt_id = 10"
            ),
            {"now": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")},
        )
    engine.dispose()
    world.sync()
    assert world.queue("beide@beispiel.de") == {"unsubscribe": ("policy", "ready")}
    world.patch_member("beide@beispiel.de", {"email_address": "neu@beispiel.de"})
    push(world.config, run_id="push-stale-view")
    assert world.member("beide@beispiel.de").status == "unsubscribed"
    assert world.member("neu@beispiel.de").status == "subscribed"
    world.sync()
    assert world.reconciliation("neu@beispiel.de")["rule"] == "former_address_opted_out_at_esp"
    assert world.queue("neu@beispiel.de") == {
        "unsubscribe": ("policy", "ready"),
        "create_contact": ("policy", "ready"),
    }
    push(world.config, run_id="push-moved")
    assert world.member("neu@beispiel.de").status == "unsubscribed"
    (created,) = crm_query(
        world.crm_url,
        "select zuordnung.status from verteiler_zuordnungen as zuordnung "
        "join kontakte on kontakte.kontakt_id = zuordnung.kontakt_id "
        "where kontakte.email_adresse = 'neu@beispiel.de' and zuordnung.verteiler_id = 'NL'",
    )
    assert created["status"] == "abgemeldet"
    world.sync()
    assert world.queue("neu@beispiel.de") == {}
    assert world.reconciliation("neu@beispiel.de")["result"] == "in_sync"
