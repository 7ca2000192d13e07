"""Mailchimp API client, paging, and conversion of API pages to Arrow tables."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pyarrow as pa

from mailbridge.config import EspAccount
from mailbridge.email_key import with_email_key
from pipelines.http import EspApiError, EspHttpClient, RetryPolicy
from pipelines.mailchimp import settings

log = logging.getLogger(__name__)


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
    import httpx  # where a client is made (see pipelines.http)

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
    key: str = "id",
    max_passes: int = settings.MAX_READ_PASSES,
) -> Iterator[list[dict[str, Any]]]:
    """Yield the pages of a `count`/`offset` collection, in order, each item (by `key`) once.

    The first page tells `total_items`; the rest are fetched with up to `concurrency`
    requests in flight, which the client's connection limit bounds as well, and at most
    `2 * concurrency` pages ahead of the consumer. Offset paging
    drifts when the collection changes between two page reads: an item inserted ahead of
    the next page repeats one, an item removed ahead of it skips one. So pages overlap, and
    each must hold the last item of the page before it; until a page reaches the end of the
    collection, a pass that breaks that chain is read again (only unseen items are yielded).
    After `max_passes` broken passes the read fails, to be read again next run.
    """
    base = dict(params or {})
    overlap = min(page_size - 1, max(1, page_size // 10))
    stride = page_size - overlap
    seen: set[Any] = set()

    def fetch(offset: int) -> Page:
        answer = client.get(path, {**base, "count": page_size, "offset": offset})
        items = answer.get(collection) if isinstance(answer, dict) else None
        total = answer.get("total_items") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not isinstance(total, int):
            raise EspApiError(
                f"{client.account_label}: GET {path} at offset {offset} answered without a "
                f"'{collection}' list and total_items",
                retryable=True,
            )
        return Page(offset, items, total)

    def unseen(page: Page) -> list[dict[str, Any]]:
        fresh = [item for item in page.items if item.get(key) is None or item.get(key) not in seen]
        seen.update(item[key] for item in fresh if item.get(key) is not None)
        return fresh

    def follows(before: Page, page: Page) -> bool:
        """Does `page` continue right after `before`, which did not reach the end? It does when
        it holds before's last item: every item between the two is then in one of them."""
        if not before.items:  # empty short of the end: what it should have held moved ahead
            return False
        last = before.items[-1].get(key)
        if overlap == 0 or last is None:  # pages of one item, or items without a key: nothing to check by
            return True
        return any(item.get(key) == last for item in page.items)

    previous, complete, chained = Page(0, [], 0), False, True

    def step(page: Page) -> None:
        """Take the next page of a pass: is the chain from the first page still unbroken?"""
        nonlocal previous, complete, chained
        if chained and not complete:
            chained = follows(previous, page)
            complete = chained and page.reaches_end
        previous = page

    for attempt in range(1, max_passes + 1):
        previous = fetch(0)
        yield unseen(previous)
        complete, chained = previous.reaches_end, True
        offsets: list[int] = []
        while not complete and len(offsets) * stride + page_size < previous.total:
            offsets.append((len(offsets) + 1) * stride)
        if offsets:
            for page in read_ahead(fetch, offsets, max(1, min(concurrency, len(offsets)))):
                step(page)
                yield unseen(page)
        while chained and not complete:  # it grew meanwhile: read on to its end
            page = fetch(previous.offset + stride)
            step(page)
            yield unseen(page)
        if complete:
            return
        log.info("%s: %s changed while it was read (pass %d), reading it again", client.account_label, path, attempt)
    raise EspApiError(
        f"{client.account_label}: GET {path} kept changing while it was read: offset paging drifted in "
        f"{max_passes} passes in a row",
        retryable=True,
    )


