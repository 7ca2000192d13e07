"""The bad-input corpus: data files of hostile and broken inputs, and the checks each must pass.

Every check returns None when mailbridge handled the input as it must, else a sentence saying
what it wrongly accepted. `tests/chaos/test_bad_inputs.py` runs the checks under pytest;
`corpus_figures()` runs them without it and counts inputs tried and wrongly accepted.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parent
REPO_ROOT = CORPUS.parents[2]

_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[tnrse\\])|\{([^{}*]+)\*(\d+)\}")
_SIMPLE = {"t": "\t", "n": "\n", "r": "\r", "s": " ", "e": "", "\\": "\\"}


def decode(line: str) -> str:
    """A corpus line as the text it stands for: escapes (\\u200b, \\x00, \\t, \\s, ...) and
    repeats ({a*65}) resolved; a backslash before anything else stays as it is."""

    def replace(match: re.Match[str]) -> str:
        if match.group(2) is not None:
            return match.group(2) * int(match.group(3))
        escape = match.group(1)
        if escape[0] in "uUx":
            return chr(int(escape[1:], 16))
        return _SIMPLE[escape]

    return _ESCAPE.sub(replace, line)


def corpus_lines(name: str) -> list[str]:
    """The entries of a corpus text file: comments and blank lines left out, nothing stripped."""
    lines = (CORPUS / name).read_text("utf-8").split("\n")
    return [line for line in lines if line and not line.startswith("#")]


# ---------- addresses


def invalid_addresses() -> list[str]:
    return [decode(line) for line in corpus_lines("addresses_invalid.txt")]


def valid_addresses() -> list[tuple[str, str]]:
    pairs = [line.split("\t") for line in corpus_lines("addresses_valid.txt")]
    return [(decode(address), decode(key)) for address, key in pairs]


def invisible_cases() -> list[tuple[str, str, str]]:
    """(label, address with an invisible character, the clean address) for every invisible
    character of the corpus at every position of every clean address."""
    characters = [line.split("\t") for line in corpus_lines("invisible_characters.txt")]
    cases = []
    for clean in corpus_lines("addresses_clean.txt"):
        for code, name in characters:
            char = chr(int(code[2:], 16))
            for position in range(len(clean) + 1):
                address = clean[:position] + char + clean[position:]
                cases.append((f"{code} {name} at {position} of {clean}", address, clean))
    return cases


def confusables() -> list[tuple[str, str, str]]:
    return [tuple(line.split("\t")) for line in corpus_lines("confusables.txt")]  # type: ignore[misc]


def check_invalid_address(address: str) -> str | None:
    from mailbridge.email_key import InvalidEmail, email_key, try_email_key

    try:
        key = email_key(address)
    except InvalidEmail as error:
        if not error.reason:
            return "refused without a reason"
        result = try_email_key(address)
        if result.key is not None or not result.error:
            return "try_email_key disagrees with email_key"
        return None
    return f"accepted with the key {key!r}"


def check_valid_address(address: str, expected: str) -> str | None:
    from mailbridge.email_key import try_email_key

    result = try_email_key(address)
    if result.key is None:
        return f"refused: {result.error}"
    if result.key != expected:
        return f"keyed {result.key!r}, expected {expected!r}"
    if try_email_key(result.key).key != result.key:
        return "its key is not a fixed point"
    return None


def check_invisible(address: str, clean: str) -> str | None:
    from mailbridge.email_key import email_key, try_email_key

    result = try_email_key(address)
    if result.key is None:
        return None if result.error else "refused without a reason"
    if result.key == email_key(clean):
        return f"keyed as the clean address {result.key!r}"
    return f"accepted silently with the key {result.key!r}"


def check_confusable(verdict: str, address: str, lookalike: str) -> str | None:
    from mailbridge.email_key import email_key, try_email_key

    result = try_email_key(address)
    if result.key is not None and result.key == email_key(lookalike):
        return f"keyed as the address it imitates, {lookalike!r}"
    if verdict == "refuse" and result.key is not None:
        return f"a mixed-script look-alike accepted with the key {result.key!r}"
    if verdict == "distinct" and result.key is None:
        return f"a single-script address refused: {result.error}"
    return None


# ---------- CSV formula cells


def csv_formulas() -> list[str]:
    return [decode(line) for line in corpus_lines("csv_formulas.txt")]


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")


def check_csv_cells(path: Path, written: list[list[str]]) -> list[str | None]:
    """For each row written to the CSV at `path` (after its header): None when every cell reads
    back neutralised (an apostrophe before a formula) and otherwise unchanged."""
    with path.open(encoding="utf-8", newline="") as handle:
        read = list(csv.reader(handle))[1:]
    outcomes: list[str | None] = []
    for index, row in enumerate(written):
        cells = read[index] if index < len(read) else None
        if cells is None or len(cells) != len(row):
            outcomes.append(f"row {index} did not read back whole: {cells!r}")
            continue
        problem = None
        for original, cell in zip(row, cells, strict=True):
            if cell.lstrip(" ").startswith(FORMULA_TRIGGERS):
                problem = f"written as a formula: {cell!r}"
                break
            if cell not in (original, "'" + original):
                problem = f"changed: {original!r} became {cell!r}"
                break
        outcomes.append(problem)
    return outcomes


def export_formula_outcomes(folder: Path, formulas: list[str]) -> list[str | None]:
    """Every formula in every column of the push-back queue, written by `export_crm_changes`."""
    import duckdb

    from mailbridge.export import COLUMNS, export_crm_changes

    warehouse = folder / "warehouse.duckdb"
    rows = []
    for number, formula in enumerate(formulas):
        values = {column: formula for column in COLUMNS}
        # the export sorts by list, action and address: a number in front keeps the corpus order
        values["list_link_id"] = f"{number:04d}{formula}"
        rows.append(values)
    with duckdb.connect(str(warehouse)) as db:
        db.execute("create schema marts")
        columns = ", ".join(f"{column} varchar" for column in COLUMNS)
        db.execute(
            f"create table marts.fct_pushback_queue ({columns}, crm_target_status varchar, "
            "target varchar, queue_status varchar)"
        )
        for values in rows:
            db.execute(
                f"insert into marts.fct_pushback_queue values ({', '.join('?' * (len(COLUMNS) + 3))})",
                [*(values[column] for column in COLUMNS), None, "crm", "ready"],
            )
    out = folder / "crm_changes.csv"
    count = export_crm_changes(warehouse, out)
    if count != len(formulas):
        return [f"the export wrote {count} rows for {len(formulas)}"] * len(formulas)
    return check_csv_cells(out, [[values[column] for column in COLUMNS] for values in rows])


# ---------- SQL identifiers in the CRM mapping


def sql_identifiers() -> list[str]:
    return [decode(line) for line in corpus_lines("sql_identifiers.txt")]


def sql_identifiers_valid() -> list[str]:
    return [decode(line) for line in corpus_lines("sql_identifiers_valid.txt")]


# each place a CRM name is configured, and how to put a name there
IDENTIFIER_PLACES: dict[str, Callable[[dict[str, Any], str], None]] = {
    "crm.contacts.table": lambda raw, name: raw["crm"]["contacts"].__setitem__("table", name),
    "crm.assignments.columns.status": lambda raw, name: raw["crm"]["assignments"]["columns"].__setitem__(
        "status", name
    ),
    "field_mappings[0].crm_column": lambda raw, name: raw.__setitem__(
        "field_mappings", [{"name": "kundennummer", "crm_column": name, "esp_field": "KDNR", "type": "integer"}]
    ),
}


def config_outcome(folder: Path, place: str, name: str) -> str | None:
    """The ConfigError message of a config with `name` at `place`, or None when it loads."""
    from mailbridge.config import ConfigError, load_config

    raw = yaml.safe_load((REPO_ROOT / "mailbridge.yaml").read_text("utf-8"))
    IDENTIFIER_PLACES[place](raw, name)
    file = folder / "mailbridge.yaml"
    file.write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    try:
        load_config(file)
    except ConfigError as error:
        return str(error)
    return None


def check_sql_identifier_refused(folder: Path, place: str, name: str) -> str | None:
    message = config_outcome(folder, place, name)
    if message is None:
        return "the config accepted it"
    if place not in message or str(folder / "mailbridge.yaml") not in message:
        return f"refused without naming {place} in its file: {message}"
    if "Traceback" in message:
        return "refused with a traceback"
    return None


def check_sql_identifier_accepted(folder: Path, place: str, name: str) -> str | None:
    message = config_outcome(folder, place, name)
    return None if message is None else f"a real table or column name refused: {message}"


# ---------- CRM values through the real CRM extraction


@dataclass(frozen=True)
class CrmValueCase:
    """One value of one kind, put into one CRM row; `expect` is what a good value loads as."""

    kind: str
    entity: str
    column: str
    field: str
    sql: str
    bad: bool
    expect: Any = None
    pending: str | None = None

    @property
    def id(self) -> str:
        return f"{self.kind}:{'bad' if self.bad else 'good'}:{self.sql}"


def crm_kinds() -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "crm_values.yaml").read_text("utf-8"))
    return kinds


def crm_value_cases() -> list[CrmValueCase]:
    cases = []
    for kind, spec in crm_kinds().items():
        field = spec.get("field") or f"custom_{kind}"
        for sql in spec["bad"]:
            cases.append(
                CrmValueCase(kind, spec["entity"], spec["column"], field, sql, True, None, spec.get("pending"))
            )
        for good in spec.get("good", []):
            expect = good["expect"]
            if isinstance(expect, dict) and "repeat" in expect:
                expect = expect["repeat"] * expect["times"]
            elif isinstance(expect, dict):
                expect = tuple(expect["any_of"])
            cases.append(CrmValueCase(kind, spec["entity"], spec["column"], field, good["sql"], False, expect))
    return cases


@dataclass
class CrmRead:
    """What one extraction of a corpus CRM loaded, by contact id."""

    contacts: dict[str, dict[str, Any]]
    assignments: dict[str, dict[str, Any]]
    rejected: dict[tuple[str, str, str], str]
    failure: str | None = None


FIRST_CASE_ID = 1000
CONTACT_FIELDS = ("first_name", "last_name", "salutation", "modified_at", "custom_fields")
ASSIGNMENT_FIELDS = ("status", "status_changed_at", "status_set_by", "task")


def build_value_crm(folder: Path, cases: list[CrmValueCase]) -> Any:
    """A SQLite CRM holding the small scenario and one contact (with an opt-out on list NL) per
    case, the case's value in its column; returns the project config pointed at it."""
    import sqlalchemy as sa

    from mailbridge.config import load_config
    from sandbox.crm_db import write_crm
    from tests.conftest import scenario_named, write_project_config

    kinds = crm_kinds()
    custom = {kind: spec for kind, spec in kinds.items() if "mapped_as" in spec}
    mappings = [
        {"name": f"custom_{kind}", "crm_column": spec["column"], "esp_field": kind.upper(), "type": spec["mapped_as"]}
        for kind, spec in custom.items()
    ]
    url = f"sqlite:///{folder / 'crm.sqlite'}"
    config = load_config(
        write_project_config(folder, base_url=None, crm_url=url, overrides={"field_mappings": mappings})
    )
    write_crm(scenario_named("small").tables, url, config.crm)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for spec in custom.values():
                connection.execute(sa.text(f"alter table kontakte add column {spec['column']} {spec['sql_type']}"))
            for number, case in enumerate(cases, start=FIRST_CASE_ID):
                contact = {
                    "kontakt_id": str(number),
                    "email_adresse": f"'fall{number}@beispiel.de'",
                    "vorname": "'Fall'",
                    "nachname": f"'{number}'",
                }
                assignment = {
                    "kontakt_id": str(number),
                    "verteiler_id": "'NL'",
                    "status": "'abgemeldet'",
                    "status_datum": "'2025-06-01 10:00:00'",
                    "status_gesetzt_von": "'telefon'",
                }
                (contact if case.entity == "contacts" else assignment)[case.column] = case.sql
                for table, values in (("kontakte", contact), ("verteiler_zuordnungen", assignment)):
                    connection.execute(
                        sa.text(f"insert into {table} ({', '.join(values)}) values ({', '.join(values.values())})")
                    )
    finally:
        engine.dispose()
    return config


