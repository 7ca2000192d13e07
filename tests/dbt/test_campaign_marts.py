"""The campaign marts on a campaign whose every count is known (scenarios/campaign.yaml): the
figures are exactly the expected ones, and they equal the emulator's own report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from mailbridge.config import MailbridgeConfig
from sandbox.scenario import Scenario
from tests.conftest import RunningEmulator, scenario_named, start_mailchimp
from tests.dbt.test_dbt_build import dbt_build, load_small_world

EXPECTED = {
    "sent": 8,
    "bounces": 2,
    "bounces_hard": 1,
    "bounces_soft": 1,
    "delivered": 6,
    "unique_opens": 3,  # anna (three times), bernd, frida
    "total_opens": 5,
    "unique_clicks": 2,  # anna (two links, one twice), gustav (without an open)
    "total_clicks": 4,
    "unsubscribes": 1,
    "complaints": 1,  # heidi marked it as spam
    "no_reaction": 2,  # emil, heidi
    "delivery_rate": 6 / 8,
    "open_rate": 3 / 6,
    "click_rate": 2 / 6,
    "click_to_open_rate": 2 / 3,
    "unsubscribe_rate": 1 / 6,
    "bounce_rate": 2 / 8,
    "no_reaction_rate": 2 / 6,
}
# the marts' figure and the name Mailchimp's report gives it
REPORT_FIGURES = {
    "sent": ("emails_sent",),
    "bounces_hard": ("bounces", "hard_bounces"),
    "bounces_soft": ("bounces", "soft_bounces"),
    "unique_opens": ("opens", "unique_opens"),
    "total_opens": ("opens", "opens_total"),
    "unique_clicks": ("clicks", "unique_subscriber_clicks"),
    "total_clicks": ("clicks", "clicks_total"),
    "unsubscribes": ("unsubscribed",),
    "complaints": ("abuse_reports",),
    "open_rate": ("opens", "open_rate"),
    "click_rate": ("clicks", "click_rate"),
}


def rows(warehouse: Path, query: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(warehouse), read_only=True) as db:
        cursor = db.execute(query)
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


@contextmanager
def campaign_world(
    folder: Path, monkeypatch: pytest.MonkeyPatch, run_id: str
) -> Iterator[tuple[Path, MailbridgeConfig, RunningEmulator, Scenario]]:
    """The campaign scenario in an emulator of its own and a SQLite CRM, extracted once; the
    emulator stops when the block ends."""
    scenario = scenario_named("campaign")
    emulator = start_mailchimp(scenario)
    try:
        config_file, config = load_small_world(folder, lambda s: emulator, scenario, monkeypatch, run_id)
        yield config_file, config, emulator, scenario
    finally:
        emulator.server.stop()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("campaign")
    with pytest.MonkeyPatch.context() as monkeypatch, campaign_world(folder, monkeypatch, "campaign") as world:
        _, config, emulator, scenario = world
        dbt_build(folder, config.warehouse_path(), "campaign")
        report = httpx.get(
            f"{emulator.base_url}/reports/cmp100", auth=("x", scenario.account("brand_main").api_key)
        ).json()
        yield config.warehouse_path(), report


def test_a_known_campaign_has_exactly_its_counts_and_rates(built: Any) -> None:
    warehouse, _ = built
    (performance,) = rows(warehouse, "select * from marts.fct_campaign_performance where campaign_id = 'cmp100'")
    got = {figure: performance[figure] for figure in EXPECTED}
    assert got == pytest.approx(EXPECTED)
    assert performance["campaign_title"] == "Juni" and performance["list_link_id"] == "newsletter_main"


def test_the_figures_equal_the_esps_own_report(built: Any) -> None:
    warehouse, report = built
    (performance,) = rows(warehouse, "select * from marts.fct_campaign_performance where campaign_id = 'cmp100'")
    for figure, path in REPORT_FIGURES.items():
        value: Any = report
        for key in path:
            value = value[key]
        assert performance[figure] == pytest.approx(value, abs=1e-4), figure
    # and the report as extracted into the warehouse
    (extracted,) = rows(warehouse, "select * from staging.stg_mailchimp__reports where campaign_id = 'cmp100'")
    assert (extracted["emails_sent"], extracted["unique_opens"], extracted["total_opens"]) == (
        performance["sent"],
        performance["unique_opens"],
        performance["total_opens"],
    )
    assert (extracted["unique_clickers"], extracted["total_clicks"], extracted["emails_delivered"]) == (
        performance["unique_clicks"],
        performance["total_clicks"],
        performance["delivered"],
    )


def test_each_recipient_row_tells_what_the_mailing_did(built: Any) -> None:
    warehouse, _ = built
    recipients = {
        row["email_key"]: row
        for row in rows(warehouse, "select * from marts.fct_campaign_recipients where campaign_id = 'cmp100'")
    }
    assert len(recipients) == 8
    anna = recipients["anna@beispiel.de"]
    assert (anna["opens"], anna["unique_open"], anna["clicks"], anna["clicked_urls"]) == (3, True, 3, 2)
    assert anna["crm_contact_id"] == "1" and anna["was_delivered"]
    assert str(anna["first_open_at"]).startswith("2025-06-01 09:00")
    assert recipients["carla@beispiel.de"]["bounce_type"] == "hard"
    assert not recipients["carla@beispiel.de"]["was_delivered"]
    assert recipients["dora@beispiel.de"]["bounce_type"] == "soft"
    assert recipients["frida@beispiel.de"]["unsubscribed_via_campaign"]
    gustav = recipients["gustav@beispiel.de"]
    assert (gustav["clicked"], gustav["unique_open"]) == (True, False)
    # the draft has a row, with nothing sent and no rates
    (draft,) = rows(warehouse, "select * from marts.fct_campaign_performance where campaign_id = 'cmp101'")
    assert (draft["sent"], draft["open_rate"]) == (0, None)


def test_engagement_is_one_row_per_member_with_its_tier(built: Any) -> None:
    """Against now, every reaction of the 2025 campaign is older than 90 days: dormant, or never
    for whom received it and never reacted. The tiers' thresholds are the unit test's
    (engagement_tiers_count_from_the_last_open_or_click)."""
    warehouse, _ = built
    engagement = {
        row["email_key"]: row
        for row in rows(warehouse, "select * from marts.fct_member_engagement where list_link_id = 'newsletter_main'")
    }
    assert len(engagement) == 8
    assert engagement["anna@beispiel.de"]["engagement_tier"] == "dormant"
    assert str(engagement["anna@beispiel.de"]["last_open_at"]).startswith("2025-07-10 07:00")
    assert engagement["gustav@beispiel.de"]["engagement_tier"] == "dormant"  # a click is a reaction
    assert (engagement["emil@beispiel.de"]["engagement_tier"], engagement["emil@beispiel.de"]["mailings_received"]) == (
        "never",
        1,
    )


def test_list_growth_keeps_the_history_of_each_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A member unsubscribes at the ESP between two syncs: the second sync's build dates it and
    the list shrinks by one that day, while the days before keep what the first sync saw."""
    from datetime import UTC, datetime

    from pipelines.mailchimp.helpers import subscriber_hash
    from pipelines.runner import run_extractions

    with campaign_world(tmp_path, monkeypatch, "first") as (_, config, emulator, scenario):
        dbt_build(tmp_path, config.warehouse_path(), "first")
        growth = "select * from marts.fct_list_growth where list_link_id = 'newsletter_main' order by day"
        before = rows(config.warehouse_path(), growth)
        answer = httpx.patch(
            f"{emulator.base_url}/lists/nl0001/members/{subscriber_hash('emil@beispiel.de')}",
            json={"status": "unsubscribed"},
            auth=("x", scenario.account("brand_main").api_key),
        )
        assert answer.status_code == 200, answer.text
        run_extractions(config, full_refresh=False, run_id="second")
        dbt_build(tmp_path, config.warehouse_path(), "second")
        after = rows(config.warehouse_path(), growth)
    today = datetime.now(UTC).date()
    assert before[-1]["day"] == today and before[-1]["subscribed_at_day_end"] == 6
    assert (after[-1]["day"], after[-1]["unsubscribes"], after[-1]["net_change"]) == (today, 1, -1)
    assert after[-1]["subscribed_at_day_end"] == 5
    # the opt-ins of 2025-01-01, as the first sync saw them
    assert [(r["day"].isoformat(), r["new_subscribes"]) for r in after if r["new_subscribes"]] == [("2025-01-01", 6)]
    assert after[:-1] == before[:-1]


