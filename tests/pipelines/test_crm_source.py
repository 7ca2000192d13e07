"""The CRM source over SQLAlchemy, on SQLite and on the real PostgreSQL and MariaDB servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from mailbridge.config import ConfigError, MailbridgeConfig, load_config
from pipelines.runner import extraction_named
from sandbox.crm_db import write_crm
from sandbox.generator import generate_scenario
from tests.conftest import scenario_named, write_project_config

# the PostgreSQL and MariaDB tests share one database and its table names: one worker runs them all


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


# ---------- CRM rows that hide an opt-out (SQLite: these are about the source's rules, not the dialects)


def small_sqlite_crm(tmp_path: Path) -> tuple[MailbridgeConfig, str]:
    """The small scenario's CRM in a SQLite file (contacts 1-4, assignments of 1, 2 and 4 to NL)."""
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    config = crm_config(tmp_path, url)
    write_crm(scenario_named("small").tables, url, config.crm)
    return config, url


def crm_execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def drop_assignment_key(url: str) -> None:
    """Rebuild the assignments table without its primary key, as many real CRMs have it."""
    columns = "kontakt_id, verteiler_id, status, status_datum, status_gesetzt_von, aufgabe, zu_pruefen"
    crm_execute(
        url,
        "alter table verteiler_zuordnungen rename to zuordnungen_alt",
        "create table verteiler_zuordnungen (kontakt_id integer, verteiler_id varchar(64), status varchar(40), "
        "status_datum datetime, status_gesetzt_von varchar(200), aufgabe varchar(40), zu_pruefen boolean)",
        f"insert into verteiler_zuordnungen ({columns}) select {columns} from zuordnungen_alt",
        "drop table zuordnungen_alt",
    )


def rejected_rows(db: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str | None, str]]:
    return db.execute(
        "select entity, row_key, field, value, reason from raw_crm.rejected_rows order by entity, row_key, field"
    ).fetchall()


def test_duplicate_assignment_rows_all_reach_the_raw_table(tmp_path: Path) -> None:
    config, url = small_sqlite_crm(tmp_path)
    drop_assignment_key(url)
    crm_execute(
        url,
        "insert into verteiler_zuordnungen (kontakt_id, verteiler_id, status, status_datum, status_gesetzt_von) "
        "values (1, 'NL', 'abgemeldet', '2025-03-01 10:00:00', 'telefon')",
    )
    with extract_crm(config) as db:
        rows = db.execute(
            "select status, crm_status_value, status_set_by from raw_crm.assignments "
            "where contact_id = '1' and list_id = 'NL' order by status"
        ).fetchall()
        assert rejected_rows(db) == []
    # the replace load keeps both rows: int_crm__memberships decides between them, and says so
    assert rows == [("subscribed", "angemeldet", "web"), ("unsubscribed", "abgemeldet", "telefon")]


def test_an_unreadable_contact_value_is_nulled_and_reported_not_the_contact(tmp_path: Path) -> None:
    config, url = small_sqlite_crm(tmp_path)
    crm_execute(
        url,
        "update kontakte set geaendert_am = 'garbage' where kontakt_id = 1",
        "update kontakte set geaendert_am = 1700000000 where kontakt_id = 2",
        "update kontakte set geaendert_am = '2025-04-01 08:30:00' where kontakt_id = 3",
    )
    with extract_crm(config) as db:
        contacts = db.execute(
            "select contact_id, email_key, last_name, modified_at from raw_crm.contacts order by contact_id"
        ).fetchall()
        rejected = rejected_rows(db)
        counts = db.execute(
            "select rows_read, rows_rejected, values_rejected from raw_crm.extractions where entity = 'contacts'"
        ).fetchall()
    assert [row[:3] for row in contacts] == [
        ("1", "anna.schmidt@beispiel.de", "Schmidt"),
        ("2", "bernd.meier@beispiel.de", "Meier"),
        ("3", "carla.wolf@beispiel.de", "Wolf"),
        ("4", "dieter@xn--mller-kva.de", "Müller"),
    ]
    assert [row[3] for row in contacts[:2]] == [None, None]
    assert contacts[2][3] is not None and contacts[2][3].isoformat() == "2025-04-01T08:30:00+00:00"
    assert rejected == [
        ("contacts", "1", "modified_at", "garbage", "not a date-time: 'garbage'; loaded as NULL, the row is kept"),
        ("contacts", "2", "modified_at", "1700000000", "not a date-time: 1700000000; loaded as NULL, the row is kept"),
    ]
    assert counts == [(4, 0, 2)]


