"""dlt source for a SQL CRM (SQLite, PostgreSQL, MariaDB, ...), driven by the configured mapping."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dlt
import pyarrow as pa
import sqlalchemy as sa
from dlt.sources import DltResource

from mailbridge.config import ConfigError, CrmConfig, FieldMapping, ListLink, TableMapping
from mailbridge.email_key import blocklist_keys, with_email_key

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
REJECTED_SCHEMA = pa.schema(
    [
        ("entity", pa.string()),
        ("row_key", pa.string()),
        ("field", pa.string()),
        ("value", pa.string()),
        ("reason", pa.string()),
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


def _raw_column(column: sa.Column[Any], dtype: pa.DataType) -> Any:
    """Timestamps are read as the driver returns them and parsed per value in `_as_utc`: the
    dialect's own conversion (SQLite's) would fail the whole read on one unreadable value."""
    return sa.type_coerce(column, sa.types.NullType()) if dtype == TS else column


def _as_utc(value: Any, zone: ZoneInfo) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not a date-time: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"not a date-time: {value!r}")
    aware: datetime = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    try:
        return aware.astimezone(UTC)
    except OverflowError:  # a placeholder such as 0001-01-01 in a zone east of UTC
        raise ValueError(f"not a date-time in range: {value!r}") from None


@dlt.source(name="crm", max_table_nesting=0)
def crm_source(
    url: str,
    crm: CrmConfig,
    run_id: str = "manual",
    field_mappings: Sequence[FieldMapping] = (),
    chunk_size: int = 50_000,
    list_links: Sequence[ListLink] = (),
) -> Iterator[DltResource]:
    """The CRM's contacts, lists, assignments, blocklist and address history, in canonical names.

    Each run reads the tables whole and replaces the raw copies; rows the CRM holds twice for
    one key are all loaded (int_crm__memberships decides between assignment rows). What cannot
    be read goes to `rejected_rows`, one row per field with the raw value and the reason: an
    unreadable optional value (a timestamp that is not one) is loaded as NULL and the row kept,
    so an opt-out on it still counts; a row without its key, with an unreadable key or with a
    status word `crm.status_values` does not map stays out of the load.

    Before the first row is read, every CRM list the `list_links` name must exist in the CRM;
    a link to a list it lacks stops the extraction with the config key to fix.
    """
    zone = ZoneInfo(crm.timezone)
    statuses = crm.status_values
    links_checked = False

    def read(entity: str) -> Iterator[pa.Table]:
        mapping: TableMapping = getattr(crm, entity)
        fields = {field: dtype for field, dtype in FIELDS[entity].items() if field in mapping.columns}
        if entity == "assignments":
            fields["crm_status_value"] = pa.string()
        schema = pa.schema(list(fields.items()))
        started_at = datetime.now(UTC)
        rows_read = rows_rejected = values_rejected = 0
        rejected: list[dict[str, Any]] = []
        engine = sa.create_engine(url)
        try:
            nonlocal links_checked
            if not links_checked:
                _check_linked_lists(engine, crm, list_links)
                links_checked = True
            table = _reflect(engine, entity, mapping)
            columns = [
                _raw_column(table.c[column], FIELDS[entity][field]).label(field)
                for field, column in mapping.columns.items()
                if field in FIELDS[entity]
            ]
            if entity == "contacts":
                columns += [_mapped_column(table, m) for m in field_mappings]
            order = [table.c[mapping.columns[key]] for key in PRIMARY_KEYS[entity] if key in mapping.columns]
            query = sa.select(*columns).order_by(*order)
            with engine.connect() as connection:
                result = connection.execution_options(stream_results=True, yield_per=chunk_size).execute(query)
                # an empty CRM table still yields one empty chunk, so the raw table exists
                chunks = itertools.chain(result.partitions(chunk_size), [[]])
                for chunk in chunks:
                    if not chunk and rows_read:
                        break
                    data: dict[str, list[Any]] = {field: [] for field in fields}
                    custom: list[str] = []
                    for row in chunk:
                        rows_read += 1
                        record = row._asdict()
                        raw = dict(record)
                        problems = _normalise(entity, record, statuses, zone)
                        row_kept = not any(problem.rejects_row for problem in problems)
                        row_key = "/".join(str(raw.get(key)) for key in PRIMARY_KEYS[entity])
                        # one log row per field, so two bad values of one row never share a key
                        rejected += [
                            {
                                "entity": entity,
                                "row_key": row_key,
                                "field": problem.field,
                                "value": None if raw.get(problem.field) is None else str(raw.get(problem.field)),
                                "reason": problem.describe(row_kept),
                                "run_id": run_id,
                            }
                            for problem in problems
                        ]
                        if not row_kept:
                            rows_rejected += 1
                            continue
                        values_rejected += len(problems)
                        for field in fields:
                            data[field].append(record.get(field))
                        if entity == "contacts":
                            custom.append(json.dumps({m.name: _json_value(record.get(m.name)) for m in field_mappings}))
                    arrow = pa.Table.from_pydict(data, schema=schema)
                    if entity == "blocklist":
                        keys, domains, errors = blocklist_keys(data["email"])
                        arrow = arrow.append_column("email_key", keys).append_column("blocked_domain", domains)
                        arrow = arrow.append_column("email_error", errors)
                    elif entity in EMAIL_COLUMNS:
                        arrow = with_email_key(arrow, EMAIL_COLUMNS[entity])
                    if entity == "contacts":
                        arrow = arrow.append_column("custom_fields", pa.array(custom, type=pa.string()))
                        arrow = arrow.append_column("row_hash", _row_hashes(arrow))
                    yield arrow
        finally:
            engine.dispose()
        # yielded even when empty, so the log table always exists
        yield _log_row(
            pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA),
            "rejected_rows",
            ("run_id", "entity", "row_key", "field"),
        )
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
        if entity == "contacts":
            # every version of a contact is kept (scd2): the address history email changes show in
            return dlt.resource(
                read(entity),
                name=entity,
                write_disposition={"disposition": "merge", "strategy": "scd2", "row_version_column_name": "row_hash"},
            )
        return dlt.resource(read(entity), name=entity, primary_key=PRIMARY_KEYS[entity], write_disposition="replace")

    for entity in ("contacts", "lists", "assignments", "blocklist", "email_history"):
        if getattr(crm, entity) is not None:
            yield resource(entity)


def _check_linked_lists(engine: sa.Engine, crm: CrmConfig, list_links: Sequence[ListLink]) -> None:
    """Every linked CRM list is in the CRM's lists table: a link to a list it lacks would read no
    CRM side at all, and every member of the ESP list would look new to the CRM."""
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


def _row_hashes(table: pa.Table) -> pa.Array:
    """A version hash per contact row: a new one whenever any of its values changes."""
    columns = [table.column(name).to_pylist() for name in table.column_names]
    hashes = [
        hashlib.blake2b(json.dumps(row, default=str).encode("utf-8"), digest_size=16).hexdigest()
        for row in zip(*columns, strict=True)
    ]
    return pa.array(hashes, type=pa.string())


def _mapped_column(table: sa.Table, mapping: FieldMapping) -> Any:
    if mapping.crm_column not in table.c:
        raise ConfigError(
            f"field_mappings[{mapping.name}].crm_column: table {table.name!r} has no column {mapping.crm_column!r} "
            f"(it has: {', '.join(table.c.keys())}). Fix the mapping in mailbridge.yaml."
        )
    return table.c[mapping.crm_column].label(mapping.name)


def _json_value(value: Any) -> Any:
    """Mapped field values as JSON: text, numbers and booleans as they are, the rest as text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _log_row(table: pa.Table, table_name: str, primary_key: tuple[str, ...]) -> Any:
    """Route rows to an append-only log table beside the entity's own (replaced) table."""
    hints = dlt.mark.make_hints(table_name=table_name, write_disposition="append", primary_key=primary_key)
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


