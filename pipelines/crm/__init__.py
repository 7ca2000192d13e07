"""dlt source for a SQL CRM (SQLite, PostgreSQL, MariaDB, ...), driven by the configured mapping."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dlt
import pyarrow as pa
import sqlalchemy as sa
from dlt.sources import DltResource

from mailbridge.config import ConfigError, CrmConfig, FieldMapping, TableMapping
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
        ("rows_rejected", pa.int64()),
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


def _as_utc(value: Any, zone: ZoneInfo) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"not a date-time: {value!r}")
    aware: datetime = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    return aware.astimezone(UTC)


@dlt.source(name="crm", max_table_nesting=0)
def crm_source(
    url: str,
    crm: CrmConfig,
    run_id: str = "manual",
    field_mappings: Sequence[FieldMapping] = (),
    chunk_size: int = 50_000,
) -> Iterator[DltResource]:
    """The CRM's contacts, lists, assignments, blocklist and address history, in canonical names.

    Each run reads the tables whole and replaces the raw copies. Rows that cannot be read
    (an unknown status value, a timestamp that is not one) go to `rejected_rows` with the
    reason, and stay out of the other tables.
    """
    zone = ZoneInfo(crm.timezone)
    statuses = crm.status_values

    def read(entity: str) -> Iterator[pa.Table]:
        mapping: TableMapping = getattr(crm, entity)
        fields = {field: dtype for field, dtype in FIELDS[entity].items() if field in mapping.columns}
        if entity == "assignments":
            fields["crm_status_value"] = pa.string()
        schema = pa.schema(list(fields.items()))
        started_at = datetime.now(UTC)
        rows_read = 0
        rejected: list[dict[str, Any]] = []
        engine = sa.create_engine(url)
        try:
            table = _reflect(engine, entity, mapping)
            columns = [
                table.c[column].label(field) for field, column in mapping.columns.items() if field in FIELDS[entity]
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
                        problem = _normalise(entity, record, statuses, zone)
                        if problem is not None:
                            field, reason = problem
                            rejected.append(
                                {
                                    "entity": entity,
                                    "row_key": "/".join(str(record.get(key)) for key in PRIMARY_KEYS[entity]),
                                    "field": field,
                                    "value": None if record.get(field) is None else str(record.get(field)),
                                    "reason": reason,
                                    "run_id": run_id,
                                }
                            )
                            continue
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
            "rows_rejected": len(rejected),
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


def _normalise(entity: str, record: dict[str, Any], statuses: dict[str, str], zone: ZoneInfo) -> tuple[str, str] | None:
    """Bring one row to canonical types in place; return (field, reason) if it can't be."""
    for field, value in list(record.items()):
        dtype = FIELDS[entity].get(field)
        if dtype == TS:
            try:
                record[field] = _as_utc(value, zone)
            except ValueError as error:
                return field, str(error)
        elif dtype is not None and value is not None and not isinstance(value, str):
            record[field] = str(value)
    if entity == "assignments":
        value = record.get("status")
        record["crm_status_value"] = value
        if value not in statuses:
            return "status", f"crm.status_values has no entry for {value!r}; map it to a canonical status"
        record["status"] = statuses[value]
    return None