def test_an_unreadable_status_time_keeps_the_assignment_and_its_opt_out(tmp_path: Path) -> None:
    config, url = small_sqlite_crm(tmp_path)
    crm_execute(
        url,
        "update verteiler_zuordnungen set status = 'abgemeldet', status_datum = 'gestern' where kontakt_id = 2",
    )
    with extract_crm(config) as db:
        assignment = db.execute(
            "select status, crm_status_value, status_changed_at, status_set_by from raw_crm.assignments "
            "where contact_id = '2' and list_id = 'NL'"
        ).fetchall()
        rejected = rejected_rows(db)
    assert assignment == [("unsubscribed", "abgemeldet", None, "web")]
    assert rejected == [
        (
            "assignments",
            "2/NL",
            "status_changed_at",
            "gestern",
            "not a date-time: 'gestern'; loaded as NULL, the row is kept",
        )
    ]


def test_every_unreadable_value_of_a_row_is_its_own_rejected_row(tmp_path: Path) -> None:
    config, url = small_sqlite_crm(tmp_path)
    crm_execute(
        url,
        # kept, its valid_from NULL
        "insert into email_historie (kontakt_id, email_adresse, gueltig_ab, gueltig_bis) "
        "values (3, 'carla.alt@beispiel.de', 'bald', '2025-02-01 00:00:00')",
        # kept out: valid_to is part of the key; both bad values are logged
        "insert into email_historie (kontakt_id, email_adresse, gueltig_ab, gueltig_bis) "
        "values (3, 'carla.aelter@beispiel.de', 'bald', 'nie')",
        # kept out for its status word; its unreadable time is logged too
        "update verteiler_zuordnungen set status = 'vielleicht', status_datum = 'gestern' where kontakt_id = 4",
    )
    with extract_crm(config) as db:
        history = db.execute("select contact_id, email_key, valid_from from raw_crm.email_history").fetchall()
        assignments = db.execute("select contact_id from raw_crm.assignments order by contact_id").fetchall()
        rejected = rejected_rows(db)
        counts = dict(
            db.execute(
                "select entity, (rows_rejected, values_rejected) from raw_crm.extractions "
                "where entity in ('assignments', 'email_history')"
            ).fetchall()
        )
    assert history == [("3", "carla.alt@beispiel.de", None)]
    assert assignments == [("1",), ("2",)]
    kept = "loaded as NULL, the row is kept"
    assert rejected == [
        (
            "assignments",
            "4/NL",
            "status",
            "vielleicht",
            "crm.status_values has no entry for 'vielleicht'; map it to a canonical status",
        ),
        ("assignments", "4/NL", "status_changed_at", "gestern", "not a date-time: 'gestern'; the row is kept out"),
        (
            "email_history",
            "3/carla.aelter@beispiel.de/nie",
            "valid_from",
            "bald",
            "not a date-time: 'bald'; the row is kept out",
        ),
        (
            "email_history",
            "3/carla.aelter@beispiel.de/nie",
            "valid_to",
            "nie",
            "not a date-time: 'nie'; valid_to is part of the row's key, the row is kept out",
        ),
        (
            "email_history",
            "3/carla.alt@beispiel.de/2025-02-01 00:00:00",
            "valid_from",
            "bald",
            f"not a date-time: 'bald'; {kept}",
        ),
    ]
    assert counts == {"assignments": (1, 0), "email_history": (1, 1)}


