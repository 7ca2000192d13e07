"""dlt source for mailbridge's own settings the models need: list links, accounts, policy."""

from __future__ import annotations

from collections.abc import Iterator

import dlt
import pyarrow as pa
from dlt.sources import DltResource

from mailbridge.config import MailbridgeConfig


@dlt.source(name="mailbridge", max_table_nesting=0)
def settings_source(config: MailbridgeConfig) -> Iterator[DltResource]:
    """The configured list links, ESP accounts (no secrets) and policy, replaced each run."""
    links = [link.model_dump() for link in config.list_links]
    accounts = [
        {"esp_account": a.name, "esp_type": a.type, "base_url": a.base_url, "max_connections": a.max_connections}
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
    policy = config.policy.model_dump()
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
    yield dlt.resource([pa.Table.from_pylist([policy])], name="policy", write_disposition="replace")
