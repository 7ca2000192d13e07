"""dlt source for a SQL CRM (SQLite, PostgreSQL, MariaDB, ...), driven by the configured mapping."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import dlt
import pyarrow as pa
from dlt.sources import DltResource

from mailbridge.config import ConfigError, CrmConfig, FieldMapping, ListLink, TableMapping
from mailbridge.email_key import blocklist_key, blocklist_keys, with_email_key
from pipelines.crm.columnar import Lane, read_columns, row_hashes
from pipelines.crm.values import (
    ESP_TEXT_FIELDS,
    ESP_TEXT_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    _as_datetime,
    _as_utc,
    value_problems,
)

# SQLAlchemy is imported where the CRM is read: the source is built wherever the extractions are
# listed (the Dagster code location), and SQLAlchemy takes a tenth of a second to import
if TYPE_CHECKING:
    import sqlalchemy as sa

TS = pa.timestamp("us", tz="UTC")

# canonical fields per entity and their warehouse types; ids are strings whatever the CRM uses
FIELDS: dict[str, dict[str, pa.DataType]] = {
    "contacts": {
        "contact_id": pa.string(),
        "email": pa.string(),
        "first_name": pa.string(),
        "last_name": pa.string(),
        "salutation": pa.string(),
        "modified_at": TS,
    },
    "lists": {"list_id": pa.string(), "name": pa.string()},
    "assignments": {
        "contact_id": pa.string(),
        "list_id": pa.string(),
        "status": pa.string(),
        "crm_status_value": pa.string(),
        "status_changed_at": TS,
        "status_set_by": pa.string(),
        "task": pa.string(),
    },
    "blocklist": {"email": pa.string(), "blocked_at": TS, "reason": pa.string()},
    "email_history": {"contact_id": pa.string(), "email": pa.string(), "valid_from": TS, "valid_to": TS},
}
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "contacts": ("contact_id",),
    "lists": ("list_id",),
    "assignments": ("contact_id", "list_id"),
    "blocklist": ("email",),
    "email_history": ("contact_id", "email", "valid_to"),
}
EMAIL_COLUMNS = {"contacts": "email", "blocklist": "email", "email_history": "email"}
# the models join on these ids: one row speaks for each, the others are kept out
UNIQUE_ID_ENTITIES = ("contacts", "lists")
# read column-wise (pipelines.crm.columnar); the blocklist's patterns are read row by row
COLUMNAR_ENTITIES = ("contacts", "lists", "assignments", "email_history")
REJECTED_SCHEMA = pa.schema(
    [
        ("entity", pa.string()),
        # the row's place in the read of its table (ordered by the key): a row without a key,
        # or one of several rows with the same key, has nothing else that tells it apart
        ("row_number", pa.int64()),
        ("row_key", pa.string()),
        ("field", pa.string()),
        ("value", pa.string()),
        ("reason", pa.string()),
        ("row_kept", pa.bool_()),  # false: the whole row was kept out of the load
        ("run_id", pa.string()),
    ]
)
EXTRACTION_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("entity", pa.string()),
        ("started_at", TS),
        ("finished_at", TS),
        ("rows_read", pa.int64()),
        ("rows_rejected", pa.int64()),  # rows kept out of the load
        ("values_rejected", pa.int64()),  # unreadable values loaded as NULL in rows that were kept
    ]
)


def _reflect(engine: sa.Engine, entity: str, mapping: TableMapping) -> sa.Table:
    """The mapped table, checked against the database: every mapped column must exist."""
    import sqlalchemy as sa

    try:
        table = sa.Table(mapping.table, sa.MetaData(), autoload_with=engine)
    except sa.exc.NoSuchTableError:
        raise ConfigError(
            f"crm.{entity}.table: the CRM database has no table {mapping.table!r}. "
            "Fix the table name in mailbridge.yaml."
        ) from None
    missing = {field: column for field, column in mapping.columns.items() if column not in table.c}
    if missing:
        field, column = next(iter(missing.items()))
        raise ConfigError(
            f"crm.{entity}.columns.{field}: table {mapping.table!r} has no column {column!r} "
            f"(it has: {', '.join(table.c.keys())}). Fix the mapping in mailbridge.yaml."
        )
    return table


def _is_date_time(column: sa.Column[Any]) -> bool:
    import sqlalchemy as sa

    return isinstance(column.type, (sa.types.Date, sa.types.DateTime, sa.types.Time))


def _raw_column(column: sa.Column[Any], dialect: str) -> Any:
    """A date-time column read so that no value can fail the whole read; `_as_datetime` parses
    each value. The dialect's own conversion (SQLite's) would raise on one unreadable value, and
    psycopg refuses PostgreSQL's infinity and years past 9999: there the column is read as ISO text."""
    import sqlalchemy as sa

    if dialect == "postgresql" and _is_date_time(column):
        return sa.cast(column, sa.Text)
    return sa.type_coerce(column, sa.types.NullType())