def extract_value_crm(config: Any) -> CrmRead:
    """Run the real CRM extraction; what it loaded, or why it failed (its innermost cause)."""
    import duckdb

    from pipelines.runner import extraction_named

    try:
        run = extraction_named(config, "crm", full_refresh=True, run_id="corpus")
        run.pipeline.run(run.source)
    except Exception as error:  # the corpus records any failure; the check reports it
        cause: BaseException = error
        while cause.__cause__ is not None:  # as `mailbridge sync` reports a failed step
            cause = cause.__cause__
        return CrmRead({}, {}, {}, failure=f"{type(cause).__name__}: {cause}"[:300])
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        contacts = {
            row[0]: dict(zip(CONTACT_FIELDS, row[1:], strict=True))
            for row in db.execute(f"select contact_id, {', '.join(CONTACT_FIELDS)} from raw_crm.contacts").fetchall()
        }
        assignments = {
            row[0]: dict(zip(ASSIGNMENT_FIELDS, row[1:], strict=True))
            for row in db.execute(
                f"select contact_id, {', '.join(ASSIGNMENT_FIELDS)} from raw_crm.assignments where list_id = 'NL'"
            ).fetchall()
        }
        rejected = {
            (entity, row_key, field): reason
            for entity, row_key, field, reason in db.execute(
                "select entity, row_key, field, reason from raw_crm.rejected_rows"
            ).fetchall()
        }
    return CrmRead(contacts, assignments, rejected)


