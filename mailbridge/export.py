"""CSV export of the CRM changes the queue holds, for CRMs mailbridge may not write to.

RFC 4180 (CRLF, quotes doubled where needed) and safe against formula injection: a cell that
a spreadsheet would run (starting with = + - @, tab, CR, LF or NUL, also after leading spaces)
is prefixed with an apostrophe.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")
COLUMNS = (
    "action_id",
    "action",
    "list_link_id",
    "crm_list_id",
    "crm_contact_id",
    "email_address",
    "resolved_status",
    "esp_status",
    "rule",
    "action_source",
)


def safe_cell(value: Any) -> str:
    """The cell as text no spreadsheet will evaluate."""
    text = "" if value is None else str(value)
    # some spreadsheets trim leading spaces before they look for a formula
    return "'" + text if text.lstrip(" ").startswith(FORMULA_STARTS) else text


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        for row in rows:
            writer.writerow([safe_cell(value) for value in row])
            count += 1
    return count


def export_crm_changes(warehouse: Path, out: Path) -> int:
    """Write the ready CRM actions of the push-back queue to `out`; returns the row count."""
    # the CRM half of a person's unsubscribe writes its own status, not the reconciliation's
    selected = [
        "coalesce(crm_target_status, resolved_status)" if column == "resolved_status" else column for column in COLUMNS
    ]
    with duckdb.connect(str(warehouse), read_only=True) as db:
        rows = db.execute(
            f"select {', '.join(selected)} from marts.fct_pushback_queue "
            "where target = 'crm' and queue_status = 'ready' order by list_link_id, action, email_address"
        ).fetchall()
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_csv(out, COLUMNS, rows)
