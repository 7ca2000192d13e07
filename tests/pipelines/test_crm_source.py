"""The CRM source over SQLAlchemy, on SQLite and on the real PostgreSQL and MariaDB servers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from mailbridge.config import ConfigError, MailbridgeConfig, load_config
from pipelines.runner import extraction_named
from sandbox.crm_db import write_crm
from sandbox.generator import generate_scenario
from tests.conftest import write_project_config

# the PostgreSQL and MariaDB tests share one database and its table names: one worker runs them all
pytestmark = pytest.mark.xdist_group("crm_servers")


def crm_config(tmp_path: Path, url: str) -> MailbridgeConfig:
    return load_config(write_project_config(tmp_path, base_url=None, crm_url=url))


def extract_crm(config: MailbridgeConfig, run_id: str = "test") -> duckdb.DuckDBPyConnection:
    run = extraction_named(config, "crm", full_refresh=True, run_id=run_id)
    run.pipeline.run(run.source)
    return duckdb.connect(str(config.warehouse_path()), read_only=True)


def test_crm_tables_load_with_canonical_names_and_keys(tmp_path: Path, crm_url: str) -> None:
    scenario = generate_scenario(contacts=400, seed=5)
    config = crm_config(tmp_path, crm_url)
    write_crm(scenario.tables, crm_url, config.crm)
    with extract_crm(config) as db:
        contacts = db.execute("select count(*), count(distinct contact_id) from raw_crm.contacts").fetchone()
        assert contacts == (scenario.table("crm_contacts").height,) * 2
        assignments = db.execute("select count(*) from raw_crm.assignments").fetchone()[0]
        assert assignments == scenario.table("crm_assignments").height
        # statuses arrive canonical, the CRM's own word beside them
        pairs = set(db.execute("select distinct status, crm_status_value from raw_crm.assignments").fetchall())
        assert pairs <= {("subscribed", "angemeldet"), ("unsubscribed", "abgemeldet")}
        assert ("subscribed", "angemeldet") in pairs
        invalid = db.execute("select count(*) from raw_crm.contacts where email_key is null").fetchone()[0]
        assert invalid > 0
        errors = db.execute("select count(*) from raw_crm.contacts where email_key is null and email_error is null")
        assert errors.fetchone()[0] == 0
        blocked = db.execute(
            "select count(*) from raw_crm.blocklist where email_key = lower(email_key) or blocked_domain is not null"
        ).fetchone()[0]
        assert blocked == scenario.table("crm_blocklist").height
        domains = db.execute("select blocked_domain from raw_crm.blocklist where blocked_domain is not null").fetchall()
        assert domains == [("werbung-verboten.de",)]
        tz = db.execute("select typeof(status_changed_at) from raw_crm.assignments limit 1").fetchone()[0]
        assert tz == "TIMESTAMP WITH TIME ZONE"
        history = db.execute("select count(*) from raw_crm.email_history").fetchone()[0]
        assert history == scenario.table("crm_email_history").height


def test_unknown_status_value_is_rejected_and_reported(tmp_path: Path, crm_url: str) -> None:
    scenario = generate_scenario(contacts=50, seed=9)
    config = crm_config(tmp_path, crm_url)
    write_crm(scenario.tables, crm_url, config.crm)
    engine = sa.create_engine(crm_url)
    with engine.begin() as connection:
        first = connection.execute(sa.text("select kontakt_id, verteiler_id from verteiler_zuordnungen limit 1")).one()
        connection.execute(
            sa.text(
                "update verteiler_zuordnungen set status = 'vielleicht' where kontakt_id = :c and verteiler_id = :l"
            ),
            {"c": first[0], "l": first[1]},
        )
    engine.dispose()
    with extract_crm(config, run_id="with-reject") as db:
        rejected = db.execute("select entity, row_key, field, value, reason from raw_crm.rejected_rows").fetchall()
        loaded = db.execute("select count(*) from raw_crm.assignments").fetchone()[0]
    assert rejected == [
        (
            "assignments",
            f"{first[0]}/{first[1]}",
            "status",
            "vielleicht",
            "crm.status_values has no entry for 'vielleicht'; map it to a canonical status",
        )
    ]
    assert loaded == scenario.table("crm_assignments").height - 1


def test_a_mapped_column_the_table_lacks_is_a_clear_config_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    config = crm_config(tmp_path, url)
    write_crm(generate_scenario(contacts=10).tables, url, config.crm)
    broken = config.crm.model_copy(
        update={
            "contacts": config.crm.contacts.model_copy(
                update={"columns": {**config.crm.contacts.columns, "email": "mail"}}
            )
        }
    )
    config = config.model_copy(update={"crm": broken})
    with pytest.raises(Exception) as caught:
        extract_crm(config)
    chain: BaseException | None = caught.value
    while chain is not None and not isinstance(chain, ConfigError):
        chain = chain.__cause__ or chain.__context__
    assert isinstance(chain, ConfigError)
    assert "crm.contacts.columns.email" in str(chain) and "'mail'" in str(chain)


def test_mapped_custom_fields_arrive_as_json(tmp_path: Path, crm_url: str) -> None:
    import json

    scenario = generate_scenario(contacts=20, seed=2)
    mappings = [
        {"name": "customer_number", "crm_column": "kundennummer", "esp_field": "KDNR", "type": "integer"},
        {"name": "vip", "crm_column": "vip_kunde", "esp_field": "VIP", "type": "boolean"},
    ]
    config = load_config(
        write_project_config(tmp_path, base_url=None, crm_url=crm_url, overrides={"field_mappings": mappings})
    )
    write_crm(scenario.tables, crm_url, config.crm)
    engine = sa.create_engine(crm_url)
    with engine.begin() as connection:
        connection.execute(sa.text("alter table kontakte add column kundennummer integer"))
        connection.execute(sa.text("alter table kontakte add column vip_kunde boolean"))
        connection.execute(
            sa.text("update kontakte set kundennummer = kontakt_id + 1000, vip_kunde = (kontakt_id = 1)")
        )
    engine.dispose()
    with extract_crm(config) as db:
        rows = dict(db.execute("select contact_id, custom_fields from raw_crm.contacts").fetchall())
    assert json.loads(rows["1"]) == {"customer_number": 1001, "vip": True}
    assert json.loads(rows["2"]) == {"customer_number": 1002, "vip": False}