def test_the_ledger_proves_the_consent_of_every_subscribed_member(built: Any) -> None:
    warehouse, _ = built
    subscribed = rows(
        warehouse,
        "select email_key from intermediate.int_esp__memberships where status = 'subscribed' order by email_key",
    )
    given = rows(
        warehouse,
        "select distinct email_key from marts.fct_consent_ledger where consent = 'given' "
        "and event_at is not null and channel is not null order by email_key",
    )
    assert {row["email_key"] for row in subscribed} <= {row["email_key"] for row in given}
    assert rows(warehouse, "select * from marts.fct_sync_event_log where code = 'consent_unproven'") == []
    (frida,) = rows(warehouse, "select * from marts.fct_consent_ledger where email_key = 'frida@beispiel.de'")
    assert (frida["consent"], frida["channel"]) == ("withdrawn", "campaign_unsubscribe_link")


def test_a_subscribed_member_whose_consent_cannot_be_proven_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member subscribed at the ESP with no opt-in or sign-up time, and no CRM subscribe: the
    ledger cannot say when it consented, and the event log says so."""
    with campaign_world(tmp_path, monkeypatch, "unproven") as (_, config, _emulator, _scenario):
        pass
    with duckdb.connect(str(config.warehouse_path())) as db:
        db.execute(
            "update raw_mailchimp.members set timestamp_opt = null, timestamp_signup = null "
            "where email_address = 'heidi@beispiel.de'"
        )
    dbt_build(tmp_path, config.warehouse_path(), "unproven")
    warnings = rows(config.warehouse_path(), "select * from marts.fct_sync_event_log where code = 'consent_unproven'")
    assert [(row["email_key"], row["severity"], row["list_link_id"]) for row in warnings] == [
        ("heidi@beispiel.de", "warning", "newsletter_main")
    ]


def test_the_docs_are_one_static_page_with_the_models_descriptions(
    built: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailbridge.docs import build_docs

    warehouse, _ = built
    monkeypatch.chdir(tmp_path)  # a relative folder is the caller's, as `make docs` gives it
    page = build_docs(warehouse, Path("docs"))
    assert page == tmp_path / "docs" / "static_index.html"
    html = page.read_text("utf-8")
    assert "fct_campaign_performance" in html and "One row per consent event" in html
    # and the same descriptions reach the warehouse as comments, where BI tools show them
    (comment,) = rows(
        warehouse,
        "select comment from duckdb_tables() where schema_name = 'marts' and table_name = 'fct_consent_ledger'",
    )
    assert comment["comment"].startswith("One row per consent event")


def test_new_activity_on_an_old_campaign_is_read_alone_and_reaches_the_marts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Activity keeps arriving for weeks: an incremental sync reads a campaign's email activity
    since its cursor (less the re-read window), so the new open and click alone come, and the
    marts count them with the rest."""
    from datetime import UTC, datetime

    from pipelines.mailchimp.helpers import subscriber_hash
    from pipelines.runner import run_extractions
    from sandbox.mailchimp.state import Activity

    with campaign_world(tmp_path, monkeypatch, "first") as (_, config, emulator, _scenario):
        campaign = emulator.state.account_named("brand_main").get_campaign("cmp100")
        now = datetime.now(UTC).replace(microsecond=0)
        campaign.recipients[subscriber_hash("bernd@beispiel.de")].activity.append(Activity("open", now))
        campaign.recipients[subscriber_hash("emil@beispiel.de")].activity += [
            Activity("open", now),
            Activity("click", now, url="https://beispiel.de/angebot"),
        ]
        emulator.emulator.log.clear()
        run_extractions(config, full_refresh=False, run_id="second")
        reads = [e for e in emulator.emulator.log.snapshot() if e.path == "/3.0/reports/cmp100/email-activity"]
        dbt_build(tmp_path, config.warehouse_path(), "second")
    assert reads and all("since" in read.query for read in reads)
    # the events read: the three new ones (the ESP lists every recipient, each with its activity since)
    (read,) = rows(
        config.warehouse_path(),
        "select run_id, rows_fetched from raw_mailchimp.resource_extractions "
        "where resource = 'email_activity' and campaign_id = 'cmp100'",
    )
    assert (read["run_id"], read["rows_fetched"]) == ("second", 3)
    (performance,) = rows(
        config.warehouse_path(), "select * from marts.fct_campaign_performance where campaign_id = 'cmp100'"
    )
    assert (performance["total_opens"], performance["unique_opens"]) == (7, 4)
    assert (performance["total_clicks"], performance["unique_clicks"], performance["no_reaction"]) == (5, 3, 1)


