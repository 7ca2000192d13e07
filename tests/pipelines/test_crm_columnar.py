"""The CRM read column-wise loads and rejects exactly what the row-by-row reading does."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa
import yaml

from mailbridge.config import MailbridgeConfig, load_config
from pipelines.crm import crm_source
from pipelines.runner import make_pipeline
from sandbox.crm_db import write_crm
from sandbox.generator import generate_scenario
from tests.conftest import REPO_ROOT, write_project_config
from tests.pipelines.test_crm_source import crm_execute, drop_table_key

MAPPINGS = [
    {"name": "birthday", "crm_column": "geburtstag", "esp_field": "BDAY", "type": "datetime"},
    {"name": "customer_number", "crm_column": "kundennummer", "esp_field": "CNUM", "type": "integer"},
    {"name": "revenue", "crm_column": "umsatz", "esp_field": "REVENUE", "type": "decimal"},
    {"name": "vip", "crm_column": "vip", "esp_field": "VIP", "type": "boolean"},
    {"name": "city", "crm_column": "ort", "esp_field": "CITY", "type": "text"},
]
ADDED_COLUMNS = {
    "geburtstag": "varchar(40)",
    "kundennummer": "varchar(40)",
    "umsatz": "varchar(40)",
    "vip": "varchar(40)",
    "ort": "varchar(400)",
}
# (table, column, value, where) for every kind of value the reading refuses or must convert;
# SQLite stores what it is given, whatever the column's type
SQLITE_FAULTS: list[tuple[str, str, str, str]] = [
    ("kontakte", "vorname", "'Anna' || char(1)", "kontakt_id = 1"),
    ("kontakte", "nachname", "'Tab' || char(9) || 'Zeile' || char(10)", "kontakt_id = 2"),  # allowed
    ("kontakte", "nachname", "substr(hex(zeroblob(200)), 1, 256)", "kontakt_id = 3"),
    ("kontakte", "anrede", "'Frau' || char(133)", "kontakt_id = 4"),  # U+0085, a C1 control
    ("kontakte", "geaendert_am", "'gestern'", "kontakt_id = 5"),
    ("kontakte", "geaendert_am", "'2025-03-30 02:30:00'", "kontakt_id = 6"),  # not in Berlin's time
    ("kontakte", "geaendert_am", "'2025-10-26 02:30:00'", "kontakt_id = 7"),  # twice in Berlin's time
    ("kontakte", "geaendert_am", "'0001-01-01 00:00:00'", "kontakt_id = 8"),  # before year 1 in UTC
    ("kontakte", "geaendert_am", "'2024-05-01'", "kontakt_id = 9"),
    ("kontakte", "geaendert_am", "'2024-05-01T10:11:12.5'", "kontakt_id = 10"),
    ("kontakte", "geaendert_am", "'2024-05-01 10:11:12+05:30'", "kontakt_id = 11"),
    ("kontakte", "geaendert_am", "'2024-05-01T10:11:12Z'", "kontakt_id = 12"),
    ("kontakte", "geaendert_am", "1700000000", "kontakt_id = 13"),
    ("kontakte", "geaendert_am", "'2025-02-30 10:00:00'", "kontakt_id = 14"),
    ("kontakte", "email_adresse", "null", "kontakt_id = 15"),
    ("kontakte", "email_adresse", "'  Gross.Schreibung@Beispiel.DE '", "kontakt_id = 16"),
    ("kontakte", "geburtstag", "'garbage'", "kontakt_id = 17"),
    ("kontakte", "geburtstag", "'1980-05-17'", "kontakt_id between 18 and 25"),
    ("kontakte", "geburtstag", "1700000000", "kontakt_id = 26"),
    ("kontakte", "kundennummer", "'abc'", "kontakt_id = 27"),
    ("kontakte", "kundennummer", "'12.5'", "kontakt_id = 28"),
    ("kontakte", "kundennummer", "42", "kontakt_id between 29 and 40"),
    ("kontakte", "umsatz", "'1e400'", "kontakt_id = 41"),
    ("kontakte", "umsatz", "'NaN'", "kontakt_id = 42"),
    ("kontakte", "umsatz", "12.75", "kontakt_id between 43 and 50"),
    ("kontakte", "vip", "'ja'", "kontakt_id = 51"),
    ("kontakte", "vip", "'Yes'", "kontakt_id between 52 and 60"),
    ("kontakte", "vip", "1", "kontakt_id = 61"),
    ("kontakte", "ort", "'Köln' || char(0)", "kontakt_id = 62"),
    ("kontakte", "ort", "substr(hex(zeroblob(200)), 1, 300)", "kontakt_id = 63"),
    ("kontakte", "ort", "'Düsseldorf'", "kontakt_id between 64 and 90"),
    ("verteiler_zuordnungen", "status", "'vielleicht'", "kontakt_id = 91"),
    ("verteiler_zuordnungen", "status", "null", "kontakt_id = 92"),
    ("verteiler_zuordnungen", "status_datum", "'1900-01-01 00:00:00'", "kontakt_id = 93"),
    ("verteiler_zuordnungen", "status_datum", "'1970-12-31 23:30:00'", "kontakt_id = 94"),  # 1970 in UTC
    ("verteiler_zuordnungen", "status_datum", "'nie'", "kontakt_id = 95"),
    ("verteiler_zuordnungen", "aufgabe", "'tanzen'", "kontakt_id = 96"),
    ("verteiler_zuordnungen", "aufgabe", "'   '", "kontakt_id = 97"),
    ("verteiler_zuordnungen", "status_gesetzt_von", "'web' || char(27)", "kontakt_id = 98"),
    ("verteiler_zuordnungen", "status_gesetzt_von", "substr(hex(zeroblob(3000)), 1, 4001)", "kontakt_id = 99"),
    ("verteiler_zuordnungen", "kontakt_id", "null", "kontakt_id = 100"),
    ("email_historie", "gueltig_ab", "'bald'", "rowid % 3 = 0"),
    ("email_historie", "gueltig_bis", "null", "rowid % 5 = 0"),
    ("verteiler", "bezeichnung", "'Rundbrief' || char(7)", "verteiler_id = 'PN'"),
]


def faulty_crm(tmp_path: Path, url: str, *, faults: bool) -> MailbridgeConfig:
    """A generated CRM in Berlin's time, with a mapped custom field of every type; with
    `faults`, a value of every kind the reading refuses or converts, and ids held twice."""
    crm = yaml.safe_load((REPO_ROOT / "mailbridge.yaml").read_text("utf-8"))["crm"]
    overrides: dict[str, Any] = {"field_mappings": MAPPINGS, "crm": {**crm, "url": url, "timezone": "Europe/Berlin"}}
    config = load_config(write_project_config(tmp_path, base_url=None, crm_url=url, overrides=overrides))
    write_crm(generate_scenario(contacts=600, seed=11).tables, url, config.crm)
    crm_execute(url, *(f"alter table kontakte add column {name} {kind}" for name, kind in ADDED_COLUMNS.items()))
    if faults:
        drop_table_key(url, "kontakte")
        drop_table_key(url, "verteiler")
        drop_table_key(url, "verteiler_zuordnungen")
        crm_execute(
            url,
            *(f"update {table} set {column} = {value} where {where}" for table, column, value, where in SQLITE_FAULTS),
            "insert into kontakte (kontakt_id, email_adresse, geaendert_am) "
            "select kontakt_id, 'zweit.' || email_adresse, '2030-01-01 00:00:00' from kontakte where kontakt_id < 4",
            "insert into kontakte (kontakt_id, email_adresse) values (null, 'ohne.id@beispiel.de')",
            "insert into verteiler (verteiler_id, bezeichnung) values ('NL', 'Rundbrief')",
            "insert into verteiler_zuordnungen (kontakt_id, verteiler_id, status) "
            "select kontakt_id, verteiler_id, status from verteiler_zuordnungen where kontakt_id < 20",
        )
    else:
        crm_execute(
            url,
            "update kontakte set geburtstag = '1980-05-17 10:00:00', kundennummer = '42', "
            "umsatz = '12.75', vip = 'true', ort = 'Köln' where kontakt_id % 2 = 0",
        )
    return config


def read_crm(config: MailbridgeConfig, *, columnar: bool, name: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every raw CRM table as one read loads it, without dlt's own columns, rows sorted."""
    config = config.model_copy(update={"warehouse": str(config.base_dir / f"{name}.duckdb")})
    source = crm_source(
        config.crm.connection_url(config.base_dir),
        config.crm,
        run_id="same",
        field_mappings=config.field_mappings,
        list_links=config.list_links,
        columnar=columnar,
    )
    make_pipeline(config, f"crm_{name}", "raw_crm").run(source)
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        names = [
            row[0]
            for row in db.execute("select table_name from duckdb_tables() where schema_name = 'raw_crm'").fetchall()
        ]
        for table in names:
            if table.startswith("_dlt"):
                continue
            columns = [
                row[0]
                for row in db.execute(
                    "select column_name from duckdb_columns() where schema_name = 'raw_crm' and table_name = ? "
                    "and column_name not like '\\_dlt%' escape '\\' "
                    "and column_name not in ('started_at', 'finished_at') "
                    "order by column_index",
                    [table],
                ).fetchall()
            ]
            rows = db.execute(f"select {', '.join(columns)} from raw_crm.{table}").fetchall()
            tables[table] = sorted(rows, key=repr)
    return tables