def _normalise(entity: str, record: dict[str, Any], statuses: dict[str, str], zone: ZoneInfo) -> list[Problem]:
    """Bring one row to canonical types in place; return what could not be read.

    An unreadable value is set to NULL. The row itself is rejected only when it cannot mean
    anything without the value: a key that is missing or unreadable, or a status word with no
    canonical status.
    """
    problems: list[Problem] = []
    keys = PRIMARY_KEYS[entity]
    for field, value in list(record.items()):
        dtype = FIELDS[entity].get(field)
        if field in keys and value is None:
            problems.append(Problem(field, f"the row has no {field}; it is kept out", rejects_row=True))
        elif dtype == TS:
            try:
                record[field] = _as_utc(value, zone)
            except ValueError as error:
                record[field] = None
                reason = (
                    f"{error}; {field} is part of the row's key, the row is kept out" if field in keys else str(error)
                )
                problems.append(Problem(field, reason, rejects_row=field in keys))
        elif dtype is not None and value is not None and not isinstance(value, str):
            record[field] = str(value)
    if entity == "assignments":
        value = record.get("status")
        record["crm_status_value"] = value
        if value not in statuses:
            reason = f"crm.status_values has no entry for {value!r}; map it to a canonical status"
            problems.append(Problem("status", reason, rejects_row=True))
        else:
            record["status"] = statuses[value]
    return problems
