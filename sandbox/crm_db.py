"""Write a scenario's CRM side into a SQL database, shaped by the configured CRM mapping.

The same code fills the demo's SQLite file and the PostgreSQL and MariaDB test databases,
so the CRM source is always read through the mapping a user would configure.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl
import sqlalchemy as sa

from mailbridge.config import CrmConfig, TableMapping

CANONICAL_TYPES: dict[str, dict[str, sa.types.TypeEngine[Any]]] = {
    "contacts": {
        "contact_id": sa.Integer(),
        "email": sa.String(320),
        "first_name": sa.String(100),
        "last_name": sa.String(100),
        "salutation": sa.String(40),
        "modified_at": sa.DateTime(),
        "needs_review": sa.Boolean(),
        "email_bounced_at": sa.DateTime(),
    },
    "lists": {"list_id": sa.String(64), "name": sa.String(200)},
    "assignments": {
        "contact_id": sa.Integer(),
        "list_id": sa.String(64),
        "status": sa.String(40),
        "status_changed_at": sa.DateTime(),
        "status_set_by": sa.String(200),
        "task": sa.String(40),
        "needs_review": sa.Boolean(),
    },
    "blocklist": {"email": sa.String(320), "blocked_at": sa.DateTime(), "reason": sa.String(200)},
    "email_history": {
        "contact_id": sa.Integer(),
        "email": sa.String(320),
        "valid_from": sa.DateTime(),
        "valid_to": sa.DateTime(),
    },
    "mailing_reactions": {
        "contact_id": sa.Integer(),
        "mailing_id": sa.String(64),
        "mailing_name": sa.String(200),
        "sent_at": sa.DateTime(),
        "delivered": sa.Boolean(),
        "bounce": sa.String(20),
        "opened": sa.Boolean(),
        "clicked": sa.Boolean(),
        "opens": sa.Integer(),
        "clicks": sa.Integer(),
        "first_open_at": sa.DateTime(),
        "first_click_at": sa.DateTime(),
        "unsubscribed": sa.Boolean(),
        "updated_at": sa.DateTime(),
    },
    "consents": {
        "contact_id": sa.Integer(),
        "list_id": sa.String(64),
        "email": sa.String(320),
        "given_at": sa.DateTime(),
        "kind": sa.String(40),
        "source": sa.String(200),
        "note": sa.String(500),
    },
}
PRIMARY_KEYS = {
    "contacts": ("contact_id",),
    "lists": ("list_id",),
    "assignments": ("contact_id", "list_id"),
}
SCENARIO_TABLES = {
    "contacts": "crm_contacts",
    "lists": "crm_lists",
    "assignments": "crm_assignments",
    "blocklist": "crm_blocklist",
    "email_history": "crm_email_history",
}
INSERT_CHUNK = 20_000


def crm_tables(crm: CrmConfig, metadata: sa.MetaData) -> dict[str, sa.Table]:
    """SQLAlchemy tables for every mapped CRM entity, named as the mapping names them."""
    tables = {}
    for entity, types in CANONICAL_TYPES.items():
        mapping: TableMapping | None = getattr(crm, entity)
        if mapping is None:
            continue
        columns = [
            sa.Column(
                mapping.columns[field],
                column_type,
                primary_key=field in PRIMARY_KEYS.get(entity, ()),
                autoincrement=False,
            )
            for field, column_type in types.items()
            if field in mapping.columns
        ]
        tables[entity] = sa.Table(mapping.table, metadata, *columns)
    return tables


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _rows(frame: pl.DataFrame, mapping: TableMapping, statuses: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
    fields = [field for field in frame.columns if field in mapping.columns]
    for chunk in frame.select(fields).iter_slices(INSERT_CHUNK):
        rows = []
        for row in chunk.iter_rows(named=True):
            if "status" in row:
                row["status"] = statuses.get(row["status"], row["status"])
            rows.append({mapping.columns[field]: _naive_utc(value) for field, value in row.items()})
        yield rows


def write_crm(scenario_tables: dict[str, pl.DataFrame], url: str, crm: CrmConfig, *, replace: bool = True) -> None:
    """Create the mapped CRM tables (dropping old ones when `replace`) and insert the rows."""
    # the CRM stores its own status words: write the first CRM value for each canonical status
    statuses: dict[str, str] = {}
    for crm_value, canonical in crm.status_values.items():
        statuses.setdefault(canonical, crm_value)
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        tables = crm_tables(crm, metadata)
        if replace:
            metadata.drop_all(engine)
        metadata.create_all(engine)
        with engine.begin() as connection:
            for entity, table in tables.items():
                if entity not in SCENARIO_TABLES:
                    continue  # written by mailbridge only (consents, mailing reactions)
                frame = scenario_tables[SCENARIO_TABLES[entity]]
                mapping: TableMapping = getattr(crm, entity)
                for rows in _rows(frame, mapping, statuses):
                    if rows:
                        connection.execute(table.insert(), rows)
    finally:
        engine.dispose()
