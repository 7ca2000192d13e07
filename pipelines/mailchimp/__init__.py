"""dlt source for the Mailchimp Marketing API v3: lists, members, campaigns and reports."""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.destinations.exceptions import DatabaseUndefinedRelation
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
    timestamp_column,
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
# the latest read of each resource per account (and campaign, for a campaign's reports):
# a read that broke off is recorded here and read again next run, the others go on
RESOURCE_EXTRACTION_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("resource", pa.string()),
        ("campaign_id", pa.string()),  # '' for an account-wide read (lists, campaigns)
        ("run_id", pa.string()),
        ("started_at", TS),
        ("finished_at", TS),
        ("completed", pa.bool_()),
        ("rows_fetched", pa.int64()),
        ("error", pa.string()),
    ]
)
RESOURCE_EXTRACTION_HINTS = dlt.mark.make_hints(
    table_name="resource_extractions",
    write_disposition="merge",
    primary_key=(ACCOUNT_KEY, "resource", "campaign_id"),
)
# what a read that breaks off raises: retries spent, an error answer, an answer that cannot be read
READ_FAILURES = (EspApiError, ValueError, KeyError, TypeError)
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
        ("abuse_reports", pa.int64()),
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
# a recipient who marked the campaign as spam (Mailchimp's abuse reports)
ABUSE_REPORT_SCHEMA = pa.schema(
    [
        ("esp_account", pa.string()),
        ("campaign_id", pa.string()),
        ("list_id", pa.string()),
        ("email_id", pa.string()),
        ("email_address", pa.string()),
        ("date", TS),
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


ERASED = "erased"


def with_erased(members: pa.Table, erased: bool | None) -> pa.Table:
    """`members` with the column that deletes a row on merge: null on every member read."""
    return members.append_column(ERASED, pa.array([erased] * members.num_rows, pa.bool_()))


def stored_member_ids(account: str, list_id: str) -> pa.Array | None:
    """The member ids of one list in the warehouse, as the last load left them; None when the
    members table does not exist yet or no pipeline runs the source."""
    import duckdb  # imported by a run: building the source needs none of it

    try:
        pipeline = dlt.current.pipeline()
    except Exception:  # the source read outside a pipeline: there is nothing stored
        return None
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name("members")
            query = f"select id from {table} where esp_account = %s and list_id = %s"
            native = client.native_connection
            if isinstance(native, duckdb.DuckDBPyConnection):  # the ids as Arrow, no Python rows
                ids = native.sql(query.replace("%s", "?"), params=[account, list_id]).to_arrow_table()
                return ids.column(0).combine_chunks().cast(pa.string())
            with client.execute_query(query, account, list_id) as cursor:
                return pa.array([row[0] for row in cursor.fetchall()], pa.string())
    except DatabaseUndefinedRelation:
        return None


def erased_members(
    client: EspHttpClient,
    account: str,
    list_id: str,
    read: set[str],
    limits: ExtractionSettings,
    concurrency: int,
) -> pa.Table | None:
    """After an incremental read of a list: the members the ESP no longer has, as rows that
    delete theirs from the members table; None when there are none.

    `since_last_changed` never shows a member that is gone: permanently deleted, or moved to
    another id by an address change. A full read replaces the table and so drops them; an
    incremental read finds them the way the count says. Every member added or changed since the
    last read is in this read, so without a member gone the stored members and the ones just
    read add up to the list's `total_items`. When they do not, the list's member ids are read
    (`fields=members.id`, a small fraction of a member read) and the stored ids it lacks are
    deleted, so the warehouse holds what a full read would have left. A census that breaks off
    fails the list's read, like any member read."""
    stored = stored_member_ids(account, list_id)
    if stored is None or len(stored) == 0:
        return None
    path = settings.MEMBERS_PATH.format(list_id=list_id)
    answer = client.get(path, {"count": 1, "fields": "total_items"})
    total = answer.get("total_items") if isinstance(answer, dict) else None
    if not isinstance(total, int):
        raise EspApiError(f"{client.account_label}: GET {path} answered without total_items", retryable=True)
    read_ids = pa.array(sorted(read), pa.string())
    new = len(read_ids) - pc.sum(pc.is_in(read_ids, value_set=stored)).as_py() if len(read_ids) else 0
    if len(stored) + new == total:
        return None
    census: list[str] = []
    for page in paged(
        client,
        path,
        "members",
        {"fields": "members.id,total_items"},
        page_size=limits.page_size,
        concurrency=concurrency,
    ):
        census.extend(member["id"] for member in page)
    present = pa.concat_arrays([pa.array(census, pa.string()), read_ids])
    gone = stored.filter(pc.invert(pc.is_in(stored, value_set=present)))
    if len(gone) == 0:
        return None
    log.info("%s list %s: %d members are gone from the ESP; their rows are deleted", account, list_id, len(gone))
    rows = [{"id": member_id, "list_id": list_id} for member_id in gone.to_pylist()]
    return with_erased(members_table(account, list_id, rows, ""), True)


def _now() -> datetime:
    return datetime.now(UTC)


def resource_extractions(outcomes: list[dict[str, Any]]) -> Any:
    """The outcome of each read of one resource in this run, merged into resource_extractions."""
    return dlt.mark.with_hints(
        rows_table(outcomes, RESOURCE_EXTRACTION_SCHEMA), RESOURCE_EXTRACTION_HINTS, create_table_variant=True
    )


def activity_page_table(account: str, campaign_id: str, page: Sequence[Mapping[str, Any]]) -> pa.Table:
    """One page of a campaign's email activity as Arrow: a row per event, each beside its
    recipient's list, id and address. Column by column: the recipient's columns are read once a
    recipient and repeated by Arrow, the event's once an event."""
    activities = [email.get("activity") or [] for email in page]
    events = [event for listed in activities for event in listed]
    count = len(events)
    owner = pa.array([row for row, listed in enumerate(activities) for _ in listed], pa.int64())

    def recipient_column(name: str) -> pa.Array:
        return pa.array([email.get(name) for email in page], pa.string()).take(owner)

    columns = [
        pa.array([account] * count, pa.string()),
        pa.array([campaign_id] * count, pa.string()),
        recipient_column("list_id"),
        recipient_column("email_id"),
        recipient_column("email_address"),
        pa.array([event.get("action") for event in events], pa.string()),
        timestamp_column([event.get("timestamp") for event in events]),
        pa.array([event.get("ip") or None for event in events], pa.string()),
        pa.array([event.get("url") or "" for event in events], pa.string()),
        pa.array([event.get("type") or None for event in events], pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=ACTIVITY_SCHEMA)


def recorded_read(
    outcomes: list[dict[str, Any]],
    account: str,
    resource: str,
    campaign_id: str,
    tables: Iterator[pa.Table],
    run_id: str,
) -> Generator[pa.Table, None, bool]:
    """Yield one read's tables. A read that breaks off (retries spent, an error answer, an
    answer that cannot be read) fails alone: it is recorded in `outcomes` with its error and
    a warning, and the caller keeps its cursor. Refused credentials still stop the source.
    Returns whether the read completed."""
    started = _now()
    fetched = 0
    error: str | None = None
    try:
        for table in tables:
            fetched += table.num_rows
            yield table
    except EspAuthError:
        raise
    except READ_FAILURES as failure:
        error = str(failure) if isinstance(failure, EspApiError) else f"unreadable answer: {failure!r}"
        where = f" of campaign {campaign_id}" if campaign_id else ""
        log.warning("%s%s of %s not read; read again next run: %s", resource, where, account, error)
    outcomes.append(
        {
            "esp_account": account,
            "resource": resource,
            "campaign_id": campaign_id,
            "run_id": run_id,
            "started_at": started,
            "finished_at": _now(),
            "completed": error is None,
            "rows_fetched": fetched,
            "error": error,
        }
    )
    return error is None


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

    # read once a run; a failed read is kept and raised to every resource that needs it
    list_cache: dict[str, list[dict[str, Any]] | Exception] = {}
    campaign_cache: dict[str, list[dict[str, Any]] | Exception] = {}

    def read_once(
        cache: dict[str, list[dict[str, Any]] | Exception], account: EspAccount, path: str, collection: str
    ) -> list[dict[str, Any]]:
        if account.name not in cache:
            try:
                pages = paged(
                    client_for(account),
                    path,
                    collection,
                    page_size=limits.page_size,
                    concurrency=account.max_connections,
                )
                cache[account.name] = [item for page in pages for item in page]
            except EspAuthError:
                raise
            except READ_FAILURES as error:
                cache[account.name] = error
        cached = cache[account.name]
        if isinstance(cached, Exception):
            raise cached
        return cached

    def all_lists(account: EspAccount) -> list[dict[str, Any]]:
        return read_once(list_cache, account, settings.LISTS_PATH, "lists")

    def campaigns_of(account: EspAccount) -> list[dict[str, Any]]:
        return read_once(campaign_cache, account, settings.CAMPAIGNS_PATH, "campaigns")

    def list_table(account: EspAccount) -> Iterator[pa.Table]:
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

    @dlt.resource(name="lists", primary_key=(ACCOUNT_KEY, "id"), write_disposition="merge")
    def lists() -> Iterator[Any]:
        outcomes: list[dict[str, Any]] = []
        for account in accounts:
            yield from recorded_read(outcomes, account.name, "lists", "", list_table(account), run_id)
        yield resource_extractions(outcomes)

    @dlt.resource(
        name="members",
        primary_key=(ACCOUNT_KEY, "list_id", "id"),
        write_disposition="replace" if full_refresh else "merge",
        # a member the ESP erased: its row is deleted from the members table (see erased_members)
        columns={ERASED: {"data_type": "bool", "nullable": True, "hard_delete": True}},
    )
    def members() -> Iterator[pa.Table]:
        # dlt resets a replace resource's state: after a full read that broke off, the list's
        # next read is whole, so none of its members that the replace dropped looks gone
        cursors: dict[str, str] = dlt.current.resource_state().setdefault("last_changed", {})
        # the lists of each account at its last readable index, kept where a full read does not
        # reset them: when the index cannot be read, each is recorded unread
        known_lists: dict[str, list[str]] = dlt.current.source_state().setdefault("known_lists", {})
        yielded = False

        def extraction_record(account: EspAccount, list_id: str, since: datetime | None) -> dict[str, Any]:
            return {
                "extraction_id": f"{run_id}:{account.name}:{list_id}",
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

        def extraction_row(record: dict[str, Any]) -> Any:
            # one row per list and run, appended whatever the members' disposition is
            return dlt.mark.with_hints(
                rows_table([record], EXTRACTION_SCHEMA),
                dlt.mark.make_hints(
                    table_name="list_extractions", write_disposition="append", primary_key="extraction_id"
                ),
                create_table_variant=True,
            )

        for account in accounts:
            client = client_for(account)
            try:
                list_ids = [item["id"] for item in all_lists(account)]
            except EspAuthError:
                raise
            except READ_FAILURES as error:
                # no list of this account is read: each one known is recorded unread, so that
                # none is reconciled as if its members had left
                prefix = f"{account.name}/"
                known = set(known_lists.get(account.name, []))
                known |= {key.removeprefix(prefix) for key in cursors if key.startswith(prefix)}
                log.error("the lists of %s could not be read; no member was read: %s", account.name, error)
                for list_id in sorted(known):
                    record = extraction_record(account, list_id, None)
                    record["error"] = f"the account's lists could not be read: {error}"
                    record["finished_at"] = _now()
                    yield extraction_row(record)
                continue
            known_lists[account.name] = list_ids
            for list_id in list_ids:
                cursor_key = f"{account.name}/{list_id}"
                since = None if full_refresh else parse_timestamp(cursors.get(cursor_key))
                record = extraction_record(account, list_id, since)
                extraction_id = record["extraction_id"]
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
                        yield with_erased(table, None)
                        yield member_addresses(table, record["started_at"])
                    if since is not None:
                        erased = erased_members(client, account.name, list_id, seen, limits, account.max_connections)
                        if erased is not None:
                            yield erased
                except EspAuthError:
                    raise
                except READ_FAILURES as error:
                    record["error"] = str(error) if isinstance(error, EspApiError) else f"unreadable answer: {error!r}"
                    log.error("members of %s list %s not completely extracted: %s", account.name, list_id, error)
                else:
                    record["completed"] = True
                    if newest is not None:
                        cursors[cursor_key] = format_timestamp(newest)
                record["finished_at"] = _now()
                yield extraction_row(record)
        if not yielded:  # so the raw tables exist even when no member changed
            empty = members_table("", "", [], "")
            yield with_erased(empty, None)
            yield member_addresses(empty, _now())

    def campaign_table(account: EspAccount) -> Iterator[pa.Table]:
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

    @dlt.resource(name="campaigns", primary_key=(ACCOUNT_KEY, "id"), write_disposition="merge")
    def campaigns() -> Iterator[Any]:
        outcomes: list[dict[str, Any]] = []
        for account in accounts:
            yield from recorded_read(outcomes, account.name, "campaigns", "", campaign_table(account), run_id)
        yield resource_extractions(outcomes)

    def sent_campaigns(account: EspAccount) -> list[dict[str, Any]]:
        try:
            return [item for item in campaigns_of(account) if item.get("status") == "sent"]
        except EspAuthError:
            raise
        except READ_FAILURES:
            return []  # the campaigns resource records why; their reports are read next run

    # each campaign's report, read once a run: the reports resource loads it, and the email
    # activity compares its counters with the last complete read's
    report_cache: dict[tuple[str, str], dict[str, Any] | Exception] = {}

    def report_of(client: EspHttpClient, account: EspAccount, campaign: dict[str, Any]) -> dict[str, Any]:
        key = (account.name, campaign["id"])
        if key not in report_cache:
            try:
                report_cache[key] = client.get(settings.REPORT_PATH.format(campaign_id=campaign["id"]))
            except EspAuthError:
                raise
            except READ_FAILURES as failure:
                report_cache[key] = failure
        cached = report_cache[key]
        if isinstance(cached, Exception):
            raise cached
        return cached

    def report_table(client: EspHttpClient, account: EspAccount, campaign: dict[str, Any]) -> Iterator[pa.Table]:
        report = report_of(client, account, campaign)
        bounces, opens, clicks = report.get("bounces", {}), report.get("opens", {}), report.get("clicks", {})
        row = {
            "esp_account": account.name,
            "campaign_id": campaign["id"],
            "list_id": report.get("list_id"),
            "send_time": report.get("send_time"),
            "emails_sent": report.get("emails_sent"),
            "unsubscribed": report.get("unsubscribed"),
            "abuse_reports": report.get("abuse_reports"),
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
        yield rows_table([row], REPORT_SCHEMA, ["send_time"])

    @dlt.resource(name="reports", primary_key=(ACCOUNT_KEY, "campaign_id"), write_disposition="merge")
    def reports() -> Iterator[Any]:
        outcomes: list[dict[str, Any]] = []
        for account in accounts:
            client = client_for(account)
            tables: list[pa.Table] = []
            for campaign in sent_campaigns(account):
                read = report_table(client, account, campaign)
                tables += recorded_read(outcomes, account.name, "reports", campaign["id"], read, run_id)
            yield pa.concat_tables(tables) if tables else rows_table([], REPORT_SCHEMA)
        yield resource_extractions(outcomes)

    def activity_tables(
        client: EspHttpClient, account: EspAccount, campaign: dict[str, Any], params: dict[str, Any]
    ) -> Iterator[pa.Table]:
        path = settings.EMAIL_ACTIVITY_PATH.format(campaign_id=campaign["id"])
        for page in paged(
            client,
            path,
            "emails",
            params,
            page_size=limits.page_size,
            concurrency=account.max_connections,
            key="email_id",
        ):
            table = activity_page_table(account.name, campaign["id"], page)
            if table.num_rows:
                yield with_email_key(table, "email_address")

    @dlt.resource(
        name="email_activity",
        primary_key=(ACCOUNT_KEY, "campaign_id", "email_id", "action", "timestamp", "url"),
        write_disposition="merge",
    )
    def email_activity() -> Iterator[Any]:
        state = dlt.current.resource_state()
        cursors: dict[str, str] = state.setdefault("since", {})
        # the report's activity counters at the start of each campaign's last complete read
        seen: dict[str, dict[str, str]] = state.setdefault("seen", {})
        if full_refresh:
            seen.clear()
        outcomes: list[dict[str, Any]] = []
        recheck = timedelta(hours=limits.activity_recheck_hours)
        for account in accounts:
            client = client_for(account)
            for campaign in sent_campaigns(account):
                cursor_key = f"{account.name}/{campaign['id']}"
                cursor = None if full_refresh else parse_timestamp(cursors.get(cursor_key))
                started = _now()
                counters = activity_counters(client, account, campaign)
                last = seen.get(cursor_key)
                if (
                    cursor is not None
                    and counters is not None
                    and last is not None
                    and last["counters"] == counters
                    and started < (parse_timestamp(last["read_at"]) or started) + recheck
                ):
                    # nothing new by the report: not read, and the cursor stays where the last
                    # read started, so the read that follows asks for everything since
                    continue
                reread = timedelta(minutes=limits.activity_reread_minutes)
                params = {} if cursor is None else {"since": format_timestamp(cursor - reread)}
                read = activity_tables(client, account, campaign, params)
                # the cursor moves only past a complete read: a failed one is read again from it
                if (yield from recorded_read(outcomes, account.name, "email_activity", campaign["id"], read, run_id)):
                    cursors[cursor_key] = format_timestamp(started)
                    if counters is not None:
                        seen[cursor_key] = {"counters": counters, "read_at": format_timestamp(started)}
                else:
                    seen.pop(cursor_key, None)
        if not any(outcome["rows_fetched"] for outcome in outcomes):
            yield with_email_key(rows_table([], ACTIVITY_SCHEMA), "email_address")
        yield resource_extractions(outcomes)

    def activity_counters(client: EspHttpClient, account: EspAccount, campaign: dict[str, Any]) -> str | None:
        """What the campaign's report counts of its email activity: every open, every click, the
        bounces, and the times of the latest open and click. None when the report cannot be
        read: the activity is read then."""
        try:
            report = report_of(client, account, campaign)
        except READ_FAILURES:
            return None
        bounces, opens, clicks = report.get("bounces") or {}, report.get("opens") or {}, report.get("clicks") or {}
        values = (
            report.get("emails_sent"),
            opens.get("opens_total"),
            opens.get("last_open"),
            clicks.get("clicks_total"),
            clicks.get("last_click"),
            bounces.get("hard_bounces"),
            bounces.get("soft_bounces"),
            bounces.get("syntax_errors"),
        )
        if values[1] is None or values[3] is None:
            return None  # a report without the counters says nothing about the activity
        return "|".join("" if value is None else str(value) for value in values)

    def per_recipient(
        resource: str,
        path_template: str,
        collection: str,
        schema: pa.Schema,
        timestamps: Sequence[str],
        row_fields: Sequence[str],
        window_days: float,
    ) -> Iterator[Any]:
        outcomes: list[dict[str, Any]] = []

        def recipient_tables(
            client: EspHttpClient, account: EspAccount, campaign: dict[str, Any]
        ) -> Iterator[pa.Table]:
            path = path_template.format(campaign_id=campaign["id"])
            for page in paged(
                client,
                path,
                collection,
                page_size=limits.page_size,
                concurrency=account.max_connections,
                key="email_id",
            ):
                if page:
                    constants = {"esp_account": account.name, "campaign_id": campaign["id"]}
                    yield with_email_key(rows_table(page, schema, timestamps, constants=constants), "email_address")

        # campaigns whose per-recipient report was read completely after its window: settled,
        # read again only by a full sync
        settled: dict[str, str] = dlt.current.resource_state().setdefault("settled", {})
        if full_refresh:
            settled.clear()
        window = timedelta(days=window_days)
        for account in accounts:
            client = client_for(account)
            for campaign in sent_campaigns(account):
                key = f"{account.name}/{campaign['id']}"
                if key in settled:
                    continue
                started = _now()
                read = recipient_tables(client, account, campaign)
                complete = yield from recorded_read(outcomes, account.name, resource, campaign["id"], read, run_id)
                sent_at = parse_timestamp(campaign.get("send_time"))
                if complete and sent_at is not None and sent_at + window <= started:
                    settled[key] = format_timestamp(started)
        if not any(outcome["rows_fetched"] for outcome in outcomes):
            yield with_email_key(rows_table([], schema), "email_address")
        yield resource_extractions(outcomes)

    @dlt.resource(name="sent_to", primary_key=(ACCOUNT_KEY, "campaign_id", "email_id"), write_disposition="merge")
    def sent_to() -> Iterator[Any]:
        fields = ("list_id", "email_id", "email_address", "status", "open_count", "last_open")
        yield from per_recipient(
            "sent_to",
            settings.SENT_TO_PATH,
            "sent_to",
            SENT_TO_SCHEMA,
            ["last_open"],
            fields,
            limits.sent_to_window_days,
        )

    @dlt.resource(name="unsubscribes", primary_key=(ACCOUNT_KEY, "campaign_id", "email_id"), write_disposition="merge")
    def unsubscribes() -> Iterator[Any]:
        fields = ("list_id", "email_id", "email_address", "timestamp", "reason")
        yield from per_recipient(
            "unsubscribes",
            settings.UNSUBSCRIBED_PATH,
            "unsubscribes",
            UNSUBSCRIBED_SCHEMA,
            ["timestamp"],
            fields,
            limits.report_window_days,
        )

    @dlt.resource(name="abuse_reports", primary_key=(ACCOUNT_KEY, "campaign_id", "email_id"), write_disposition="merge")
    def abuse_reports() -> Iterator[Any]:
        fields = ("list_id", "email_id", "email_address", "date")
        yield from per_recipient(
            "abuse_reports",
            settings.ABUSE_REPORTS_PATH,
            "abuse_reports",
            ABUSE_REPORT_SCHEMA,
            ["date"],
            fields,
            limits.report_window_days,
        )

    return (lists, members, campaigns, reports, email_activity, sent_to, unsubscribes, abuse_reports)