def assert_same_reads(config: MailbridgeConfig) -> dict[str, list[tuple[Any, ...]]]:
    by_rows = read_crm(config, columnar=False, name="by_rows")
    by_columns = read_crm(config, columnar=True, name="by_columns")
    assert by_columns.keys() == by_rows.keys()
    for table in by_rows:
        assert by_columns[table] == by_rows[table], table
    return by_rows


def test_every_refused_value_and_shared_id_is_read_alike_both_ways(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    tables = assert_same_reads(faulty_crm(tmp_path, url, faults=True))
    rejected = {(row[0], row[3]) for row in tables["rejected_rows"]}
    # the faults reached the reading: each kind is among the rejected values
    assert {
        ("contacts", "first_name"),
        ("contacts", "last_name"),
        ("contacts", "salutation"),
        ("contacts", "modified_at"),
        ("contacts", "contact_id"),
        ("contacts", "birthday"),
        ("contacts", "customer_number"),
        ("contacts", "revenue"),
        ("contacts", "vip"),
        ("contacts", "city"),
        ("assignments", "status"),
        ("assignments", "status_changed_at"),
        ("assignments", "task"),
        ("assignments", "status_set_by"),
        ("assignments", "contact_id"),
        ("email_history", "valid_from"),
        ("email_history", "valid_to"),
        ("lists", "list_id"),
        ("lists", "name"),
    } <= rejected
    # and the values the reading converts were loaded, converted
    assert len(tables["contacts"]) > 500


def test_each_database_drivers_values_are_read_alike_both_ways(tmp_path: Path, crm_url: str) -> None:
    tables = assert_same_reads(faulty_crm(tmp_path, crm_url, faults=False))
    assert len(tables["contacts"]) >= 600
    assert sa.engine.make_url(crm_url).get_backend_name() in {"sqlite", "postgresql", "mysql"}


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "America/New_York", "Asia/Kolkata"])
def test_date_times_convert_alike_in_any_zone(zone: str) -> None:
    from zoneinfo import ZoneInfo

    from pipelines.crm.columnar import _BAD, _timestamp_column, _timestamps
    from pipelines.crm.values import _as_utc

    values: list[Any] = [
        None,
        "2025-03-09 02:30:00",  # not in New York's time
        "2025-11-02 01:30:00",  # twice in New York's time
        "0001-01-01 00:00:00",
        "9999-12-31 23:59:59",
        "2024-02-29",
        "2024-01-01 10:00:00.123456",
        "2024-01-01T10:00:00-03:00",
        "0001-01-01T00:30:00+05:30",
        datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 1, 10, 0),
        date(2024, 5, 1),
        "gestern",
        "",
        17,
    ]
    converted = _timestamps(values, ZoneInfo(zone))
    column, wrong = _timestamp_column(values, ZoneInfo(zone))
    for place, (value, fast, loaded) in enumerate(zip(values, converted, column.to_pylist(), strict=True)):
        try:
            expected = _as_utc(value, ZoneInfo(zone))
        except ValueError:
            assert fast is _BAD, value
            assert place in wrong and loaded is None, value
        else:
            assert fast == expected and (fast is None or fast.utcoffset() == expected.utcoffset()), value
            assert place not in wrong and loaded == expected, value