def _loaded_value(case: CrmValueCase, read: CrmRead, contact_id: str) -> tuple[bool, Any]:
    """(whether the case's row was loaded, the value it was loaded with)."""
    if case.entity == "contacts":
        contact = read.contacts.get(contact_id)
        if contact is None:
            return False, None
        if case.field.startswith("custom_"):
            return True, json.loads(contact["custom_fields"] or "{}").get(case.field)
        return True, contact[case.field]
    assignment = read.assignments.get(contact_id)
    if assignment is None:
        return False, None
    return True, assignment[case.field]


def _same(value: Any, expect: Any) -> bool:
    if isinstance(expect, tuple):
        return any(_same(value, form) for form in expect)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() == expect
    if isinstance(expect, bool) or isinstance(value, bool) or expect is None:
        return value is expect or value == expect
    if isinstance(expect, (int, float)):
        try:
            return Decimal(str(value)) == Decimal(str(expect))
        except ArithmeticError:
            return False
    return bool(value == expect)


def check_crm_value(case: CrmValueCase, read: CrmRead, contact_id: str) -> str | None:
    """None when the extraction did with the value what the corpus asks for."""
    if read.failure is not None:
        return f"the CRM extraction failed: {read.failure}"
    loaded, value = _loaded_value(case, read, contact_id)
    row_key = contact_id if case.entity == "contacts" else f"{contact_id}/NL"
    reason = read.rejected.get((case.entity, row_key, case.field))
    opt_out = read.assignments.get(contact_id, {}).get("status")
    if not case.bad:
        if not loaded:
            return "a good value cost its row"
        if reason is not None:
            return f"a good value was rejected: {reason}"
        if not _same(value, case.expect):
            return f"loaded as {value!r}, expected {case.expect!r}"
        return None
    if case.field == "status":
        # a status word with no canonical status means nothing: the row stays out, reported
        if loaded:
            return f"an unknown status word was loaded as {value!r}"
        return None if reason else "the row was kept out without a word in rejected_rows"
    if not loaded:
        return "the whole row was lost for one bad value"
    if opt_out != "unsubscribed":
        return f"the row's opt-out did not survive the bad value (status {opt_out!r})"
    if value is not None:
        return f"loaded as {value!r}"
    if not reason:
        return "set to NULL without a word in rejected_rows"
    return None


