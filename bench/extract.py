"""One extraction of the Mailchimp accounts in a bench world, in a process of its own so its
CPU seconds and peak memory are its own: mailbridge's extraction, or a plain dlt `rest_api`
configuration of the same pull as dlt's documentation teaches it (offset paging, child
endpoints resolved from their parents, parquet loading into DuckDB).

    python -m bench.extract mailbridge|rest_api CONFIG WAREHOUSE [--incremental]

Prints one JSON line: the rows loaded per table.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# the page size both ask for: Mailchimp's largest
PAGE = 1000


def _offset_paginator() -> dict[str, Any]:
    return {
        "type": "offset",
        "limit": PAGE,
        "offset_param": "offset",
        "limit_param": "count",
        "total_path": "total_items",
    }


def rest_api_config(base_url: str, api_key: str) -> dict[str, Any]:
    """The plain `rest_api` configuration of Mailchimp's lists, members, campaigns, reports and
    each campaign's email activity, sent-to and unsubscribes."""

    def child(name: str, path: str, selector: str, parent: str, field: str, param: str) -> dict[str, Any]:
        return {
            "name": name,
            "endpoint": {
                "path": path,
                "data_selector": selector,
                "params": {param: {"type": "resolve", "resource": parent, "field": field}},
            },
        }

    return {
        "client": {
            "base_url": base_url.rstrip("/") + "/",
            "auth": {"type": "http_basic", "username": "anystring", "password": api_key},
            "paginator": _offset_paginator(),
        },
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [
            {"name": "lists", "endpoint": {"path": "lists", "data_selector": "lists"}},
            child("members", "lists/{list_id}/members", "members", "lists", "id", "list_id"),
            {"name": "campaigns", "endpoint": {"path": "campaigns", "data_selector": "campaigns"}},
            {
                "name": "reports",
                "endpoint": {
                    "path": "reports/{campaign_id}",
                    "data_selector": "$",
                    "paginator": "single_page",
                    "params": {"campaign_id": {"type": "resolve", "resource": "campaigns", "field": "id"}},
                },
            },
            child("email_activity", "reports/{campaign_id}/email-activity", "emails", "campaigns", "id", "campaign_id"),
            child("sent_to", "reports/{campaign_id}/sent-to", "sent_to", "campaigns", "id", "campaign_id"),
            child(
                "unsubscribes", "reports/{campaign_id}/unsubscribed", "unsubscribes", "campaigns", "id", "campaign_id"
            ),
            child(
                "abuse_reports",
                "reports/{campaign_id}/abuse-reports",
                "abuse_reports",
                "campaigns",
                "id",
                "campaign_id",
            ),
        ],
    }


def _rows(pipeline: Any) -> dict[str, int]:
    trace = pipeline.last_trace
    counts: dict[str, int] = {}
    if trace is not None and trace.last_normalize_info is not None:
        for table, rows in trace.last_normalize_info.row_counts.items():
            if not table.startswith("_dlt"):
                counts[table] = counts.get(table, 0) + rows
    return counts


def run_rest_api(config_file: Path, warehouse: Path) -> dict[str, int]:
    import dlt
    from dlt.sources.rest_api import rest_api_source

    from mailbridge.config import load_config

    config = load_config(config_file)
    counts: dict[str, int] = {}
    for account in config.accounts_of_type("mailchimp"):
        pipeline = dlt.pipeline(
            pipeline_name=f"bench_rest_api_{account.name}",
            destination=dlt.destinations.duckdb(str(warehouse)),
            dataset_name=f"rest_api_{account.name}",
            pipelines_dir=str(warehouse.parent / "dlt"),
        )
        base_url = account.base_url or "https://us1.api.mailchimp.com/3.0"
        source = rest_api_source(rest_api_config(base_url, os.environ[account.api_key_env]))  # type: ignore[arg-type]
        pipeline.run(source, loader_file_format="parquet")
        for table, rows in _rows(pipeline).items():
            counts[table] = counts.get(table, 0) + rows
    return counts


def run_mailbridge(config_file: Path, warehouse: Path, *, incremental: bool) -> dict[str, int]:
    from mailbridge.config import WAREHOUSE_ENV, load_config
    from pipelines.runner import extraction_named, run_extraction

    os.environ[WAREHOUSE_ENV] = str(warehouse)
    config = load_config(config_file)
    item = extraction_named(config, "mailchimp", full_refresh=not incremental, run_id="bench")
    run_extraction(item)
    return _rows(item.pipeline)


def main() -> None:
    kind, config_file, warehouse = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    if kind == "rest_api":
        counts = run_rest_api(config_file, warehouse)
    elif kind == "mailbridge":
        counts = run_mailbridge(config_file, warehouse, incremental="--incremental" in sys.argv)
    else:
        raise SystemExit(f"unknown extraction {kind!r}: mailbridge or rest_api")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
