"""Put a scenario's Mailchimp accounts, lists, members and campaigns into the emulator."""

from __future__ import annotations

from collections import defaultdict

from pipelines.mailchimp.helpers import subscriber_hash
from sandbox.mailchimp.state import (
    Activity,
    Campaign,
    MailchimpList,
    MailchimpState,
    Recipient,
)
from sandbox.scenario import Scenario

ESP_TYPE = "mailchimp"


def load_into_state(scenario: Scenario, state: MailchimpState | None = None) -> MailchimpState:
    """Build (or extend) emulator state from every Mailchimp account in the scenario."""
    state = state or MailchimpState()
    accounts = [account for account in scenario.accounts if account.type == ESP_TYPE]
    created_at = scenario.reference_time.replace(year=scenario.reference_time.year - 3)
    for spec in accounts:
        account = state.add_account(spec.name, spec.api_key)
        for list_spec in spec.lists:
            account.lists[list_spec.id] = MailchimpList(id=list_spec.id, name=list_spec.name, date_created=created_at)

    names = {account.name for account in accounts}
    members = scenario.table("esp_members")
    for row in members.filter(members["account"].is_in(list(names))).iter_rows(named=True):
        account = state.account_named(row["account"])
        mailchimp_list = account.get_list(row["list_id"])
        merge_fields = {"FNAME": row.get("first_name") or "", "LNAME": row.get("last_name") or ""}
        if row.get("salutation"):
            merge_fields["SALUTATION"] = row["salutation"]
        member = state.new_member(
            mailchimp_list,
            row["email"],
            row["status"],
            merge_fields=merge_fields,
            last_changed=row["last_changed"],
            timestamp_signup=row.get("timestamp_signup"),
            # a scenario's subscriber without an opt-in time opted in when its status last changed
            timestamp_opt=row.get("timestamp_opt") or (row["last_changed"] if row["status"] == "subscribed" else None),
            ip_opt=row.get("ip_opt") or "",
            unsubscribe_reason=row.get("unsubscribe_reason") or "",
        )
        member.last_changed = row["last_changed"]

    campaigns = scenario.table("esp_campaigns")
    for row in campaigns.filter(campaigns["account"].is_in(list(names))).iter_rows(named=True):
        account = state.account_named(row["account"])
        account.campaigns[row["campaign_id"]] = Campaign(
            id=row["campaign_id"],
            list_id=row["list_id"],
            title=row.get("title") or row["campaign_id"],
            subject_line=row.get("subject_line") or "",
            create_time=row["send_time"] or scenario.reference_time,
            status=row.get("status") or "sent",
            send_time=row["send_time"],
        )

    activity_by_recipient: dict[tuple[str, str, str], list[Activity]] = defaultdict(list)
    activity = scenario.table("esp_activity")
    for row in activity.filter(activity["account"].is_in(list(names))).iter_rows(named=True):
        activity_by_recipient[(row["account"], row["campaign_id"], row["email"])].append(
            Activity(
                action=row["action"],
                timestamp=row["timestamp"],
                url=row.get("url") or "",
                type=row.get("bounce_type") or "",
            )
        )
    recipients = scenario.table("esp_recipients")
    for row in recipients.filter(recipients["account"].is_in(list(names))).iter_rows(named=True):
        account = state.account_named(row["account"])
        campaign = account.get_campaign(row["campaign_id"])
        email_id = subscriber_hash(row["email"])
        campaign.recipients[email_id] = Recipient(
            email_address=row["email"],
            email_id=email_id,
            list_id=campaign.list_id,
            status=row.get("status") or "sent",
            activity=activity_by_recipient.get((row["account"], row["campaign_id"], row["email"]), []),
            unsubscribed_at=row.get("unsubscribed_at"),
            complained_at=row.get("complained_at"),
            unsubscribe_reason="N/A (Unsubscribed via campaign link)" if row.get("unsubscribed_at") else "",
        )
    return state
