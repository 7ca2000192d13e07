"""dlt source for the Mailchimp Marketing API v3: lists, members, campaigns and reports."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.sources import DltResource

from mailbridge.config import EspAccount, ExtractionSettings
from mailbridge.email_key import with_email_key
from pipelines.http import EspApiError, EspAuthError, EspHttpClient, RetryPolicy
from pipelines.mailchimp import settings
from pipelines.mailchimp.helpers import (
    TS,
    fields_param,
    format_timestamp,
    mailchimp_client,
    members_table,
    paged,
    parse_timestamp,
    rows_table,
)

log = logging.getLogger(__name__)

ACCOUNT_KEY = "esp_account"

EXTRACTION_SCHEMA = pa.schema(
    [
        ("extraction_id", pa.string()),
        ("run_id", pa.string()),
        ("esp_account", pa.string()),
        ("list_id", pa.string()),
        ("mode", pa.string()),
        ("since_last_changed", TS),
        ("started_at", TS),
        ("finished_at", TS),
        ("completed", pa.bool_()),
        ("members_fetched", pa.int64()),
        ("error", pa.string()),
    ]
)
LIST_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("id", pa.string()),
        ("name", pa.string()),
        ("date_created", TS),
        ("member_count", pa.int64()),
        ("unsubscribe_count", pa.int64()),
        ("cleaned_count", pa.int64()),
    ]
)
CAMPAIGN_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("id", pa.string()),
        ("list_id", pa.string()),
        ("type", pa.string()),
        ("status", pa.string()),
        ("subject_line", pa.string()),
        ("title", pa.string()),
        ("create_time", TS),
        ("send_time", TS),
        ("emails_sent", pa.int64()),
    ]
)
REPORT_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("campaign_id", pa.string()),
        ("list_id", pa.string()),
        ("send_time", TS),
        ("emails_sent", pa.int64()),
        ("unsubscribed", pa.int64()),
        ("hard_bounces", pa.int64()),
        ("soft_bounces", pa.int64()),
        ("syntax_errors", pa.int64()),
        ("opens_total", pa.int64()),
        ("unique_opens", pa.int64()),
        ("open_rate", pa.float64()),
        ("clicks_total", pa.int64()),
        ("unique_clicks", pa.int64()),
        ("unique_subscriber_clicks", pa.int64()),
        ("click_rate", pa.float64()),
    ]
)
ACTIVITY_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("campaign_id", pa.string()),
        ("list_id", pa.string()),
        ("email_id", pa.string()),
        ("email_address", pa.string()),
        ("action", pa.string()),
        ("timestamp", TS),
        ("ip", pa.string()),
        ("url", pa.string()),
        ("bounce_type", pa.string()),
    ]
)
SENT_TO_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("campaign_id", pa.string()),
        ("list_id", pa.string()),
        ("email_id", pa.string()),
        ("email_address", pa.string()),
        ("status", pa.string()),
        ("open_count", pa.int64()),
        ("last_open", TS),
    ]
)
UNSUBSCRIBED_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("campaign_id", pa.string()),
        ("list_id", pa.string()),
        ("email_id", pa.string()),
        ("email_address", pa.string()),
        ("timestamp", TS),
        ("reason", pa.string()),
    ]
)


ADDRESS_HINTS = dlt.mark.make_hints(
    table_name="member_addresses",
    write_disposition="merge",
    primary_key=(ACCOUNT_KEY, "list_id", "contact_id", "id"),
)


def member_addresses(members: pa.Table, seen_at: datetime) -> Any:
    """Every address each ESP contact has had in a list: where address changes at the ESP show."""
    addresses = members.select([ACCOUNT_KEY, "list_id", "contact_id", "id", "email_address", "email_key"])
    addresses = addresses.filter(pc.is_valid(addresses.column("contact_id")))
    seen = pa.array([seen_at] * addresses.num_rows, type=TS)
    return dlt.mark.with_hints(addresses.append_column("last_seen_at", seen), ADDRESS_HINTS, create_table_variant=True)


def _now() -> datetime:
    return datetime.now(UTC)


@dlt.source(name="mailchimp", max_table_nesting=0)
def mailchimp_source(
    accounts: Sequence[EspAccount],
    full_refresh: bool = False,
    run_id: str = "manual",
    extraction: ExtractionSettings | None = None,
) -> Sequence[DltResource]:
    """All configured Mailchimp accounts, one `esp_account` column telling them apart.

    `full_refresh` re-reads every member and replaces the members table; otherwise members
    are read with `since_last_changed` from a cursor per account and list, and merged.
    """
    limits = extraction or ExtractionSettings()
    retry = RetryPolicy(
        max_retries=limits.max_retries,
        backoff_seconds=limits.backoff_seconds,
        max_retry_after_seconds=limits.max_retry_after_seconds,
    )
    clients: dict[str, EspHttpClient] = {}

    def client_for(account: EspAccount) -> EspHttpClient:
        if account.name not in clients:
            clients[account.name] = mailchimp_client(account, retry, limits.timeout_seconds)
        return clients[account.name]

    def all_lists(account: EspAccount) -> list[dict[str, Any]]:
        client = client_for(account)
        pages = paged(
            client, settings.LISTS_PATH, "lists", page_size=limits.page_size, concurrency=account.max_connections
        )
        return [item for page in pages for item in page]

    campaign_cache: dict[str, list[dict[str, Any]]] = {}

    def campaigns_of(account: EspAccount) -> list[dict[str, Any]]:
        if account.name not in campaign_cache:
            client = client_for(account)
            pages = paged(
                client,
                settings.CAMPAIGNS_PATH,
                "campaigns",
                page_size=limits.page_size,
                concurrency=account.max_connections,
            )
            campaign_cache[account.name] = [item for page in pages for item in page]
        return campaign_cache[account.name]

    @dlt.resource(name="lists", primary_key=(ACCOUNT_KEY, "id"), write_disposition="merge")
    def lists() -> Iterator[pa.Table]:
        for account in accounts:
            rows = [
                {
                    "esp_account": account.name,
                    "id": item["id"],
                    "name": item.get("name"),
                    "date_created": item.get("date_created"),
                    "member_count": (item.get("stats") or {}).get("member_count"),
                    "unsubscribe_count": (item.get("stats") or {}).get("unsubscribe_count"),
                    "cleaned_count": (item.get("stats") or {}).get("cleaned_count"),
                }
                for item in all_lists(account)
            ]
            yield rows_table(rows, LIST_SCHEMA, ["date_created"])

    @dlt.resource(
        name="members",
        primary_key=(ACCOUNT_KEY, "list_id", "id"),
        write_disposition="replace" if full_refresh else "merge",
    )
    def members() -> Iterator[pa.Table]:
        cursors: dict[str, str] = dlt.current.resource_state().setdefault("last_changed", {})
        yielded = False
        for account in accounts:
            client = client_for(account)
            for mailchimp_list in all_lists(account):
                list_id = mailchimp_list["id"]
                cursor_key = f"{account.name}/{list_id}"
                since = None if full_refresh else parse_timestamp(cursors.get(cursor_key))
                extraction_id = f"{run_id}:{account.name}:{list_id}"
                record: dict[str, Any] = {
                    "extraction_id": extraction_id,
                    "run_id": run_id,
                    "esp_account": account.name,
                    "list_id": list_id,
                    "mode": "full" if full_refresh else "incremental",
                    "since_last_changed": since,
                    "started_at": _now(),
                    "completed": False,
                    "members_fetched": 0,
                    "error": None,
                }
                params: dict[str, Any] = {"fields": fields_param("members", settings.MEMBER_FIELDS)}
                if since is not None:
                    params["since_last_changed"] = format_timestamp(since)
                seen: set[str] = set()
                newest = since
                try:
                    path = settings.MEMBERS_PATH.format(list_id=list_id)
                    for page in paged(
                        client,
                        path,
                        "members",
                        params,
                        page_size=limits.page_size,
                        concurrency=account.max_connections,
                    ):
                        # offset paging can repeat a member when the list changes mid-read
                        fresh = [member for member in page if member["id"] not in seen]
                        seen.update(member["id"] for member in fresh)
                        if not fresh:
                            continue
                        table = members_table(account.name, list_id, fresh, extraction_id)
                        page_newest = pc.max(table.column("last_changed")).as_py()
                        if page_newest is not None and (newest is None or page_newest > newest):
                            newest = page_newest
                        record["members_fetched"] = len(seen)
                        yielded = True
                        yield table
                        yield member_addresses(table, record["started_at"])
                except EspAuthError:
                    raise
                except EspApiError as error:
                    record["error"] = str(error)
                    log.error("members of %s list %s not completely extracted: %s", account.name, list_id, error)
                else:
                    record["completed"] = True
                    if newest is not None:
                        cursors[cursor_key] = format_timestamp(newest)
                record["finished_at"] = _now()
                # one row per list and run, appended whatever the members' disposition is
                yield dlt.mark.with_hints(
                    rows_table([record], EXTRACTION_SCHEMA),
                    dlt.mark.make_hints(
                        table_name="list_extractions", write_disposition="append", primary_key="extraction_id"
                    ),
                    create_table_variant=True,
                )
        if not yielded:  # so the raw tables exist even when no member changed
            empty = members_table("", "", [], "")
            yield empty
            yield member_addresses(empty, _now())

    @dlt.resource(name="campaigns", primary_key=(ACCOUNT_KEY, "id"), write_disposition="merge")
    def campaigns() -> Iterator[pa.Table]:
        for account in accounts:
            rows = [
                {
                    "esp_account": account.name,
                    "id": item["id"],
                    "list_id": (item.get("recipients") or {}).get("list_id"),
                    "type": item.get("type"),
                    "status": item.get("status"),
                    "subject_line": (item.get("settings") or {}).get("subject_line"),
                    "title": (item.get("settings") or {}).get("title"),
                    "create_time": item.get("create_time"),
                    "send_time": item.get("send_time"),
                    "emails_sent": item.get("emails_sent"),
                }
                for item in campaigns_of(account)
            ]
            yield rows_table(rows, CAMPAIGN_SCHEMA, ["create_time", "send_time"])

    def sent_campaigns(account: EspAccount) -> list[dict[str, Any]]:
        return [item for item in campaigns_of(account) if item.get("status") == "sent"]

    @dlt.resource(name="reports", primary_key=(ACCOUNT_KEY, "campaign_id"), write_disposition="merge")
    def reports() -> Iterator[pa.Table]:
        for account in accounts:
            client = client_for(account)
            rows = []
            for campaign in sent_campaigns(account):
                report = client.get(settings.REPORT_PATH.format(campaign_id=campaign["id"]))
                bounces, opens, clicks = report.get("bounces", {}), report.get("opens", {}), report.get("clicks", {})
                rows.append(
                    {
                        "esp_account": account.name,
                        "campaign_id": campaign["id"],
                        "list_id": report.get("list_id"),
                        "send_time": report.get("send_time"),
                        "emails_sent": report.get("emails_sent"),
                        "unsubscribed": report.get("unsubscribed"),
                        "hard_bounces": bounces.get("hard_bounces"),
                        "soft_bounces": bounces.get("soft_bounces"),
                        "syntax_errors": bounces.get("syntax_errors"),
                        "opens_total": opens.get("opens_total"),
                        "unique_opens": opens.get("unique_opens"),
                        "open_rate": opens.get("open_rate"),
                        "clicks_total": clicks.get("clicks_total"),
                        "unique_clicks": clicks.get("unique_clicks"),
                        "unique_subscriber_clicks": clicks.get("unique_subscriber_clicks"),
                        "click_rate": clicks.get("click_rate"),
                    }
                )
            yield rows_table(rows, REPORT_SCHEMA, ["send_time"])

    @dlt.resource(
        name="email_activity",
        primary_key=(ACCOUNT_KEY, "campaign_id", "email_id", "action", "timestamp", "url"),
        write_disposition="merge",
    )
    def email_activity() -> Iterator[pa.Table]:
        cursors: dict[str, str] = dlt.current.resource_state().setdefault("since", {})
        yielded = False
        for account in accounts:
            client = client_for(account)
            for campaign in sent_campaigns(account):
                cursor_key = f"{account.name}/{campaign['id']}"
                params = {} if full_refresh or cursor_key not in cursors else {"since": cursors[cursor_key]}
                started = _now()
                path = settings.EMAIL_ACTIVITY_PATH.format(campaign_id=campaign["id"])
                for page in paged(
                    client, path, "emails", params, page_size=limits.page_size, concurrency=account.max_connections
                ):
                    rows = [
                        {
                            "esp_account": account.name,
                            "campaign_id": campaign["id"],
                            "list_id": email.get("list_id"),
                            "email_id": email.get("email_id"),
                            "email_address": email.get("email_address"),
                            "action": activity.get("action"),
                            "timestamp": activity.get("timestamp"),
                            "ip": activity.get("ip") or None,
                            "url": activity.get("url") or "",
                            "bounce_type": activity.get("type") or None,
                        }
                        for email in page
                        for activity in email.get("activity") or []
                    ]
                    if rows:
                        yielded = True
                        yield with_email_key(rows_table(rows, ACTIVITY_SCHEMA, ["timestamp"]), "email_address")
                cursors[cursor_key] = format_timestamp(started)
        if not yielded:
            yield with_email_key(rows_table([], ACTIVITY_SCHEMA), "email_address")

    def per_recipient(
        path_template: str, collection: str, schema: pa.Schema, timestamps: Sequence[str], row_fields: Sequence[str]
    ) -> Iterator[pa.Table]:
        yielded = False
        for account in accounts:
            client = client_for(account)
            for campaign in sent_campaigns(account):
                path = path_template.format(campaign_id=campaign["id"])
                for page in paged(
                    client, path, collection, page_size=limits.page_size, concurrency=account.max_connections
                ):
                    rows = [
                        {
                            "esp_account": account.name,
                            "campaign_id": campaign["id"],
                            **{field: item.get(field) for field in row_fields},
                        }
                        for item in page
                    ]
                    if rows:
                        yielded = True
                        yield with_email_key(rows_table(rows, schema, timestamps), "email_address")
        if not yielded:
            yield with_email_key(rows_table([], schema), "email_address")

    @dlt.resource(name="sent_to", primary_key=(ACCOUNT_KEY, "campaign_id", "email_id"), write_disposition="merge")
    def sent_to() -> Iterator[pa.Table]:
        fields = ("list_id", "email_id", "email_address", "status", "open_count", "last_open")
        yield from per_recipient(settings.SENT_TO_PATH, "sent_to", SENT_TO_SCHEMA, ["last_open"], fields)

    @dlt.resource(name="unsubscribes", primary_key=(ACCOUNT_KEY, "campaign_id", "email_id"), write_disposition="merge")
    def unsubscribes() -> Iterator[pa.Table]:
        fields = ("list_id", "email_id", "email_address", "timestamp", "reason")
        yield from per_recipient(settings.UNSUBSCRIBED_PATH, "unsubscribes", UNSUBSCRIBED_SCHEMA, ["timestamp"], fields)

    return (lists, members, campaigns, reports, email_activity, sent_to, unsubscribes)