REACTIONS_MAPPING = {
    "table": "mailing_reaktionen",
    "columns": {
        "contact_id": "kontakt_id",
        "mailing_id": "mailing_id",
        "mailing_name": "mailing",
        "delivered": "zugestellt",
        "bounce": "bounce",
        "opened": "geoeffnet",
        "clicked": "geklickt",
        "opens": "oeffnungen",
        "clicks": "klicks",
        "first_open_at": "erste_oeffnung_am",
        "unsubscribed": "abgemeldet",
    },
}


def test_the_push_writes_each_contacts_mailing_reactions_into_the_crm_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `crm.mailing_reactions` mapped, a push writes each CRM contact's reaction to each
    mailing into it (the reference integration shows them in the CRM); the next push writes
    only what changed, here nothing."""
    import sqlalchemy as sa
    import yaml

    from mailbridge.config import load_config
    from pipelines.pushback import push
    from sandbox.crm_db import crm_tables
    from tests.conftest import crm_query

    with campaign_world(tmp_path, monkeypatch, "reactions") as (config_file, config, _emulator, _scenario):
        raw = yaml.safe_load(config_file.read_text("utf-8"))
        raw["crm"]["mailing_reactions"] = REACTIONS_MAPPING
        config_file.write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
        config = load_config(config_file)
        crm_url = config.crm.connection_url(config.base_dir)
        engine = sa.create_engine(crm_url)
        crm_tables(config.crm, sa.MetaData())["mailing_reactions"].create(engine)
        engine.dispose()
        dbt_build(tmp_path, config.warehouse_path(), "reactions")
        dry = push(config, run_id="dry", dry_run=True)
        first = push(config, run_id="first")
        second = push(config, run_id="second")
    # anna and bernd are the CRM's contacts among the campaign's recipients
    assert (dry.reactions_written, first.reactions_written, second.reactions_written) == (2, 2, 0)
    written = {row["kontakt_id"]: row for row in crm_query(crm_url, "select * from mailing_reaktionen")}
    assert set(written) == {1, 2}
    anna = written[1]
    assert (anna["mailing_id"], anna["mailing"], anna["oeffnungen"], anna["klicks"]) == ("cmp100", "Juni", 3, 3)
    assert bool(anna["zugestellt"]) and bool(anna["geoeffnet"]) and bool(anna["geklickt"])
    assert str(anna["erste_oeffnung_am"]).startswith("2025-06-01 09:00")
    assert (written[2]["oeffnungen"], bool(written[2]["geklickt"])) == (1, False)