def read_ahead(fetch: Callable[[int], Page], offsets: Sequence[int], workers: int) -> Iterator[Page]:
    """The pages at `offsets`, in order, fetched by `workers` threads at most `2 * workers`
    pages ahead of the consumer: memory stays bounded however long the collection is."""
    window = 2 * workers
    upcoming = iter(offsets)
    pending: deque[Future[Page]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for offset in islice(upcoming, window):
                pending.append(pool.submit(fetch, offset))
            while pending:
                page = pending.popleft().result()
                following = next(upcoming, None)
                if following is not None:
                    pending.append(pool.submit(fetch, following))
                yield page
        finally:  # a consumer that stops early (or a failed page) leaves nothing to fetch
            for future in pending:
                future.cancel()


@dataclass(frozen=True)
class Page:
    offset: int
    items: list[dict[str, Any]]
    total: int  # total_items when this page was read

    @property
    def reaches_end(self) -> bool:
        return self.offset + len(self.items) >= self.total


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


def timestamp_column(values: Sequence[Any]) -> pa.Array:
    """Mailchimp's ISO 8601 timestamps ('' when unset) as one Arrow column of UTC times, parsed
    by Arrow; a column Arrow cannot read (a time without offset, say) is read value by value
    as `parse_timestamp` reads it."""
    texts = pa.array([str(value) if value else None for value in values], pa.string())
    try:
        return texts.cast(TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([parse_timestamp(value) for value in values], TS)


def members_table(account: str, list_id: str, members: list[dict[str, Any]], extraction_id: str) -> pa.Table:
    """One page of members as Arrow, with the email key computed beside the raw address. Built
    column by column: one pass per column over the page, no per-row appends."""
    merge_fields = [member.get("merge_fields") or {} for member in members]
    rows = len(members)

    def column(name: str, empty_as_null: bool = False) -> list[Any]:
        if empty_as_null:
            return [member.get(name) or None for member in members]
        return [member.get(name) for member in members]

    columns: dict[str, Any] = {
        "esp_account": [account] * rows,
        "list_id": [member.get("list_id") or list_id for member in members],
        "id": [member["id"] for member in members],
        "email_address": column("email_address"),
        "unique_email_id": column("unique_email_id"),
        "contact_id": column("contact_id"),
        "status": column("status"),
        "first_name": [fields.get("FNAME") or None for fields in merge_fields],
        "last_name": [fields.get("LNAME") or None for fields in merge_fields],
        "merge_fields": [json.dumps(fields, ensure_ascii=False, sort_keys=True) for fields in merge_fields],
        "tags": [
            json.dumps([tag.get("name") for tag in member.get("tags") or []], ensure_ascii=False) for member in members
        ],
        "language": column("language", empty_as_null=True),
        "ip_signup": column("ip_signup", empty_as_null=True),
        "timestamp_signup": timestamp_column(column("timestamp_signup")),
        "ip_opt": column("ip_opt", empty_as_null=True),
        "timestamp_opt": timestamp_column(column("timestamp_opt")),
        "last_changed": timestamp_column(column("last_changed")),
        "unsubscribe_reason": column("unsubscribe_reason", empty_as_null=True),
        "member_rating": column("member_rating"),
        "extraction_id": [extraction_id] * rows,
    }
    return with_email_key(pa.Table.from_pydict(columns, schema=MEMBER_SCHEMA), "email_address")


def rows_table(
    rows: Sequence[Mapping[str, Any]],
    schema: pa.Schema,
    timestamp_columns: Sequence[str] = (),
    *,
    constants: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Plain rows (or a page of API items) as Arrow with an explicit schema, column by column:
    each column read from the rows by its name (missing: null), except that a column of
    `constants` holds its value on every row; ISO timestamps parsed by Arrow
    (`timestamp_column`). A page's items need no dict each to add the constant columns."""
    constants = constants or {}
    count = len(rows)
    columns = []
    for field in schema:
        name = field.name
        values = [constants[name]] * count if name in constants else [row.get(name) for row in rows]
        columns.append(timestamp_column(values) if name in timestamp_columns else pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
