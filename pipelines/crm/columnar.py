"""The CRM read's column-wise lane: a chunk of rows as Arrow columns, without a dict per row.

The CRM source reads every table whole, so at a million contacts a Python function per row
costs most of the read. This lane takes a chunk of rows column by column and loads, as they
are, the rows in which nothing is wrong. Any row it cannot vouch for goes back to the row-by-row
reading (`pipelines.crm._normalise` and `value_problems`), which says what is wrong with it:
a row without its key, a status word the config does not map, a text with a control character
or over its length, a status time before 1971, a task word the config does not know, a
date-time that does not parse or does not exist in the CRM's zone, a mapped value not of its
type, a contact or list id that several rows share.

So the lane never decides anything the row-by-row reading would decide otherwise: it loads a
row only when every value converts the way that reading converts it (the same Python
conversions, applied to a column at a time), and the test suite reads one CRM both ways and
compares every loaded row and every rejected row.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.crm.values import CONTROL_CHARACTERS, EARLIEST_STATUS_TIME, _as_datetime, _as_utc

TS = pa.timestamp("us", tz="UTC")
NAIVE = pa.timestamp("us")
_BAD = object()  # a value the lane cannot convert: its row goes to the row-by-row reading
_NONE = type(None)


@dataclass(frozen=True)
class Lane:
    """What the lane made of one chunk: the loaded rows' columns and mapped values, and the
    places (0-based, in the chunk) of the rows the row-by-row reading must read."""

    columns: dict[str, pa.Array]
    mapped: dict[str, list[Any]]
    slow: list[int]


def read_columns(
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    types: Mapping[str, pa.DataType],
    *,
    keys: Collection[str],
    zone: ZoneInfo,
    text_limits: Mapping[str, int],
    mapped_types: Mapping[str, str],
    mapped_value: Callable[[Any, str], Any],
    statuses: Mapping[str, str] | None = None,
    task_values: Collection[str] | None = None,
    shared_ids: Collection[str] = (),
) -> Lane:
    """The chunk `rows` (tuples in the order of `names`) read column-wise.

    `types` are the canonical fields and their types; `keys` the row's key fields; `text_limits`
    the text fields checked for control characters and length, with their limits;
    `mapped_types` the mapped custom fields, converted by `mapped_value`. `statuses` and
    `task_values` are given for assignments.
    """
    count = len(rows)
    transposed = list(zip(*rows, strict=True)) if count else [() for _ in names]
    raw: dict[str, list[Any]] = {name: list(column) for name, column in zip(names, transposed, strict=True)}
    bad: list[bool] = [False] * count
    columns: dict[str, pa.Array] = {}
    for name, dtype in types.items():
        if name not in raw:
            continue
        if dtype == TS:
            columns[name], wrong = _timestamp_column(raw[name], zone)
            for place in wrong:
                bad[place] = True
        else:
            columns[name] = pa.array(_strings(raw[name]), type=dtype)
        if name in keys:
            _mark_where(bad, pc.is_null(columns[name]))
    mapped: dict[str, list[Any]] = {}
    for name, kind in mapped_types.items():
        values = [_converted(mapped_value, value, kind) for value in raw[name]]
        _mark(bad, values)
        mapped[name] = values
    for name, limit in text_limits.items():
        if name in columns:
            text = columns[name]
        elif name in mapped:
            text = pa.array([value if isinstance(value, str) else None for value in mapped[name]], type=pa.string())
        else:
            continue
        wrong = pc.or_kleene(
            pc.match_substring_regex(text, CONTROL_CHARACTERS), pc.greater(pc.utf8_length(text), limit)
        )
        _mark_where(bad, wrong)
    if statuses is not None:
        words = columns["status"]
        known = [word for word in statuses if isinstance(word, str)]
        places = pc.index_in(words, value_set=pa.array(known, type=pa.string()))
        _mark_where(bad, pc.is_null(places))
        columns["crm_status_value"] = words
        columns["status"] = pc.take(pa.array([statuses[word] for word in known], type=pa.string()), places)
        if "status_changed_at" in columns:
            earliest = pa.scalar(EARLIEST_STATUS_TIME, type=TS)
            _mark_where(bad, pc.less(columns["status_changed_at"], earliest))
    if task_values is not None and "task" in columns:
        tasks = [None if word is None or not word.strip() else word for word in columns["task"].to_pylist()]
        for place, word in enumerate(tasks):
            if word is not None and word not in task_values:
                bad[place] = True
        columns["task"] = pa.array(tasks, type=pa.string())
    if shared_ids:
        first_key = next(key for key in keys if key in columns)
        _mark_where(bad, pc.is_in(columns[first_key], value_set=pa.array(sorted(shared_ids), type=pa.string())))
    slow = [place for place, is_bad in enumerate(bad) if is_bad]
    if slow:
        keep = pa.array([not is_bad for is_bad in bad])
        columns = {name: column.filter(keep) for name, column in columns.items()}
        mapped = {
            name: [value for value, is_bad in zip(values, bad, strict=True) if not is_bad]
            for name, values in mapped.items()
        }
    return Lane(columns, mapped, slow)


def _mark(bad: list[bool], values: Sequence[Any]) -> None:
    for place, value in enumerate(values):
        if value is _BAD:
            bad[place] = True


def _mark_where(bad: list[bool], mask: pa.Array) -> None:
    for place, is_set in enumerate(mask.to_pylist()):
        if is_set:
            bad[place] = True


def _strings(values: list[Any]) -> list[Any]:
    """Text as the row-by-row reading makes it: a value that is not text becomes its `str()`."""
    if set(map(type, values)) <= {str, _NONE}:
        return values
    return [value if value is None or isinstance(value, str) else str(value) for value in values]


def _timestamp_column(values: list[Any], zone: ZoneInfo) -> tuple[pa.Array, list[int]]:
    """A date-time column in UTC as `pipelines.crm._as_utc` makes it (NULL where it would fail),
    and the places where it would fail. In a CRM whose zone is UTC a naive date-time is already
    UTC: Arrow takes the column as it is, with no Python call per value."""
    if zone.key not in ("UTC", "Etc/UTC"):
        converted = _timestamps(values, zone)
        wrong = [place for place, value in enumerate(converted) if value is _BAD]
        column = pa.array([None if value is _BAD else value for value in converted] if wrong else converted, type=TS)
        return column, wrong
    naive = [
        value if value is None or value is _BAD or value.tzinfo is None else _naive_utc(value)
        for value in _parsed_all(values)
    ]
    wrong = [place for place, value in enumerate(naive) if value is _BAD] if _BAD in naive else []
    column = pa.array([None if value is _BAD else value for value in naive] if wrong else naive, type=NAIVE)
    return column.cast(TS), wrong


def _naive_utc(value: datetime) -> Any:
    """An aware date-time as the UTC wall time it is, `_BAD` where that is out of range."""
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return _BAD


def _parsed_all(values: list[Any]) -> list[Any]:
    """Each value as `pipelines.crm._as_datetime` reads it, `_BAD` where it would fail."""
    kinds = set(map(type, values))
    if kinds <= {str, _NONE}:
        try:
            return [None if value is None else datetime.fromisoformat(value) for value in values]
        except ValueError:
            return [_parsed(value) for value in values]
    if kinds <= {datetime, _NONE}:
        return values
    return [_parsed(value) for value in values]


def _timestamps(values: list[Any], zone: ZoneInfo) -> list[Any]:
    """Date-times in UTC as `pipelines.crm._as_utc` makes them, `_BAD` where it would fail."""
    parsed = _parsed_all(values)
    try:
        return [
            value
            if value is None or value is _BAD
            else (value if value.tzinfo is not None else value.replace(tzinfo=zone)).astimezone(UTC)
            for value in parsed
        ]
    except OverflowError:  # a placeholder such as 0001-01-01 in a zone east of UTC
        return [_in_utc(value, zone) for value in parsed]


def _parsed(value: Any) -> Any:
    try:
        return _as_datetime(value)
    except ValueError:
        return _BAD


def _in_utc(value: Any, zone: ZoneInfo) -> Any:
    if value is _BAD:
        return value
    try:
        return _as_utc(value, zone)
    except ValueError:
        return _BAD


def _converted(mapped_value: Callable[[Any, str], Any], value: Any, kind: str) -> Any:
    try:
        return mapped_value(value, kind)
    except ValueError:
        return _BAD


def row_hashes(table: pa.Table) -> pa.Array:
    """A version hash per row (MD5, in DuckDB): a new one whenever any of its values changes.

    Each value enters as its length and its text, a date-time as microseconds since the epoch,
    NULL as a mark of its own, so no two different rows run together into one string."""
    import duckdb

    parts = []
    for field in table.schema:
        column = '"' + field.name.replace('"', '""') + '"'
        text = f"epoch_us({column})::varchar" if pa.types.is_timestamp(field.type) else f"{column}::varchar"
        parts.append(f"coalesce(length({text})::varchar || ':' || {text}, '~')")
    with duckdb.connect() as connection:
        connection.register("rows_to_hash", table)
        query = f"select md5(concat_ws('|', {', '.join(parts)})) as row_hash from rows_to_hash"
        hashes = connection.sql(query).to_arrow_table().column("row_hash")
    return hashes.combine_chunks() if table.num_rows else pa.array([], type=pa.string())