@dlt.source(name="crm", max_table_nesting=0)
def crm_source(
    url: str,
    crm: CrmConfig,
    run_id: str = "manual",
    field_mappings: Sequence[FieldMapping] = (),
    chunk_size: int = 50_000,
    list_links: Sequence[ListLink] = (),
    columnar: bool = True,
) -> Iterator[DltResource]:
    """The CRM's contacts, lists, assignments, blocklist and address history, in canonical names.

    Each run reads the tables whole and replaces the raw copies; assignment rows the CRM holds
    twice for one contact and list are all loaded (int_crm__memberships decides between them).
    What cannot be read goes to `rejected_rows`, one row per field with the raw value, the
    row's place in the read and the reason: an unreadable optional value (a timestamp that is
    not one, a mapped field that is not of its type) is loaded as NULL and the row kept, so an
    opt-out on it still counts; a row without its key, with an unreadable key, with a status
    word `crm.status_values` does not map or a blocklist entry that blocks nothing stays out of
    the load, and so does every row but one of a contact or list id the table holds twice.

    Before the first row is read, every CRM list the `list_links` name must exist in the CRM;
    a link to a list it lacks stops the extraction with the config key to fix.

    Rows are read column-wise (`pipelines.crm.columnar`): a row in which nothing is wrong is
    loaded without a dict of its own, and every other row is read one by one as above.
    `columnar=False` reads every row one by one (the tests compare the two).
    """
    zone = ZoneInfo(crm.timezone)
    statuses = crm.status_values
    mapped_types = {m.name: m.type for m in field_mappings}
    esp_text = {*ESP_TEXT_FIELDS, *(m.name for m in field_mappings if m.type == "text")}
    links_checked = False

    def read(entity: str) -> Iterator[pa.Table]:
        mapping: TableMapping = getattr(crm, entity)
        fields = {field: dtype for field, dtype in FIELDS[entity].items() if field in mapping.columns}
        if entity == "assignments":
            fields["crm_status_value"] = pa.string()
        schema = pa.schema(list(fields.items()))
        custom_types: Mapping[str, str] = mapped_types if entity == "contacts" else {}
        text_fields = [field for field in _text_fields(entity) if field in fields]
        if entity == "contacts":
            text_fields += [m.name for m in field_mappings if m.type == "text"]
        started_at = datetime.now(UTC)
        rows_read = rows_rejected = values_rejected = 0
        rejected: list[dict[str, Any]] = []

        def settle(row: ReadRow) -> bool:
            """Log what could not be read of the row; true when the row is loaded."""
            nonlocal rows_rejected, values_rejected
            kept = not row.is_kept_out
            # one log row per field, so two bad values of one row never share a key
            rejected.extend(_rejected_row(entity, row, problem, kept, run_id) for problem in row.problems)
            if kept:
                values_rejected += len(row.problems)
            else:
                rows_rejected += 1
            return kept

        def to_arrow(records: list[dict[str, Any]]) -> tuple[pa.Table, list[str]]:
            """Rows read one by one: their canonical columns, and their mapped fields as JSON."""
            data = {field: [record.get(field) for record in records] for field in fields}
            custom = {name: [record.get(name) for record in records] for name in custom_types}
            return pa.Table.from_pydict(data, schema=schema), _custom_json(custom, len(records))

        def lane_to_arrow(lane: Lane) -> tuple[pa.Table, list[str]]:
            """Rows read column-wise, in the shape of `to_arrow`."""
            table = pa.table({field: lane.columns[field] for field in fields}, schema=schema)
            return table, _custom_json(lane.mapped, table.num_rows)

        def finish(parts: list[tuple[pa.Table, list[str]]]) -> pa.Table:
            """The chunk as loaded: its columns, the email keys and, for contacts, the mapped
            fields and the version hash."""
            arrow = pa.concat_tables([table for table, _ in parts])
            if entity == "blocklist":
                keys, domains, errors = blocklist_keys(arrow.column("email").to_pylist())
                arrow = arrow.append_column("email_key", keys).append_column("blocked_domain", domains)
                arrow = arrow.append_column("email_error", errors)
            elif entity in EMAIL_COLUMNS:
                arrow = with_email_key(arrow, EMAIL_COLUMNS[entity])
            if entity == "contacts":
                custom = [text for _, texts in parts for text in texts]
                arrow = arrow.append_column("custom_fields", pa.array(custom, type=pa.string()))
                arrow = arrow.append_column("row_hash", row_hashes(arrow))
            return arrow

        import sqlalchemy as sa

        engine = sa.create_engine(url)
        try:
            nonlocal links_checked
            if not links_checked:
                _check_linked_lists(engine, crm, list_links)
                links_checked = True
            table = _reflect(engine, entity, mapping)
            dialect = engine.dialect.name
            columns = [
                (_raw_column(table.c[column], dialect) if FIELDS[entity][field] == TS else table.c[column]).label(field)
                for field, column in mapping.columns.items()
                if field in FIELDS[entity]
            ]
            if entity == "contacts":
                columns += [_mapped_column(table, m, dialect) for m in field_mappings]
            order = [table.c[mapping.columns[key]] for key in PRIMARY_KEYS[entity] if key in mapping.columns]
            query = sa.select(*columns).order_by(*order)
            with engine.connect() as connection:
                if dialect == "postgresql":
                    # date-times are read as text (see _raw_column), in the one style they parse from
                    connection.exec_driver_sql("set datestyle to 'ISO, MDY'")
                shared_ids = _shared_ids(connection, order[0]) if entity in UNIQUE_ID_ENTITIES else set()
                sharing: dict[str, list[ReadRow]] = {}
                result = connection.execution_options(stream_results=True, yield_per=chunk_size).execute(query)
                # an empty CRM table still yields one empty chunk, so the raw table exists
                chunks = itertools.chain(result.partitions(chunk_size), [[]])
                names = list(result.keys())
                for chunk in chunks:
                    if not chunk and rows_read:
                        break
                    first_number = rows_read + 1
                    rows_read += len(chunk)
                    parts = []
                    slow: Sequence[int] = range(len(chunk))
                    if columnar and entity in COLUMNAR_ENTITIES:
                        lane = read_columns(
                            names,
                            chunk,
                            FIELDS[entity],
                            keys=PRIMARY_KEYS[entity],
                            zone=zone,
                            text_limits={
                                name: ESP_TEXT_MAX_LENGTH if name in esp_text else TEXT_MAX_LENGTH
                                for name in text_fields
                            },
                            mapped_types=custom_types,
                            mapped_value=_mapped_value,
                            statuses=statuses if entity == "assignments" else None,
                            task_values=crm.task_values if entity == "assignments" else None,
                            shared_ids=shared_ids,
                        )
                        parts.append(lane_to_arrow(lane))
                        slow = lane.slow
                    loaded: list[dict[str, Any]] = []
                    for place in slow:
                        record = chunk[place]._asdict()
                        raw = dict(record)
                        problems = _normalise(entity, record, statuses, zone, custom_types)
                        problems += [
                            Problem(field, reason, rejects_row=False)
                            for field, reason in value_problems(entity, record, text_fields, esp_text, crm.task_values)
                        ]
                        read_row = ReadRow(first_number + place, raw, record, problems)
                        identity = record.get(PRIMARY_KEYS[entity][0])
                        if identity in shared_ids and not read_row.is_kept_out:
                            sharing.setdefault(identity, []).append(read_row)
                        elif settle(read_row):
                            loaded.append(record)
                    parts.append(to_arrow(loaded))
                    yield finish(parts)
                if sharing:
                    speaking: list[dict[str, Any]] = []
                    for rows in sharing.values():
                        for read_row in _one_row_speaks(entity, rows, "modified_at" in fields):
                            if settle(read_row):
                                speaking.append(read_row.record)
                    yield finish([to_arrow(speaking)])
        finally:
            engine.dispose()
        # yielded even when empty, so the log table always exists
        # a row is told apart by run, entity, row_number and field; no key hint, since dlt would
        # make row_number NOT NULL and fail on the rows of warehouses that predate it
        yield _log_row(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), "rejected_rows", ())
        record = {
            "run_id": run_id,
            "entity": entity,
            "started_at": started_at,
            "finished_at": datetime.now(UTC),
            "rows_read": rows_read,
            "rows_rejected": rows_rejected,
            "values_rejected": values_rejected,
        }
        yield _log_row(pa.Table.from_pylist([record], schema=EXTRACTION_SCHEMA), "extractions", ("run_id", "entity"))

    def resource(entity: str) -> DltResource:
        # a function, not a generator: dlt finds a generator's module by inspect.getmodule on its
        # frame, which resolves the path of every module loaded (a tenth of a second or more,
        # where the Dagster code location builds the source)
        def rows() -> Iterator[pa.Table]:
            yield from read(entity)

        if entity == "contacts":
            # every version of a contact is kept (scd2): the address history email changes show in
            return dlt.resource(
                rows,
                name=entity,
                write_disposition={"disposition": "merge", "strategy": "scd2", "row_version_column_name": "row_hash"},
            )
        return dlt.resource(rows, name=entity, primary_key=PRIMARY_KEYS[entity], write_disposition="replace")

    for entity in ("contacts", "lists", "assignments", "blocklist", "email_history"):
        if getattr(crm, entity) is not None:
            yield resource(entity)