def crm_value_outcomes(folder: Path, cases: list[CrmValueCase] | None = None) -> dict[str, str | None]:
    """Every CRM value case through the real extraction: the good values and the bad ones no
    pending fix covers in one CRM, the pending ones in one CRM per kind (a value that stops
    the read must not hide what the others do). By case id."""
    cases = crm_value_cases() if cases is None else cases
    batches: dict[str, list[CrmValueCase]] = {}
    for case in cases:
        batches.setdefault(case.kind if case.bad and case.pending else "main", []).append(case)
    outcomes: dict[str, str | None] = {}
    for name, batch in batches.items():
        batch_folder = folder / name
        batch_folder.mkdir(parents=True, exist_ok=True)
        read = extract_value_crm(build_value_crm(batch_folder, batch))
        for number, case in enumerate(batch, start=FIRST_CASE_ID):
            outcomes[case.id] = check_crm_value(case, read, str(number))
    return outcomes


# ---------- the figures


def _tally(outcomes: Iterator[tuple[str | None, bool]]) -> dict[str, int]:
    tried = wrongly = pending = 0
    for problem, is_pending in outcomes:
        tried += 1
        if problem is not None:
            wrongly += 1
            pending += is_pending
    return {"inputs_tried": tried, "wrongly_accepted": wrongly, "pending": pending}


