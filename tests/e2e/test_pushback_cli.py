"""Acceptance of the push-back loop, through the CLI and Dagster: fetch → decide (CLI and CRM
task column) → send refused → sync_and_push → everything executed is in_sync and confirmed,
compliance refusals are logged, the send goes out, and a rerun writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from mailbridge.config import load_config
from pipelines.mailchimp.helpers import subscriber_hash
from sandbox.crm_db import write_crm
from sandbox.scenario import load_scenario
from tests.conftest import SCENARIOS, RunningEmulator, write_project_config
from tests.e2e.test_sync_cli import KEYS, mailbridge, mart_counts

pytestmark = pytest.mark.slow

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def results(warehouse: Path) -> dict[str, str]:
    with duckdb.connect(str(warehouse), read_only=True) as db:
        rows = db.execute("select email_key, result from marts.fct_list_reconciliation").fetchall()
    return dict(rows)


def test_decide_push_verify_and_send_through_the_cli(tmp_path: Path, serve_mailchimp: Any) -> None:
    scenario = load_scenario(SCENARIOS / "pushback.yaml")
    emulator: RunningEmulator = serve_mailchimp(scenario)
    config_file = write_project_config(
        tmp_path, base_url=emulator.base_url, crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}", accounts=["brand_main"]
    )
    config = load_config(config_file)
    crm_url = config.crm.connection_url(config.base_dir)
    write_crm(scenario.tables, crm_url, config.crm)
    warehouse = tmp_path / "wh.duckdb"
    env = {**KEYS, "DAGSTER_HOME": str(tmp_path / "dagster"), "MAILBRIDGE_WAREHOUSE": str(warehouse)}

    def cli(*args: str) -> Any:
        return mailbridge(*args, "-c", str(config_file), env=env)

    # fetch
    full = cli("sync", "--full")
    assert full.returncode == 0, full.stderr + full.stdout
    assert mart_counts(warehouse) == scenario.expected

    # decide: a transmit, and two the compliance rules refuse
    warnings = {}
    for address in ("bernd@beispiel.de", "heidi@gesperrt.de", "ida@beispiel.de"):
        decided = cli("decide", address, "--list", "newsletter_main", "--action", "transmit", "--by", "lena")
        assert decided.returncode == 0, decided.stderr
        warnings[address] = decided.stderr
    assert "blocklist" in warnings["heidi@gesperrt.de"] and "opted out" in warnings["ida@beispiel.de"]

    # the campaign may not go out while Frida's opt-out waits to be pushed
    refused = cli("send", "cmp_next")
    assert refused.returncode == 1
    assert "opt-out or blocklist action(s)" in refused.stderr and "frida@beispiel.de" in refused.stderr
    assert emulator.state.account_named("brand_main").campaigns["cmp_next"].status == "save"

    # the dry run shows what would be written, and writes nothing
    emulator.emulator.log.clear()
    dry = cli("push", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would_send" in dry.stdout and "would_write" in dry.stdout
    assert not [e for e in emulator.emulator.log.snapshot() if e.method in WRITES]

    # sync_and_push: incremental sync → reconcile → push → incremental sync to verify
    pushed = cli("sync", "--push")
    assert pushed.returncode == 0, pushed.stderr + pushed.stdout
    assert "sync_and_push finished" in pushed.stdout

    with duckdb.connect(str(warehouse), read_only=True) as db:
        outbox = db.execute("select email_key, action, status from ops.pushback_outbox order by email_key").fetchall()
        refusals = db.execute(
            "select email_key, code from marts.fct_sync_event_log where code = 'queue_refused' order by email_key"
        ).fetchall()
        send_events = db.execute(
            "select code, severity, message from marts.fct_sync_event_log where code like 'campaign_%'"
        ).fetchall()
    assert outbox == [
        ("bernd@beispiel.de", "transmit", "confirmed"),
        ("carla@beispiel.de", "create_assignment", "confirmed"),
        ("emil@beispiel.de", "create_contact", "confirmed"),
        ("frida@beispiel.de", "unsubscribe", "confirmed"),
        ("gustav@beispiel.de", "transmit", "confirmed"),
        # the refused transmit changed nothing: the policy's DOI for Ida's newer CRM subscribe ran
        ("ida@beispiel.de", "start_doi", "confirmed"),
        ("jonas@beispiel.de", "mark_bounced", "confirmed"),
        ("karl@beispiel.de", "set_status", "confirmed"),
    ]
    executed = {key for key, _, _ in outbox}
    now = results(warehouse)
    assert {key: now[key] for key in executed} == dict.fromkeys(executed, "in_sync")
    # refused and logged, never sent
    assert now["heidi@gesperrt.de"] == "blocked"
    assert set(refusals) >= {("heidi@gesperrt.de", "queue_refused"), ("ida@beispiel.de", "queue_refused")}
    # the refused send is in the event log, with its reason
    assert [(code, severity) for code, severity, _ in send_events] == [("campaign_refused", "warning")]
    assert "frida@beispiel.de" in send_events[0][2]
    members = emulator.state.account_named("brand_main").lists["nl0001"].members
    assert subscriber_hash("heidi@gesperrt.de") not in members
    assert members[subscriber_hash("ida@beispiel.de")].status == "pending"  # through DOI, never a plain subscribe
    assert members[subscriber_hash("gustav@beispiel.de")].status == "subscribed"

    # the CRM: set by mailbridge, new rows flagged for review, the executed task cleared
    engine = sa.create_engine(crm_url)
    with engine.connect() as connection:
        crm = {
            row.email_adresse: row
            for row in connection.execute(
                sa.text(
                    "select k.email_adresse, k.zu_pruefen as contact_review, k.bounce_am, z.status, "
                    "z.status_gesetzt_von, z.aufgabe, z.zu_pruefen as assignment_review "
                    "from kontakte k join verteiler_zuordnungen z on k.kontakt_id = z.kontakt_id"
                )
            )
        }
    engine.dispose()
    assert crm["emil@beispiel.de"].contact_review and crm["carla@beispiel.de"].assignment_review
    assert crm["jonas@beispiel.de"].status == "hardbounce" and crm["jonas@beispiel.de"].bounce_am is not None
    assert (crm["karl@beispiel.de"].status, crm["karl@beispiel.de"].status_gesetzt_von) == (
        "abgemeldet",
        "mailbridge:mailchimp:brand_main",
    )
    assert crm["gustav@beispiel.de"].aufgabe is None

    # now the campaign goes out
    sent = cli("send", "cmp_next")
    assert sent.returncode == 0, sent.stderr
    assert emulator.state.account_named("brand_main").campaigns["cmp_next"].status == "sent"

    # a rerun with no change writes nothing
    emulator.emulator.log.clear()
    again = cli("push")
    assert again.returncode == 0, again.stderr
    assert "Nothing to push" in again.stdout
    assert not [e for e in emulator.emulator.log.snapshot() if e.method in WRITES]