def _text_fields(entity: str) -> list[str]:
    """The free-text fields of an entity: not its keys, addresses or status words, which have
    checks of their own."""
    checked = {*PRIMARY_KEYS[entity], "email", "status", "crm_status_value"}
    return [field for field, dtype in FIELDS[entity].items() if dtype == pa.string() and field not in checked]


def _check_linked_lists(engine: sa.Engine, crm: CrmConfig, list_links: Sequence[ListLink]) -> None:
    """Every linked CRM list is in the CRM's lists table: a link to a list it lacks would read no
    CRM side at all, and every member of the ESP list would look new to the CRM."""
    import sqlalchemy as sa

    if not list_links:
        return
    table = _reflect(engine, "lists", crm.lists)
    column = table.c[crm.lists.columns["list_id"]]
    with engine.connect() as connection:
        values: list[Any] = list(connection.execute(sa.select(column).distinct()).scalars())
    known = {str(value) for value in values if value is not None}
    for index, link in enumerate(list_links):
        if link.crm_list_id not in known:
            shown = sorted(known)
            holds = ", ".join(shown[:20]) + (f" and {len(shown) - 20} more" if len(shown) > 20 else "") or "no list"
            raise ConfigError(
                f"list_links[{index}].crm_list_id: the CRM has no list {link.crm_list_id!r} (table "
                f"{crm.lists.table!r}, column {column.name!r} holds: {holds}). Fix the list id in mailbridge.yaml."
            )


