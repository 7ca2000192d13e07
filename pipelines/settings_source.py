"""dlt source for mailbridge's own settings the models need: list links, accounts, policy."""

from __future__ import annotations

from collections.abc import Iterator

import dlt
import pyarrow as pa
from dlt.sources import DltResource

from mailbridge.config import STANDARD_FIELDS, MailbridgeConfig
from mailbridge.urls import url_without_userinfo


@dlt.source(name="mailbridge", max_table_nesting=0)
def settings_source(config: MailbridgeConfig) -> Iterator[DltResource]:
    """The configured list links, ESP accounts (no secrets: a URL's userinfo is never stored) and
    policy, replaced each run."""
    links = [link.model_dump() for link in config.list_links]
    accounts = [
        {
            "esp_account": a.name,
            "esp_type": a.type,
            "base_url": None if a.base_url is None else url_without_userinfo(a.base_url),
            "max_connections": a.max_connections,
        }
        for a in config.esp_accounts
    ]
    link_schema = pa.schema(
        [("id", pa.string()), ("crm_list_id", pa.string()), ("esp_account", pa.string()), ("esp_list_id", pa.string())]
    )
    account_schema = pa.schema(
        [
            ("esp_account", pa.string()),
            ("esp_type", pa.string()),
            ("base_url", pa.string()),
            ("max_connections", pa.int64()),
        ]
    )
    policy = {
        "transmit_new_members": config.policy.transmit_new_members,
        "doi_grace_period_days": config.policy.doi_grace_period_days,
        "email_change_is_consent": config.policy.email_change_is_consent,
    }
    policy_schema = pa.schema(
        [
            ("transmit_new_members", pa.bool_()),
            ("doi_grace_period_days", pa.int64()),
            ("email_change_is_consent", pa.bool_()),
        ]
    )
    # every compared field with its winner; standard fields come first, mapped ones after
    fields = [
        {"field_name": name, "is_standard": True, "esp_field": None, "field_type": "text"} for name in STANDARD_FIELDS
    ] + [
        {"field_name": m.name, "is_standard": False, "esp_field": m.esp_field, "field_type": m.type}
        for m in config.field_mappings
    ]
    for field in fields:
        field["winner"] = config.policy.winner(str(field["field_name"]))
    field_schema = pa.schema(
        [
            ("field_name", pa.string()),
            ("is_standard", pa.bool_()),
            ("esp_field", pa.string()),
            ("field_type", pa.string()),
            ("winner", pa.string()),
        ]
    )
    yield dlt.resource(
        [pa.Table.from_pylist(links, schema=link_schema)],
        name="list_links",
        primary_key="id",
        write_disposition="replace",
    )
    yield dlt.resource(
        [pa.Table.from_pylist(accounts, schema=account_schema)],
        name="esp_accounts",
        primary_key="esp_account",
        write_disposition="replace",
    )
    yield dlt.resource(
        [pa.Table.from_pylist([policy], schema=policy_schema)], name="policy", write_disposition="replace"
    )
    tasks = [{"crm_value": value, "action": action} for value, action in config.crm.task_values.items()]
    yield dlt.resource(
        [pa.Table.from_pylist(tasks, schema=pa.schema([("crm_value", pa.string()), ("action", pa.string())]))],
        name="crm_task_values",
        primary_key="crm_value",
        write_disposition="replace",
    )
    yield dlt.resource(
        [pa.Table.from_pylist(fields, schema=field_schema)],
        name="field_policies",
        primary_key="field_name",
        write_disposition="replace",
    )
