"""Put a scenario's Mailchimp accounts, lists, members and campaigns into the emulator."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl

from pipelines.mailchimp.helpers import subscriber_hash
from sandbox.mailchimp.state import (
    Account,
    Activity,
    Campaign,
    MailchimpList,
    MailchimpState,
    Recipient,
)
from sandbox.scenario import TABLE_SCHEMAS, Scenario

ESP_TYPE = "mailchimp"
# rows turned into Python objects at a time: bounds what a load holds besides the state
CHUNK_ROWS = 100_000


def _chunks(frame: pl.DataFrame, columns: Sequence[str]) -> Iterator[list[list[Any]]]:
    """The frame's columns as Python lists, a chunk of rows at a time (None for a missing column)."""
    for start in range(0, frame.height, CHUNK_ROWS):
        chunk = frame.slice(start, CHUNK_ROWS)
        yield [chunk[name].to_list() if name in chunk.columns else [None] * chunk.height for name in columns]


def load_into_state(
    scenario: Scenario, state: MailchimpState | None = None, *, release_tables: bool = False
) -> MailchimpState:
    """Build (or extend) emulator state from every Mailchimp account in the scenario.

    With `release_tables` each table the emulator reads is left empty in the scenario once
    read, so that a large world's tables and its state are not held side by side. The
    collector waits meanwhile: a load makes millions of objects that all live on, and passes
    over them would find nothing to free."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(scenario, state or MailchimpState(), release_tables)
    finally:
        if collecting:
            gc.enable()


def _read(scenario: Scenario, name: str, release: bool) -> pl.DataFrame:
    frame = scenario.table(name)
    if release:
        scenario.tables[name] = pl.DataFrame(schema=TABLE_SCHEMAS[name])
    return frame


def _load(scenario: Scenario, state: MailchimpState, release: bool) -> MailchimpState:
    accounts = [account for account in scenario.accounts if account.type == ESP_TYPE]
    created_at = scenario.reference_time.replace(year=scenario.reference_time.year - 3)
    by_name: dict[str, Account] = {}
    for spec in accounts:
        account = state.add_account(spec.name, spec.api_key)
        for list_spec in spec.lists:
            account.lists[list_spec.id] = MailchimpList(id=list_spec.id, name=list_spec.name, date_created=created_at)
    for spec in accounts:
        by_name[spec.name] = state.account_named(spec.name)

    shared: dict[Any, Any] = {}  # one object for each of the few names, statuses, IPs, reasons
    # an address seen as a member: its id and its (stripped) text, shared with its recipients
    known: dict[str, tuple[str, str]] = {}
    added: dict[int, tuple[MailchimpList, int]] = {}
    columns: tuple[str, ...] = (
        "account",
        "list_id",
        "email",
        "status",
        "last_changed",
        "first_name",
        "last_name",
        "salutation",
        "timestamp_signup",
        "timestamp_opt",
        "ip_opt",
        "unsubscribe_reason",
    )
    for chunk in _chunks(_read(scenario, "esp_members", release), columns):
        for (
            account_name,
            list_id,
            email,
            status,
            last_changed,
            first_name,
            last_name,
            salutation,
            timestamp_signup,
            timestamp_opt,
            ip_opt,
            unsubscribe_reason,
        ) in zip(*chunk, strict=True):
            owner = by_name.get(account_name)
            if owner is None:
                continue
            mailchimp_list = owner.get_list(list_id)
            address = known.get(email)
            if address is None:
                address = known[email] = (subscriber_hash(email), email.strip())
            member_id, email_address = address
            status = shared.setdefault(status, status)
            # a scenario's subscriber without an opt-in time opted in when its status last changed
            opted_in = timestamp_opt or (last_changed if status == "subscribed" else None)
            mailchimp_list.members.add_row(
                member_id,
                (
                    email_address,
                    status,
                    last_changed,
                    shared.setdefault(first_name or "", first_name or ""),
                    shared.setdefault(last_name or "", last_name or ""),
                    shared.setdefault(salutation or "", salutation or ""),
                    timestamp_signup,
                    opted_in if opted_in != last_changed else last_changed,
                    shared.setdefault(ip_opt or "", ip_opt or ""),
                    shared.setdefault(unsubscribe_reason or "", unsubscribe_reason or ""),
                ),
            )
            mailchimp_list.forgotten.discard(member_id)
            count = added.get(id(mailchimp_list), (mailchimp_list, 0))[1]
            added[id(mailchimp_list)] = (mailchimp_list, count + 1)
    for mailchimp_list, count in added.values():
        mailchimp_list.version += count - 1  # as one touch a member
        mailchimp_list.touch()

    campaigns = _read(scenario, "esp_campaigns", release)
    for row in campaigns.filter(campaigns["account"].is_in(list(by_name))).iter_rows(named=True):
        account = by_name[row["account"]]
        account.campaigns[row["campaign_id"]] = Campaign(
            id=row["campaign_id"],
            list_id=row["list_id"],
            title=row.get("title") or row["campaign_id"],
            subject_line=row.get("subject_line") or "",
            create_time=row["send_time"] or scenario.reference_time,
            status=row.get("status") or "sent",
            send_time=row["send_time"],
        )

    reason = "N/A (Unsubscribed via campaign link)"
    columns = ("account", "campaign_id", "email", "status", "unsubscribed_at", "complained_at")
    for chunk in _chunks(_read(scenario, "esp_recipients", release), columns):
        for account_name, campaign_id, email, status, unsubscribed_at, complained_at in zip(*chunk, strict=True):
            owner = by_name.get(account_name)
            if owner is None:
                continue
            campaign = owner.get_campaign(campaign_id)
            address = known.get(email)
            if address is not None and address[1] == email:
                email_id, email = address
            else:
                email_id = subscriber_hash(email) if address is None else address[0]
            campaign.recipients[email_id] = Recipient(
                email_address=email,
                email_id=email_id,
                list_id=campaign.list_id,
                status=shared.setdefault(status or "sent", status or "sent"),
                unsubscribed_at=unsubscribed_at,
                complained_at=complained_at,
                unsubscribe_reason=reason if unsubscribed_at else "",
            )

    for account in by_name.values():
        for campaign in account.campaigns.values():
            campaign.recipients_changed()
    # each recipient's opens, clicks and bounces, in the scenario's order
    columns = ("account", "campaign_id", "email", "action", "timestamp", "url", "bounce_type")
    for chunk in _chunks(_read(scenario, "esp_activity", release), columns):
        for account_name, campaign_id, email, action, timestamp, url, bounce_type in zip(*chunk, strict=True):
            owner = by_name.get(account_name)
            found = owner.campaigns.get(campaign_id) if owner is not None else None
            if found is None:
                continue
            address = known.get(email)
            recipient = found.recipients.get(address[0] if address is not None else subscriber_hash(email))
            if recipient is None or recipient.email_address != email:
                continue  # activity of no recipient of the campaign
            recipient.activity.append(
                Activity(
                    action=shared.setdefault(action, action),
                    timestamp=timestamp,
                    url=shared.setdefault(url or "", url or ""),
                    type=shared.setdefault(bounce_type or "", bounce_type or ""),
                )
            )
    return state
