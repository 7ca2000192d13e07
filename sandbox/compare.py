"""Does an incremental sync end where a full sync would? The marts two warehouses hold, compared
row by row and column by column.

Compared: the reconciliation and the push-back queue, every column except the time each build
stamps (`reconciled_at`, `queued_at`); the email events, each recipient's sum of them and the
campaign marts, every column. Not compared: the row-accounting marts and the event
log, which describe what each sync read (a full sync reads every member, an incremental one
the changed ones)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

COMPARED = {
    "marts.fct_list_reconciliation": ("reconciled_at",),
    "marts.fct_pushback_queue": ("queued_at",),
    # the email events and what is built on them, incremental by campaign
    "intermediate.int_esp__email_events": (),
    "intermediate.int_esp__campaign_recipient_activity": (),
    "marts.fct_campaign_recipients": (),
    "marts.fct_campaign_performance": (),
}


@dataclass(frozen=True)
class Difference:
    """A row one warehouse's mart holds and the other's does not."""

    table: str
    only_in: str  # "incremental" or "full"
    row: dict[str, Any]

    def line(self) -> str:
        shown = {key: value for key, value in self.row.items() if value is not None}
        return f"{self.table}, only {self.only_in}: {shown}"


def _rows(warehouse: Path, table: str, ignored: tuple[str, ...]) -> tuple[list[str], list[tuple[Any, ...]]]:
    with duckdb.connect(str(warehouse), read_only=True) as db:
        columns = [row[0] for row in db.execute(f"describe {table}").fetchall() if row[0] not in ignored]
        listed = ", ".join(f'"{column}"' for column in columns)
        return columns, db.execute(f"select {listed} from {table} order by all").fetchall()


def mart_differences(incremental: Path, full: Path) -> list[Difference]:
    """Every row of a compared mart that only one of the two warehouses holds."""
    found = []
    for table, ignored in COMPARED.items():
        columns, incremental_rows = _rows(incremental, table, ignored)
        full_columns, full_rows = _rows(full, table, ignored)
        if columns != full_columns:
            raise ValueError(f"{table} has other columns in the two warehouses: {columns} against {full_columns}")
        held = {"incremental": Counter(incremental_rows), "full": Counter(full_rows)}
        for side, other in (("incremental", "full"), ("full", "incremental")):
            # a multiset difference: a row held twice on one side and once on the other counts
            for row, times in (held[side] - held[other]).items():
                found += [Difference(table, side, dict(zip(columns, row, strict=True)))] * times
    return found