def _custom_json(columns: Mapping[str, list[Any]], count: int) -> list[str]:
    """The mapped custom fields of `count` rows (a list of values per field, in the mapping's
    order) as one JSON object per row."""
    if not columns:
        return ["{}"] * count
    rows = zip(*columns.values(), strict=True)
    return [json.dumps({name: _json_value(value) for name, value in zip(columns, row, strict=True)}) for row in rows]


def _mapped_column(table: sa.Table, mapping: FieldMapping, dialect: str) -> Any:
    if mapping.crm_column not in table.c:
        raise ConfigError(
            f"field_mappings[{mapping.name}].crm_column: table {table.name!r} has no column {mapping.crm_column!r} "
            f"(it has: {', '.join(table.c.keys())}). Fix the mapping in mailbridge.yaml."
        )
    # read as the driver returns it and checked per value in `_mapped_value`: the dialect's own
    # conversion (SQLite's numbers and dates) would fail the whole read on one bad value
    return _raw_column(table.c[mapping.crm_column], dialect).label(mapping.name)


def _shared_ids(connection: sa.Connection, column: sa.Column[Any]) -> set[str]:
    """The ids a CRM table without a unique key holds in more than one row."""
    import sqlalchemy as sa

    query = sa.select(column).where(column.is_not(None)).group_by(column).having(sa.func.count() > 1)
    values: list[Any] = list(connection.execute(query).scalars())
    return {str(value) for value in values}


def _one_row_speaks(entity: str, rows: list[ReadRow], by_modified_at: bool) -> list[ReadRow]:
    """Several rows with one contact or list id: the newest (by modified_at, where mapped), then
    the first by its values speaks for the id; the others get a problem that keeps them out."""

    def order(row: ReadRow) -> tuple[bool, float, str]:
        modified = row.record.get("modified_at") if by_modified_at else None
        values = json.dumps(row.record, default=str, sort_keys=True)
        return (modified is None, -modified.timestamp() if modified is not None else 0.0, values)

    speaker, *others = sorted(rows, key=order)
    key = PRIMARY_KEYS[entity][0]
    rule = (
        "the newest by modified_at speaks for it (then the first by its values)"
        if by_modified_at
        else ("the first by its values speaks for it")
    )
    reason = f"{len(rows)} rows have {key} {speaker.record[key]!r}; {rule}, this one is kept out"
    for row in others:
        row.problems.append(Problem(key, reason, rejects_row=True))
    return [speaker, *others]