def corpus_figures() -> dict[str, Any]:
    """Run every check of the corpus (no pytest) and count, per kind of input, how many were
    tried and how many wrongly accepted (`pending`: of those, the ones a fix on another branch
    covers). `valid_inputs` counts the inputs that must be accepted, and how many were not."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        by_kind: dict[str, dict[str, int]] = {
            "addresses": _tally((check_invalid_address(a), False) for a in invalid_addresses()),
            "invisible_characters": _tally((check_invisible(a, clean), False) for _, a, clean in invisible_cases()),
            "confusables": _tally((check_confusable(*case), False) for case in confusables()),
        }
        formulas = csv_formulas()
        cells = [None if safe else "safe_cell left a formula" for safe in _safe_cells(formulas)]
        exported = export_formula_outcomes(folder, formulas)
        by_kind["csv_formulas"] = _tally(
            ((cell if cell is not None else export), False) for cell, export in zip(cells, exported, strict=True)
        )
        by_kind["sql_identifiers"] = _tally(
            (check_sql_identifier_refused(folder, place, name), False)
            for name in sql_identifiers()
            for place in IDENTIFIER_PLACES
        )
        cases = crm_value_cases()
        outcomes = crm_value_outcomes(folder / "crm_values", cases)
        by_kind["crm_values"] = _tally((outcomes[case.id], case.pending is not None) for case in cases if case.bad)
        from tests.chaos.corpus.drift import drift_outcomes

        by_kind["schema_drift"] = _tally((problem, False) for problem in drift_outcomes(folder / "drift").values())
        valid = [check_valid_address(a, key) for a, key in valid_addresses()]
        valid += [check_sql_identifier_accepted(folder, "crm.contacts.table", name) for name in sql_identifiers_valid()]
        valid += [outcomes[case.id] for case in cases if not case.bad]
    return {
        "inputs_tried": sum(kind["inputs_tried"] for kind in by_kind.values()),
        "wrongly_accepted": sum(kind["wrongly_accepted"] for kind in by_kind.values()),
        "pending": sum(kind["pending"] for kind in by_kind.values()),
        "by_kind": by_kind,
        "valid_inputs": {"tried": len(valid), "wrongly_refused": sum(problem is not None for problem in valid)},
    }


def _safe_cells(formulas: list[str]) -> list[bool]:
    from mailbridge.export import safe_cell

    return [not safe_cell(formula).lstrip(" ").startswith(FORMULA_TRIGGERS) for formula in formulas]
