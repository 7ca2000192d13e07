"""Send gating: trigger an ESP campaign send only when its list is known to be clean.

Every decision, sent or refused, is a row in ops.campaign_sends with its reasons.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from mailbridge.config import ConfigError, EspAccount, MailbridgeConfig
from mailbridge.warehouse_lock import hold_warehouse
from pipelines.gate import send_gate
from pipelines.registry import connector
from pipelines.writers import CampaignSender

# as in dbt's create_ops_tables, for a send refused before dbt ever ran
CREATE_SENDS = """
    create schema if not exists ops;
    create table if not exists ops.campaign_sends (
        send_id varchar primary key,
        campaign_id varchar not null,
        esp_account varchar not null,
        esp_list_id varchar,
        list_link_id varchar,
        decided_at timestamp with time zone not null,
        outcome varchar not null,
        reasons varchar
    )
"""


@dataclass(frozen=True)
class SendResult:
    campaign_id: str
    esp_account: str
    esp_list_id: str
    list_link_id: str | None
    sent: bool
    reasons: list[str]


def send_campaign(
    config: MailbridgeConfig,
    campaign_id: str,
    *,
    account_name: str | None = None,
    max_age_minutes: int | None = None,
    sender_factory: Callable[..., CampaignSender] | None = None,
    now: datetime | None = None,
) -> SendResult:
    """Send the campaign if its list passes the send gate; otherwise refuse with the reasons."""
    account = _account(config, account_name)
    factory = sender_factory or connector(account.type).writer()
    sender = factory(account)
    list_id = sender.campaign_list_id(campaign_id)
    links = [link for link in config.links_of_account(account.name) if link.esp_list_id == list_id]
    limit = max_age_minutes or config.gating.send_max_age_minutes
    # the gate reads what the last sync left, never a reconciliation a running sync rebuilds
    with (
        hold_warehouse(config.warehouse_path(), f"send {campaign_id}", timeout=config.warehouse_wait_seconds),
        duckdb.connect(str(config.warehouse_path())) as db,
    ):
        if links:
            reasons = send_gate(db, links[0].id, limit, now).reasons
        else:
            reasons = [
                f"list {list_id!r} of account {account.name!r} is linked to no CRM list in mailbridge.yaml: "
                "mailbridge cannot vouch for it"
            ]
        link_id = links[0].id if links else None
        if not reasons:
            sender.send_campaign(campaign_id)
        db.execute(CREATE_SENDS)
        db.execute(
            "insert into ops.campaign_sends values (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                f"send-{uuid.uuid4().hex[:12]}",
                campaign_id,
                account.name,
                list_id,
                link_id,
                datetime.now(UTC),
                "refused" if reasons else "sent",
                "; ".join(reasons) or None,
            ],
        )
    return SendResult(campaign_id, account.name, list_id, link_id, not reasons, reasons)


def _account(config: MailbridgeConfig, name: str | None) -> EspAccount:
    if name is not None:
        try:
            return config.account(name)
        except KeyError:
            names = ", ".join(a.name for a in config.esp_accounts)
            raise ConfigError(f"no ESP account named {name!r}; configured accounts: {names}") from None
    if len(config.esp_accounts) == 1:
        return config.esp_accounts[0]
    names = ", ".join(a.name for a in config.esp_accounts)
    raise ConfigError(f"several ESP accounts are configured ({names}): say which one with --account")
