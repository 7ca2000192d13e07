"""The email events and each recipient's sum of them are built incrementally, by campaign: a
build leaves a campaign whose reports did not change as it is, builds a changed or new one
again, and ends where a full build (`--full-refresh`) would."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from sandbox.compare import mart_differences
from tests.dbt.test_campaign_marts import campaign_world, rows
from tests.dbt.test_dbt_build import _MANIFESTS, dbt_build

EVENTS = "intermediate.int_esp__email_events"
RECIPIENTS = "intermediate.int_esp__campaign_recipient_activity"
# the event layer and what is built from it: the builds after the first need no more
EVENT_LAYER = "int_esp__email_events+ int_esp__campaign_recipient_activity+"


def change_reports(warehouse: Path) -> None:
    """What a sync's extraction could bring: a new open by bernd on cmp100, and a new campaign
    cmp900 (its row, anna's sent-to row and one open by her), all copied from cmp100's rows."""
    with duckdb.connect(str(warehouse)) as db:
        db.execute(
            "insert into raw_mailchimp.email_activity"
            " select * replace (timestamp '2025-08-01 10:00:00+00' as timestamp) from raw_mailchimp.email_activity"
            " where campaign_id = 'cmp100' and email_key = 'bernd@beispiel.de' and action = 'open' limit 1"
        )
        db.execute(
            "insert into raw_mailchimp.campaigns select * replace ('cmp900' as id, 'August' as title,"
            " timestamp '2025-08-01 08:00:00+00' as send_time) from raw_mailchimp.campaigns where id = 'cmp100'"
        )
        for table, extra in (("sent_to", ""), ("email_activity", " and action = 'open' limit 1")):
            db.execute(
                f"insert into raw_mailchimp.{table} select * replace ('cmp900' as campaign_id)"
                f" from raw_mailchimp.{table} where campaign_id = 'cmp100' and email_key = 'anna@beispiel.de'{extra}"
            )


def opens(warehouse: Path, campaign: str, email_key: str) -> int:
    (row,) = rows(
        warehouse,
        f"select opens from {RECIPIENTS} where campaign_id = '{campaign}' and email_key = '{email_key}'",
    )
    return int(row["opens"])


def test_a_build_leaves_unchanged_campaigns_and_builds_changed_ones_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with campaign_world(tmp_path, monkeypatch, "first") as (_, config, _emulator, _scenario):
        warehouse = config.warehouse_path()
        dbt_build(tmp_path, warehouse, "first")
        # each fingerprint ends with the version of the model that stored it (its SQL's checksum)
        for model, table in (("int_esp__email_events", EVENTS), ("int_esp__campaign_recipient_activity", RECIPIENTS)):
            version = _MANIFESTS[warehouse.name].nodes[f"model.mailbridge.{model}"].checksum.checksum[:12]
            stored = rows(
                warehouse, f"select distinct split_part(campaign_fingerprint, ':', -1) as version from {table}"
            )
            assert stored == [{"version": version}], model
        # a mark no build would write: it stays only where a campaign is not built again
        with duckdb.connect(str(warehouse)) as db:
            db.execute(f"update {EVENTS} set url = 'https://marked.example/' where event_type = 'click'")
            db.execute(f"update {RECIPIENTS} set opens = 99 where email_key = 'anna@beispiel.de'")
        dbt_build(tmp_path, warehouse, "nothing changed", select=EVENT_LAYER)
        assert opens(warehouse, "cmp100", "anna@beispiel.de") == 99
        assert rows(warehouse, f"select distinct url from {EVENTS} where event_type = 'click'") == [
            {"url": "https://marked.example/"}
        ]

        # a new campaign is built, cmp100 is not
        with duckdb.connect(str(warehouse)) as db:
            db.execute(
                "insert into raw_mailchimp.campaigns select * replace ('cmp900' as id,"
                " timestamp '2025-08-01 08:00:00+00' as send_time) from raw_mailchimp.campaigns where id = 'cmp100'"
            )
            for table in ("sent_to", "email_activity"):
                db.execute(
                    f"insert into raw_mailchimp.{table} select * replace ('cmp900' as campaign_id)"
                    f" from raw_mailchimp.{table} where campaign_id = 'cmp100' and email_key = 'anna@beispiel.de'"
                )
        dbt_build(tmp_path, warehouse, "new campaign", select=EVENT_LAYER)
        assert opens(warehouse, "cmp100", "anna@beispiel.de") == 99
        assert opens(warehouse, "cmp900", "anna@beispiel.de") == 3
        (anna,) = rows(
            warehouse,
            "select * from marts.fct_campaign_recipients where campaign_id = 'cmp900'",
        )
        assert (anna["crm_contact_id"], str(anna["sent_at"])[:16]) == ("1", "2025-08-01 08:00")

        # a report row of cmp100 changes (one of bernd's opens is a day later): cmp100 is built again
        with duckdb.connect(str(warehouse)) as db:
            db.execute(
                "update raw_mailchimp.email_activity set timestamp = timestamp + interval 1 day"
                " where campaign_id = 'cmp100' and email_key = 'bernd@beispiel.de' and action = 'open'"
            )
        dbt_build(tmp_path, warehouse, "changed campaign", select=EVENT_LAYER)
        assert opens(warehouse, "cmp100", "anna@beispiel.de") == 3
        assert rows(warehouse, f"select count(*) as marked from {EVENTS} where url = 'https://marked.example/'") == [
            {"marked": 0}
        ]

        # rows an older release of the model stored: every campaign is built again
        with duckdb.connect(str(warehouse)) as db:
            db.execute(
                f"update {RECIPIENTS} set opens = 99,"
                " campaign_fingerprint = regexp_replace(campaign_fingerprint, '[^:]*$', 'older')"
            )
        dbt_build(tmp_path, warehouse, "after an upgrade", select=EVENT_LAYER)
    assert opens(warehouse, "cmp100", "anna@beispiel.de") == 3
    assert opens(warehouse, "cmp900", "anna@beispiel.de") == 3


def test_an_incremental_build_ends_where_a_full_build_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with campaign_world(tmp_path, monkeypatch, "first") as (_, config, _emulator, _scenario):
        warehouse = config.warehouse_path()
        dbt_build(tmp_path, warehouse, "first")
        change_reports(warehouse)
        full = tmp_path / "full" / warehouse.name
        full.parent.mkdir()
        shutil.copy2(warehouse, full)
        dbt_build(tmp_path, warehouse, "second")
        dbt_build(tmp_path / "full", full, "second", full_refresh=True)
    found = mart_differences(warehouse, full)
    assert not found, "\n".join(difference.line() for difference in found[:10])
    # and the changes are there
    assert opens(warehouse, "cmp100", "bernd@beispiel.de") == 2
    assert opens(warehouse, "cmp900", "anna@beispiel.de") == 1
