"""Mailchimp API client, paging, and conversion of API pages to Arrow tables."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa

from mailbridge.config import EspAccount
from mailbridge.email_key import with_email_key
from pipelines.http import EspHttpClient, RetryPolicy
from pipelines.mailchimp import settings


def subscriber_hash(email_address: str) -> str:
    """Mailchimp's member id: the MD5 hex of the lower-cased address."""
    return hashlib.md5(email_address.strip().lower().encode("utf-8")).hexdigest()


def resolved_base_url(account: EspAccount, api_key: str) -> str:
    """The account's base_url, or the data centre's API host taken from the key's suffix."""
    if account.base_url:
        return account.base_url
    _, _, dc = api_key.rpartition("-")
    if not dc or dc == api_key:
        raise MailchimpConfigError(
            f"Mailchimp account {account.name!r}: the key in {account.api_key_env} has no data-centre "
            "suffix (like '-us19'); set base_url for the account or export the full key."
        )
    return settings.DEFAULT_BASE_URL.format(dc=dc)


class MailchimpConfigError(Exception):
    """The account is not usable as configured."""


def mailchimp_client(
    account: EspAccount, retry: RetryPolicy | None = None, timeout_seconds: float = 60.0
) -> EspHttpClient:
    """An HTTP client for one account, Basic auth with the key as password."""
    api_key = account.api_key()
    return EspHttpClient(
        base_url=resolved_base_url(account, api_key),
        account_label=f"Mailchimp account {account.name!r}",
        credential_hint=(
            f"Check the API key in the environment variable {account.api_key_env} "
            "(Mailchimp: Account > Extras > API keys) and that base_url matches its data centre."
        ),
        auth=httpx.BasicAuth("mailbridge", api_key),
        max_connections=min(account.max_connections, settings.MAX_CONNECTIONS),
        timeout_seconds=timeout_seconds,
        retry=retry,
    )


def fields_param(collection: str, fields: Sequence[str]) -> str:
    return ",".join([f"{collection}.{field}" for field in fields] + ["total_items"])


def paged(
    client: EspHttpClient,
    path: str,
    collection: str,
    params: Mapping[str, Any] | None = None,
    page_size: int = settings.MAX_PAGE_SIZE,
    concurrency: int = settings.MAX_CONNECTIONS,
) -> Iterator[list[dict[str, Any]]]:
    """Yield the pages of a `count`/`offset` collection, in order.

    The first page tells `total_items`; the rest are fetched with up to `concurrency`
    requests in flight, which the client's connection limit bounds as well.
    """
    base = dict(params or {})
    first = client.get(path, {**base, "count": page_size, "offset": 0})
    yield first.get(collection, [])
    total = int(first.get("total_items", 0))
    offsets = list(range(page_size, total, page_size))
    if not offsets:
        return

    def fetch(offset: int) -> list[dict[str, Any]]:
        page = client.get(path, {**base, "count": page_size, "offset": offset})
        items: list[dict[str, Any]] = page.get(collection, [])
        return items

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(offsets)))) as pool:
        yield from pool.map(fetch, offsets)


def parse_timestamp(value: Any) -> datetime | None:
    """Mailchimp's ISO 8601 timestamps ('' when unset) as aware UTC datetimes."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


TS = pa.timestamp("us", tz="UTC")

MEMBER_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("list_id", pa.string()),
        ("id", pa.string()),
        ("email_address", pa.string()),
        ("unique_email_id", pa.string()),
        ("contact_id", pa.string()),
        ("status", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("merge_fields", pa.string()),
        ("tags", pa.string()),
        ("language", pa.string()),
        ("ip_signup", pa.string()),
        ("timestamp_signup", TS),
        ("ip_opt", pa.string()),
        ("timestamp_opt", TS),
        ("last_changed", TS),
        ("unsubscribe_reason", pa.string()),
        ("member_rating", pa.int64()),
        ("extraction_id", pa.string()),
    ]
)


def members_table(account: str, list_id: str, members: list[dict[str, Any]], extraction_id: str) -> pa.Table:
    """One page of members as Arrow, with the email key computed beside the raw address."""
    columns: dict[str, list[Any]] = {field.name: [] for field in MEMBER_SCHEMA}
    for member in members:
        merge_fields = member.get("merge_fields") or {}
        columns["esp_account"].append(account)
        columns["list_id"].append(member.get("list_id") or list_id)
        columns["id"].append(member["id"])
        columns["email_address"].append(member.get("email_address"))
        columns["unique_email_id"].append(member.get("unique_email_id"))
        columns["contact_id"].append(member.get("contact_id"))
        columns["status"].append(member.get("status"))
        columns["first_name"].append(merge_fields.get("FNAME") or None)
        columns["last_name"].append(merge_fields.get("LNAME") or None)
        columns["merge_fields"].append(json.dumps(merge_fields, ensure_ascii=False, sort_keys=True))
        columns["tags"].append(json.dumps([tag.get("name") for tag in member.get("tags") or []], ensure_ascii=False))
        columns["language"].append(member.get("language") or None)
        columns["ip_signup"].append(member.get("ip_signup") or None)
        columns["timestamp_signup"].append(parse_timestamp(member.get("timestamp_signup")))
        columns["ip_opt"].append(member.get("ip_opt") or None)
        columns["timestamp_opt"].append(parse_timestamp(member.get("timestamp_opt")))
        columns["last_changed"].append(parse_timestamp(member.get("last_changed")))
        columns["unsubscribe_reason"].append(member.get("unsubscribe_reason") or None)
        columns["member_rating"].append(member.get("member_rating"))
        columns["extraction_id"].append(extraction_id)
    return with_email_key(pa.Table.from_pydict(columns, schema=MEMBER_SCHEMA), "email_address")


def rows_table(rows: list[dict[str, Any]], schema: pa.Schema, timestamp_columns: Sequence[str] = ()) -> pa.Table:
    """Plain rows as Arrow with an explicit schema; ISO timestamps parsed."""
    for row in rows:
        for column in timestamp_columns:
            row[column] = parse_timestamp(row.get(column))
    return pa.Table.from_pylist(rows, schema=schema)