def test_a_row_without_its_key_is_kept_out_and_reported(tmp_path: Path) -> None:
    config, url = small_sqlite_crm(tmp_path)
    drop_assignment_key(url)
    crm_execute(url, "insert into verteiler_zuordnungen (kontakt_id, status) values (3, 'angemeldet')")
    with extract_crm(config) as db:
        loaded = db.execute("select contact_id, list_id from raw_crm.assignments order by contact_id").fetchall()
        rejected = rejected_rows(db)
    assert loaded == [("1", "NL"), ("2", "NL"), ("4", "NL")]
    assert rejected == [("assignments", "3/None", "list_id", None, "the row has no list_id; it is kept out")]


# ---------- one bad value costs the value, never the sync (issue #9)


def drop_table_key(url: str, table: str) -> None:
    """Rebuild `table` without its primary key (portable: SQLite, PostgreSQL, MariaDB)."""
    crm_execute(
        url,
        f"create table {table}_ohne_schluessel as select * from {table}",
        f"drop table {table}",
        f"alter table {table}_ohne_schluessel rename to {table}",
    )


def numbered_rejected_rows(db: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return db.execute(
        "select entity, row_number, row_key, field, value, row_kept, reason from raw_crm.rejected_rows "
        "order by entity, row_number, field"
    ).fetchall()


def test_two_rows_rejected_alike_keep_apart_by_their_place_in_the_read(tmp_path: Path) -> None:
    config, url = small_sqlite_crm(tmp_path)
    drop_table_key(url, "kontakte")
    crm_execute(
        url,
        "insert into kontakte (kontakt_id, email_adresse) values (null, 'ohne.id@beispiel.de')",
        "insert into kontakte (kontakt_id, email_adresse) values (null, 'auch.ohne.id@beispiel.de')",
    )
    with extract_crm(config) as db:
        rejected = numbered_rejected_rows(db)
        loaded = db.execute("select count(*) from raw_crm.contacts").fetchone()[0]
    reason = "the row has no contact_id; it is kept out"
    # the key is NULL in both: only their place in the read (ordered by the key) tells them apart
    assert sorted(rejected) == [
        ("contacts", 1, "None", "contact_id", None, False, reason),
        ("contacts", 2, "None", "contact_id", None, False, reason),
    ]
    assert loaded == 4


def test_a_contact_or_list_id_held_by_several_rows_keeps_one_and_reports_the_others(
    tmp_path: Path, crm_url: str
) -> None:
    config = crm_config(tmp_path, crm_url)
    write_crm(scenario_named("small").tables, crm_url, config.crm)
    drop_table_key(crm_url, "kontakte")
    drop_table_key(crm_url, "verteiler")
    crm_execute(
        crm_url,
        # contact 2 twice more: the newest row speaks for it
        "insert into kontakte (kontakt_id, email_adresse, nachname, geaendert_am) "
        "values (2, 'bernd.neu@beispiel.de', 'Meier', '2025-05-01 00:00:00')",
        "insert into kontakte (kontakt_id, email_adresse, nachname, geaendert_am) "
        "values (2, 'bernd.alt@beispiel.de', 'Meier', '2020-01-01 00:00:00')",
        "insert into verteiler (verteiler_id, bezeichnung) values ('NL', 'Rundbrief')",
    )
    with extract_crm(config) as db:
        contacts = db.execute("select contact_id, email_key from raw_crm.contacts order by contact_id").fetchall()
        lists = db.execute("select list_id, name from raw_crm.lists where list_id = 'NL'").fetchall()
        rejected = db.execute(
            "select entity, row_key, field, value, row_kept, reason from raw_crm.rejected_rows order by entity, value"
        ).fetchall()
        counts = dict(
            db.execute(
                "select entity, (rows_read, rows_rejected) from raw_crm.extractions "
                "where entity in ('contacts', 'lists')"
            ).fetchall()
        )
    assert contacts == [
        ("1", "anna.schmidt@beispiel.de"),
        ("2", "bernd.neu@beispiel.de"),
        ("3", "carla.wolf@beispiel.de"),
        ("4", "dieter@xn--mller-kva.de"),
    ]
    assert lists == [("NL", "Newsletter")]
    contact_reason = (
        "3 rows have contact_id '2'; the newest by modified_at speaks for it (then the first by its values), "
        "this one is kept out"
    )
    list_reason = "2 rows have list_id 'NL'; the first by its values speaks for it, this one is kept out"
    assert rejected == [
        ("contacts", "2", "contact_id", "2", False, contact_reason),
        ("contacts", "2", "contact_id", "2", False, contact_reason),
        ("lists", "NL", "list_id", "NL", False, list_reason),
    ]
    assert counts == {"contacts": (6, 2), "lists": (4, 1)}  # NL twice, PN and SH once


def bad_date_times(dialect: str) -> tuple[list[str], str, str]:
    """Statements that put an unreadable date-time into the CRM, as each database allows it,
    and the value each database then returns for a DATETIME and a mapped custom column."""
    if dialect == "sqlite":
        return (
            [
                "update verteiler_zuordnungen set status_datum = 'gestern' where kontakt_id = 2",
                "update kontakte set geburtstag = 'garbage' where kontakt_id = 1",
                "update kontakte set geburtstag = 1700000000 where kontakt_id = 3",
            ],
            "gestern",
            "garbage",
        )
    if dialect == "mysql":
        # MariaDB's lax mode stores anything it cannot read as the zero date
        return (
            [
                "set session sql_mode = ''",
                "update verteiler_zuordnungen set status_datum = 'gestern' where kontakt_id = 2",
                "update kontakte set geburtstag = 'garbage' where kontakt_id = 1",
                "update kontakte set geburtstag = '2025-02-30 10:00:00' where kontakt_id = 3",
            ],
            "0000-00-00 00:00:00",
            "0000-00-00 00:00:00",
        )
    return (
        [
            "update verteiler_zuordnungen set status_datum = 'infinity' where kontakt_id = 2",
            "update kontakte set geburtstag = '-infinity' where kontakt_id = 1",
            "update kontakte set geburtstag = '12000-01-01 00:00:00' where kontakt_id = 3",
        ],
        "infinity",
        "-infinity",
    )


def test_unreadable_date_times_cost_the_value_not_the_sync(tmp_path: Path, crm_url: str) -> None:
    import json

    mappings = [{"name": "birthday", "crm_column": "geburtstag", "esp_field": "BDAY", "type": "datetime"}]
    config = load_config(
        write_project_config(tmp_path, base_url=None, crm_url=crm_url, overrides={"field_mappings": mappings})
    )
    write_crm(scenario_named("small").tables, crm_url, config.crm)
    dialect = sa.engine.make_url(crm_url).get_backend_name()
    timestamp = "timestamp" if dialect == "postgresql" else "datetime"
    statements, status_value, birthday_value = bad_date_times(dialect)
    crm_execute(
        crm_url,
        f"alter table kontakte add column geburtstag {timestamp}",
        "update kontakte set geburtstag = '1980-05-17 00:00:00' where kontakt_id = 2",
        *statements,
    )
    with extract_crm(config) as db:
        fields = dict(db.execute("select contact_id, custom_fields from raw_crm.contacts").fetchall())
        status = db.execute(
            "select status, status_changed_at from raw_crm.assignments where contact_id = '2'"
        ).fetchall()
        rejected = db.execute(
            "select entity, row_key, field, value, row_kept from raw_crm.rejected_rows order by entity, row_key"
        ).fetchall()
    assert {key: json.loads(value)["birthday"] for key, value in fields.items()} == {
        "1": None,
        "2": "1980-05-17T00:00:00",
        "3": None,
        "4": None,
    }
    assert status == [("subscribed", None)]
    assert [row[:3] for row in rejected] == [
        ("assignments", "2/NL", "status_changed_at"),
        ("contacts", "1", "birthday"),
        ("contacts", "3", "birthday"),
    ]
    # the raw value as the server renders it (MariaDB has been seen to add a zero fraction)
    assert [str(row[3]).removesuffix(".000000") for row in rejected[:2]] == [status_value, birthday_value]
    assert all(row[4] for row in rejected)


def test_a_blocklist_entry_that_is_no_address_or_domain_pattern_is_rejected(tmp_path: Path) -> None:
    config, url = small_sqlite_crm(tmp_path)
    crm_execute(
        url,
        "insert into sperrliste (email_adresse) values ('***')",
        "insert into sperrliste (email_adresse) values ('*@')",
        "insert into sperrliste (email_adresse) values ('*@ex ample.com')",
        "insert into sperrliste (email_adresse) values ('*@Werbung-Verboten.de')",
        "insert into sperrliste (email_adresse) values ('Gesperrt@Beispiel.de')",
    )
    with extract_crm(config) as db:
        loaded = db.execute("select email_key, blocked_domain from raw_crm.blocklist order by all").fetchall()
        rejected = db.execute(
            "select row_key, field, row_kept, reason from raw_crm.rejected_rows order by row_key"
        ).fetchall()
    assert loaded == [("gesperrt@beispiel.de", None), (None, "werbung-verboten.de")]
    assert [row[:3] for row in rejected] == [
        ("***", "email", False),
        ("*@", "email", False),
        ("*@ex ample.com", "email", False),
    ]
    assert all("neither an address nor a *@domain pattern" in row[3] and "blocks nothing" in row[3] for row in rejected)


def test_a_warehouse_whose_rejected_rows_predate_row_number_keeps_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    import pipelines.crm as crm_source_module

    config, url = small_sqlite_crm(tmp_path)
    crm_execute(url, "update verteiler_zuordnungen set status_datum = 'gestern' where kontakt_id = 2")
    current = crm_source_module.REJECTED_SCHEMA
    earlier = pa.schema([column for column in current if column.name not in ("row_number", "row_kept")])
    with monkeypatch.context() as patch:
        patch.setattr(crm_source_module, "REJECTED_SCHEMA", earlier)
        extract_crm(config, run_id="before").close()
    run = extraction_named(config, "crm", full_refresh=True, run_id="after")
    run.pipeline.run(run.source)
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        rows = db.execute("select run_id, row_number, row_kept from raw_crm.rejected_rows order by run_id").fetchall()
    assert rows == [("after", 2, True), ("before", None, None)]


def test_a_linked_list_the_crm_does_not_have_stops_the_extraction_naming_the_key(tmp_path: Path, crm_url: str) -> None:
    scenario = generate_scenario(contacts=30, seed=3)
    config = crm_config(tmp_path, crm_url)
    write_crm(scenario.tables, crm_url, config.crm)
    links = [*config.list_links]
    links[1] = links[1].model_copy(update={"crm_list_id": "NEWSLETTR"})
    config = config.model_copy(update={"list_links": links})
    with pytest.raises(Exception) as caught:
        extract_crm(config)
    chain: BaseException | None = caught.value
    while chain is not None and not isinstance(chain, ConfigError):
        chain = chain.__cause__ or chain.__context__
    assert isinstance(chain, ConfigError), caught.value
    message = str(chain)
    assert "list_links[1].crm_list_id" in message and "'NEWSLETTR'" in message
    assert "'verteiler'" in message and "NL" in message  # the table and the lists it has
    # nothing of the CRM was loaded
    if config.warehouse_path().exists():
        with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
            loaded = db.execute("select count(*) from information_schema.tables where table_schema = 'raw_crm'")
            assert loaded.fetchone() == (0,)
