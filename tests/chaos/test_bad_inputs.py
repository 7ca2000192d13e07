"""The chaos suite's bad-input corpus (tests/chaos/corpus/): every hostile or broken input is
refused, neutralised or reported, never wrongly accepted; the valid look-alikes still pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailbridge.config import ConfigError, TableMapping
from pipelines.crm import _reflect
from tests.chaos import corpus
from tests.chaos.corpus import drift
from tests.conftest import crm_query


def short(value: Any) -> str:
    text = ascii(value)
    return text if len(text) <= 48 else f"{text[:40]}…{len(text)}"


def cases(values: list[Any]) -> list[Any]:
    return [pytest.param(*(value if isinstance(value, tuple) else (value,)), id=short(value)) for value in values]


# ---------- addresses


@pytest.mark.parametrize("address", cases(corpus.invalid_addresses()))
def test_an_invalid_address_is_refused_with_a_reason(address: str) -> None:
    assert corpus.check_invalid_address(address) is None


@pytest.mark.parametrize(("address", "key"), cases(corpus.valid_addresses()))
def test_a_valid_tricky_address_is_accepted_and_normalised(address: str, key: str) -> None:
    assert corpus.check_valid_address(address, key) is None


def _invisible_by_character() -> list[Any]:
    grouped: dict[str, list[tuple[str, str, str]]] = {}
    for case in corpus.invisible_cases():
        grouped.setdefault(case[0].split(" at ")[0], []).append(case)
    return [pytest.param(group, id=name) for name, group in grouped.items()]


@pytest.mark.parametrize("group", _invisible_by_character())
def test_an_invisible_character_anywhere_is_refused_never_keyed_as_the_clean_address(
    group: list[tuple[str, str, str]],
) -> None:
    wrong = {label: corpus.check_invisible(address, clean) for label, address, clean in group}
    assert {label: problem for label, problem in wrong.items() if problem is not None} == {}


@pytest.mark.parametrize(("verdict", "address", "lookalike"), cases(corpus.confusables()))
def test_a_look_alike_is_refused_or_keyed_apart(verdict: str, address: str, lookalike: str) -> None:
    assert corpus.check_confusable(verdict, address, lookalike) is None


# ---------- CSV formula cells


@pytest.mark.parametrize("formula", cases(corpus.csv_formulas()))
def test_a_formula_cell_is_neutralised(formula: str) -> None:
    from mailbridge.export import safe_cell

    cell = safe_cell(formula)
    assert not cell.lstrip(" ").startswith(corpus.FORMULA_TRIGGERS)
    assert cell == "'" + formula


def test_the_export_neutralises_every_formula_in_every_column(tmp_path: Path) -> None:
    formulas = corpus.csv_formulas()
    outcomes = corpus.export_formula_outcomes(tmp_path, formulas)
    assert {formula: problem for formula, problem in zip(formulas, outcomes, strict=True) if problem} == {}


# ---------- SQL identifiers in the CRM mapping


@pytest.mark.parametrize("place", list(corpus.IDENTIFIER_PLACES))
@pytest.mark.parametrize("name", cases(corpus.sql_identifiers()))
def test_a_hostile_table_or_column_name_is_refused_naming_the_key(tmp_path: Path, place: str, name: str) -> None:
    assert corpus.check_sql_identifier_refused(tmp_path, place, name) is None


@pytest.mark.parametrize("name", cases(corpus.sql_identifiers_valid()))
def test_a_real_table_name_is_accepted(tmp_path: Path, name: str) -> None:
    assert corpus.check_sql_identifier_accepted(tmp_path, "crm.contacts.table", name) is None


def _sqlite_crm_with_sentinel(tmp_path: Path) -> tuple[Any, str]:
    config, url = drift._small_crm(tmp_path)
    drift._execute(url, "create table sentinel (x integer)", "insert into sentinel values (1)")
    return config, url


def _intact(url: str) -> None:
    assert crm_query(url, "select x from sentinel") == [{"x": 1}]
    assert crm_query(url, "select count(*) as n from kontakte") == [{"n": 4}]


def test_hostile_names_that_pass_no_config_execute_nothing_against_sqlite(tmp_path: Path) -> None:
    # the config refuses them; below it, reflection quotes them: nothing runs, the error names the key
    config, url = _sqlite_crm_with_sentinel(tmp_path)
    engine = sa.create_engine(url)
    contacts = config.crm.contacts
    try:
        for name in corpus.sql_identifiers():
            as_table = TableMapping.model_construct(table=name, columns=dict(contacts.columns))
            as_column = TableMapping.model_construct(table="kontakte", columns={**contacts.columns, "email": name})
            # SQLite's driver refuses a NUL in a statement before it runs anything
            refused = ConfigError if "\0" not in name else (ConfigError, ValueError, sa.exc.DBAPIError)
            with pytest.raises(refused):
                _reflect(engine, "contacts", as_table)
            with pytest.raises(ConfigError, match=r"crm\.contacts\.columns\.email"):
                _reflect(engine, "contacts", as_column)
    finally:
        engine.dispose()
    _intact(url)


def test_tables_and_columns_named_like_injections_are_read_as_names(tmp_path: Path) -> None:
    # a CRM whose tables really carry such names is read through quoted names, and nothing runs
    from pipelines.runner import extraction_named

    config, url = _sqlite_crm_with_sentinel(tmp_path)
    engine = sa.create_engine(url)
    quote = engine.dialect.identifier_preparer.quote
    names = {
        "contacts": 'kontakte"; drop table sentinel; --',
        "lists": "verteiler`; drop table sentinel; --",
        "assignments": "zuordnungen'; drop table sentinel; /*",
    }
    email_column = "mail]; drop table sentinel; --"
    sources = {"contacts": "kontakte", "lists": "verteiler", "assignments": "verteiler_zuordnungen"}
    statements = [f"create table {quote(names[e])} as select * from {sources[e]}" for e in names]
    statements.append(f"alter table {quote(names['contacts'])} rename column email_adresse to {quote(email_column)}")
    drift._execute(url, *statements)
    engine.dispose()
    mappings = {
        entity: TableMapping.model_construct(
            table=names[entity],
            columns={
                **getattr(config.crm, entity).columns,
                **({"email": email_column} if entity == "contacts" else {}),
            },
        )
        for entity in names
    }
    config = config.model_copy(update={"crm": config.crm.model_copy(update=mappings)})
    run = extraction_named(config, "crm", full_refresh=True, run_id="names")
    run.pipeline.run(run.source)
    import duckdb

    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        keys = db.execute("select email_key from raw_crm.contacts order by contact_id").fetchall()
        assignments = db.execute("select count(*) from raw_crm.assignments").fetchone()
    assert keys[0] == ("anna.schmidt@beispiel.de",) and len(keys) == 4
    assert assignments == (3,)
    _intact(url)


# ---------- CRM values through the real extraction


@pytest.fixture(scope="module")
def crm_value_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    return corpus.crm_value_outcomes(tmp_path_factory.mktemp("crm_values"))


def _crm_value_params() -> list[Any]:
    params = []
    for case in corpus.crm_value_cases():
        marks = [pytest.mark.xfail(strict=True, reason=case.pending)] if case.bad and case.pending else []
        params.append(pytest.param(case, id=short(case.id), marks=marks))
    return params


@pytest.mark.parametrize("case", _crm_value_params())
def test_a_crm_value_costs_the_value_never_the_sync_or_the_consent(
    case: corpus.CrmValueCase, crm_value_outcomes: dict[str, str | None]
) -> None:
    assert crm_value_outcomes[case.id] is None


# ---------- schema drift


@pytest.mark.parametrize("name", list(drift.DRIFT_CASES))
def test_schema_drift_keeps_the_sync_working_or_stops_it_naming_the_column(tmp_path: Path, name: str) -> None:
    assert drift.DRIFT_CASES[name](tmp_path) is None


def test_the_corpus_holds_at_least_500_bad_inputs() -> None:
    bad = (
        len(corpus.invalid_addresses())
        + len(corpus.invisible_cases())
        + len(corpus.confusables())
        + len(corpus.csv_formulas())
        + len(corpus.sql_identifiers()) * len(corpus.IDENTIFIER_PLACES)
        + sum(case.bad for case in corpus.crm_value_cases())
        + len(drift.DRIFT_CASES)
    )
    assert bad >= 500
