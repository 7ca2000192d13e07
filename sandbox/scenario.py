"""Scenarios: one description of both worlds, the CRM's and the ESPs', with expected results.

A scenario is either one YAML file with every row inline (hand-written fixtures), or a
folder holding `scenario.yaml` plus one Parquet file per table (generated, large). Both
load into the same `Scenario`. The format is documented in sandbox/SCENARIOS.md.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import yaml

UTC_TS = pl.Datetime("us", "UTC")

TABLE_SCHEMAS: dict[str, dict[str, Any]] = {
    "crm_contacts": {
        "contact_id": pl.Int64,
        "email": pl.Utf8,
        "first_name": pl.Utf8,
        "last_name": pl.Utf8,
        "salutation": pl.Utf8,
        "modified_at": UTC_TS,
    },
    "crm_email_history": {
        "contact_id": pl.Int64,
        "email": pl.Utf8,
        "valid_from": UTC_TS,
        "valid_to": UTC_TS,
    },
    "crm_lists": {"list_id": pl.Utf8, "name": pl.Utf8},
    "crm_assignments": {
        "contact_id": pl.Int64,
        "list_id": pl.Utf8,
        "status": pl.Utf8,
        "status_changed_at": UTC_TS,
        "status_set_by": pl.Utf8,
        "task": pl.Utf8,
    },
    "crm_blocklist": {"email": pl.Utf8, "blocked_at": UTC_TS, "reason": pl.Utf8},
    "esp_members": {
        "account": pl.Utf8,
        "list_id": pl.Utf8,
        "email": pl.Utf8,
        "status": pl.Utf8,
        "last_changed": UTC_TS,
        "first_name": pl.Utf8,
        "last_name": pl.Utf8,
        "salutation": pl.Utf8,
        "timestamp_signup": UTC_TS,
        "timestamp_opt": UTC_TS,
        "ip_opt": pl.Utf8,
        "unsubscribe_reason": pl.Utf8,
    },
    "esp_campaigns": {
        "account": pl.Utf8,
        "campaign_id": pl.Utf8,
        "list_id": pl.Utf8,
        "title": pl.Utf8,
        "subject_line": pl.Utf8,
        "status": pl.Utf8,
        "send_time": UTC_TS,
    },
    "esp_recipients": {
        "account": pl.Utf8,
        "campaign_id": pl.Utf8,
        "email": pl.Utf8,
        "status": pl.Utf8,
        "unsubscribed_at": UTC_TS,
        "complained_at": UTC_TS,  # an abuse report (a spam complaint) about the campaign
    },
    "expected_results": {
        "link_id": pl.Utf8,
        "email": pl.Utf8,
        "contact_id": pl.Int64,
        "case": pl.Utf8,
        "result": pl.Utf8,
    },
    "esp_activity": {
        "account": pl.Utf8,
        "campaign_id": pl.Utf8,
        "email": pl.Utf8,
        "action": pl.Utf8,
        "timestamp": UTC_TS,
        "url": pl.Utf8,
        "bounce_type": pl.Utf8,
    },
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "crm_contacts": ("contact_id", "email"),
    "crm_email_history": ("contact_id", "email", "valid_to"),
    "crm_lists": ("list_id",),
    "crm_assignments": ("contact_id", "list_id", "status", "status_changed_at"),
    "crm_blocklist": ("email",),
    "esp_members": ("account", "list_id", "email", "status", "last_changed"),
    "esp_campaigns": ("account", "campaign_id", "list_id"),
    "esp_recipients": ("account", "campaign_id", "email"),
    "esp_activity": ("account", "campaign_id", "email", "action", "timestamp"),
    "expected_results": ("link_id", "result"),
}


class ScenarioError(ValueError):
    """The scenario file is not valid; the message names the file and the entry."""


@dataclass(frozen=True)
class EspListSpec:
    id: str
    name: str


@dataclass(frozen=True)
class EspAccountSpec:
    name: str
    type: str
    api_key: str
    lists: tuple[EspListSpec, ...]


@dataclass(frozen=True)
class LinkSpec:
    id: str
    crm_list_id: str
    esp_account: str
    esp_list_id: str


@dataclass
class Scenario:
    name: str
    reference_time: datetime
    accounts: list[EspAccountSpec]
    links: list[LinkSpec]
    tables: dict[str, pl.DataFrame]
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    description: str = ""

    def table(self, name: str) -> pl.DataFrame:
        return self.tables[name]

    def account(self, name: str) -> EspAccountSpec:
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)

    def save(self, folder: Path) -> Path:
        """Write the scenario as a folder: scenario.yaml and one Parquet file per table."""
        folder.mkdir(parents=True, exist_ok=True)
        meta = self._meta()
        meta["tables"] = {name: f"{name}.parquet" for name in self.tables}
        for name, frame in self.tables.items():
            frame.write_parquet(folder / f"{name}.parquet")
        (folder / "scenario.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True), "utf-8")
        return folder

    def _meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "reference_time": self.reference_time.isoformat(),
            "esp": {
                "accounts": [
                    {
                        "name": account.name,
                        "type": account.type,
                        "api_key": account.api_key,
                        "lists": [{"id": item.id, "name": item.name} for item in account.lists],
                    }
                    for account in self.accounts
                ]
            },
            "links": [link.__dict__ for link in self.links],
            "expected": self.expected,
        }


def _frame(name: str, rows: list[dict[str, Any]], source: str) -> pl.DataFrame:
    schema = TABLE_SCHEMAS[name]
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ScenarioError(f"{source}: {name}[{index}] must be a mapping")
        unknown = set(row) - set(schema)
        if unknown:
            raise ScenarioError(f"{source}: {name}[{index}] has unknown keys {sorted(unknown)}; known: {list(schema)}")
        missing = [column for column in REQUIRED_COLUMNS[name] if row.get(column) is None]
        if missing and name != "crm_email_history":
            raise ScenarioError(f"{source}: {name}[{index}] lacks {', '.join(missing)}")
    normalised = [{column: _cell(row.get(column), schema[column]) for column in schema} for row in rows]
    return pl.DataFrame(normalised, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _cell(value: Any, dtype: Any) -> Any:
    if value is None:
        return None
    if dtype == UTC_TS:
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value
    if dtype == pl.Utf8:
        return str(value)
    return value


def _inline_tables(raw: dict[str, Any], source: str) -> dict[str, pl.DataFrame]:
    crm = raw.get("crm") or {}
    esp = raw.get("esp") or {}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_SCHEMAS}
    rows["crm_contacts"] = list(crm.get("contacts") or [])
    rows["crm_email_history"] = list(crm.get("email_history") or [])
    rows["crm_lists"] = list(crm.get("lists") or [])
    rows["crm_assignments"] = list(crm.get("assignments") or [])
    rows["crm_blocklist"] = list(crm.get("blocklist") or [])
    for account in esp.get("accounts") or []:
        for esp_list in account.get("lists") or []:
            for member in esp_list.get("members") or []:
                rows["esp_members"].append({"account": account["name"], "list_id": esp_list["id"], **member})
            for campaign in esp_list.get("campaigns") or []:
                campaign = dict(campaign)
                recipients = campaign.pop("recipients", []) or []
                activity = campaign.pop("activity", []) or []
                campaign_id = campaign.pop("id")
                rows["esp_campaigns"].append(
                    {"account": account["name"], "campaign_id": campaign_id, "list_id": esp_list["id"], **campaign}
                )
                for recipient in recipients:
                    rows["esp_recipients"].append({"account": account["name"], "campaign_id": campaign_id, **recipient})
                for item in activity:
                    rows["esp_activity"].append({"account": account["name"], "campaign_id": campaign_id, **item})
    return {name: _frame(name, table_rows, source) for name, table_rows in rows.items()}


def load_scenario(path: str | Path, only: Collection[str] | None = None) -> Scenario:
    """Read a scenario YAML file, or a folder with scenario.yaml and Parquet tables; with `only`,
    a folder's other tables are left empty (a million-contact world's CRM side is large)."""
    path = Path(path)
    file = path / "scenario.yaml" if path.is_dir() else path
    if not file.is_file():
        raise ScenarioError(f"{file}: no such scenario file")
    try:
        raw = yaml.safe_load(file.read_text("utf-8"))
    except yaml.YAMLError as error:
        raise ScenarioError(f"{file}: not valid YAML: {error}") from None
    if not isinstance(raw, dict) or "name" not in raw:
        raise ScenarioError(f"{file}: a scenario is a mapping with at least `name`")
    if isinstance(raw.get("tables"), dict):
        tables = {}
        for name, schema in TABLE_SCHEMAS.items():
            table_file = raw["tables"].get(name)
            wanted = table_file and (only is None or name in only)
            tables[name] = pl.read_parquet(file.parent / table_file) if wanted else pl.DataFrame(schema=schema)
    else:
        tables = _inline_tables(raw, str(file))
    try:
        accounts = [
            EspAccountSpec(
                name=account["name"],
                type=account.get("type", "mailchimp"),
                api_key=account["api_key"],
                lists=tuple(
                    EspListSpec(str(item["id"]), item.get("name", str(item["id"]))) for item in account["lists"]
                ),
            )
            for account in (raw.get("esp") or {}).get("accounts") or []
        ]
        links = [
            LinkSpec(str(link["id"]), str(link["crm_list_id"]), link["esp_account"], str(link["esp_list_id"]))
            for link in raw.get("links") or []
        ]
    except KeyError as missing:
        raise ScenarioError(f"{file}: an ESP account, list or link lacks {missing}") from None
    reference = raw.get("reference_time") or datetime.now(UTC)
    if isinstance(reference, str):
        reference = datetime.fromisoformat(reference.replace("Z", "+00:00"))
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return Scenario(
        name=raw["name"],
        description=raw.get("description", ""),
        reference_time=reference,
        accounts=accounts,
        links=links,
        tables=tables,
        expected={str(k): dict(v) for k, v in (raw.get("expected") or {}).items()},
    )


def with_crm_subscribers(scenario: Scenario, count: int, *, list_id: str, first_id: int, prefix: str) -> Scenario:
    """The scenario plus `count` CRM contacts subscribed to one CRM list and unknown to the
    ESPs (`<prefix><id>@beispiel.de`): bulk work for the push-back."""
    from dataclasses import replace

    ids = list(range(first_id, first_id + count))
    contacts = pl.DataFrame({"contact_id": ids, "email": [f"{prefix}{i}@beispiel.de" for i in ids]})
    assignments = pl.DataFrame(
        {
            "contact_id": ids,
            "list_id": list_id,
            "status": "subscribed",
            "status_changed_at": scenario.reference_time.replace(year=scenario.reference_time.year - 1),
        }
    )
    tables = dict(scenario.tables)
    tables["crm_contacts"] = pl.concat([tables["crm_contacts"], contacts], how="diagonal_relaxed")
    tables["crm_assignments"] = pl.concat([tables["crm_assignments"], assignments], how="diagonal_relaxed")
    return replace(scenario, tables=tables)