def _rejected_row(entity: str, row: ReadRow, problem: Problem, row_kept: bool, run_id: str) -> dict[str, Any]:
    value = row.raw.get(problem.field)
    return {
        "entity": entity,
        "row_number": row.number,
        "row_key": "/".join(str(row.raw.get(key)) for key in PRIMARY_KEYS[entity]),
        "field": problem.field,
        "value": None if value is None else str(value),
        "reason": problem.describe(row_kept),
        "row_kept": row_kept,
        "run_id": run_id,
    }


def _json_value(value: Any) -> Any:
    """Mapped field values as JSON: text, numbers and booleans as they are, the rest as text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _log_row(table: pa.Table, table_name: str, primary_key: tuple[str, ...]) -> Any:
    """Route rows to an append-only log table beside the entity's own (replaced) table."""
    hints = dlt.mark.make_hints(table_name=table_name, write_disposition="append", primary_key=list(primary_key))
    return dlt.mark.with_hints(table, hints, create_table_variant=True)


@dataclass(frozen=True)
class Problem:
    """A field of a CRM row that cannot be read as it is."""

    field: str
    reason: str
    rejects_row: bool  # the row means nothing without this value; else it is loaded as NULL

    def describe(self, row_kept: bool) -> str:
        if self.rejects_row:
            return self.reason
        return f"{self.reason}; loaded as NULL, the row is kept" if row_kept else f"{self.reason}; the row is kept out"


@dataclass
class ReadRow:
    """One CRM row as read: its place in the read, its raw and normalised values, its problems."""

    number: int
    raw: dict[str, Any]
    record: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)

    @property
    def is_kept_out(self) -> bool:
        return any(problem.rejects_row for problem in self.problems)


def _normalise(
    entity: str,
    record: dict[str, Any],
    statuses: dict[str, str],
    zone: ZoneInfo,
    mapped_types: Mapping[str, str],
) -> list[Problem]:
    """Bring one row to canonical types in place; return what could not be read.

    An unreadable value is set to NULL. The row itself is rejected only when it cannot mean
    anything without the value: a key that is missing or unreadable, a status word with no
    canonical status, or a blocklist entry that is neither an address nor a `*@domain` pattern.
    """
    problems: list[Problem] = []
    keys = PRIMARY_KEYS[entity]
    for name, value in list(record.items()):
        dtype = FIELDS[entity].get(name)
        if name in keys and value is None:
            problems.append(Problem(name, f"the row has no {name}; it is kept out", rejects_row=True))
        elif dtype == TS:
            try:
                record[name] = _as_utc(value, zone)
            except ValueError as error:
                record[name] = None
                reason = str(error)
                if name in keys:
                    reason = f"{error}; {name} is part of the row's key, the row is kept out"
                problems.append(Problem(name, reason, rejects_row=name in keys))
        elif name in mapped_types:
            try:
                record[name] = _mapped_value(value, mapped_types[name])
            except ValueError as error:
                record[name] = None
                problems.append(Problem(name, f"{error} (mapped as {mapped_types[name]})", rejects_row=False))
        elif dtype is not None and value is not None and not isinstance(value, str):
            record[name] = str(value)
    if entity == "assignments":
        value = record.get("status")
        record["crm_status_value"] = value
        if value not in statuses:
            reason = f"crm.status_values has no entry for {value!r}; map it to a canonical status"
            problems.append(Problem("status", reason, rejects_row=True))
        else:
            record["status"] = statuses[value]
    if entity == "blocklist" and record.get("email") is not None:
        invalid = blocklist_key(record["email"]).error
        if invalid is not None:
            reason = f"neither an address nor a *@domain pattern ({invalid}); it blocks nothing, the row is kept out"
            problems.append(Problem("email", reason, rejects_row=True))
    return problems


BOOLEAN_WORDS = {"true": True, "t": True, "yes": True, "1": True, "false": False, "f": False, "no": False, "0": False}


def _mapped_value(value: Any, mapped_type: str) -> Any:
    """A mapped custom field's value, checked against its configured type; raises ValueError.
    Values keep the form the CRM gave them (a number as text stays text): only what cannot be
    read as the type is refused."""
    if value is None or mapped_type == "text":
        return value
    if mapped_type == "datetime":
        parsed = _as_datetime(value)
        return value if isinstance(value, date) else parsed
    if mapped_type == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in BOOLEAN_WORDS:
            raise ValueError(f"not a boolean: {value!r}")
        return BOOLEAN_WORDS[word]
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite() or (mapped_type == "integer" and number != number.to_integral_value()):
        raise ValueError(f"not {'an integer' if mapped_type == 'integer' else 'a finite number'}: {value!r}")
    return value
