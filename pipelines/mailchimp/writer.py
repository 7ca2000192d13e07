"""The Mailchimp writer: batched member upserts through POST /lists/{id}, archive and erase."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mailbridge.config import EspAccount
from pipelines.http import EspApiError, EspHttpClient, RetryPolicy
from pipelines.mailchimp import settings
from pipelines.mailchimp.helpers import mailchimp_client, subscriber_hash
from pipelines.writers import BatchCallback, EspWrite, WriteOutcome, compliance_refusals

MAX_BATCH_MEMBERS = 500
LOG = logging.getLogger(__name__)


def member_body(write: EspWrite) -> dict[str, Any]:
    """The batch entry for one action. An existing member never gets `subscribed`: a new one
    does through status_if_new, and re-subscribing goes only through `pending` (DOI)."""
    body: dict[str, Any] = {"email_address": write.email_address}
    if write.fields:
        body["merge_fields"] = dict(write.fields)
    if write.action == "transmit":
        body["status_if_new"] = "subscribed"
    elif write.action == "start_doi":
        body["status"] = "pending"
    elif write.action == "unsubscribe":
        body["status"] = "unsubscribed"
    return body


class MailchimpWriter:
    """Applies actions to one Mailchimp account, at most `max_connections` requests at once."""

    def __init__(
        self,
        account: EspAccount,
        *,
        is_blocked: Callable[[str], bool] = lambda key: False,
        allow_permanent_delete: bool = False,
        client: EspHttpClient | None = None,
        retry: RetryPolicy | None = None,
        batch_size: int = MAX_BATCH_MEMBERS,
    ) -> None:
        self.account = account
        self.client = client or mailchimp_client(account, retry)
        self.is_blocked = is_blocked
        self.allow_permanent_delete = allow_permanent_delete
        self.batch_size = min(batch_size, MAX_BATCH_MEMBERS)
        self.requests = 0

    def write(
        self, list_id: str, writes: Sequence[EspWrite], on_batch: BatchCallback | None = None
    ) -> list[WriteOutcome]:
        allowed, outcomes = compliance_refusals(writes, self.is_blocked)
        report = on_batch or (lambda batch_outcomes: None)
        report(list(outcomes))
        upserts = [w for w in allowed if w.action not in ("delete", "delete_permanent")]
        deletes = [w for w in allowed if w.action in ("delete", "delete_permanent")]
        batches = [upserts[i : i + self.batch_size] for i in range(0, len(upserts), self.batch_size)]
        workers = max(1, min(self.account.max_connections, settings.MAX_CONNECTIONS, len(batches) or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # results arrive in this thread, batch by batch, as they complete in order
            for result in pool.map(lambda batch: self._send_batch(list_id, batch), batches):
                outcomes.extend(result)
                report(result)
            for outcome in pool.map(lambda write: self._delete(list_id, write), deletes):
                outcomes.append(outcome)
                report([outcome])
        return outcomes

    def _send_batch(self, list_id: str, batch: list[EspWrite]) -> list[WriteOutcome]:
        """One batch; a batch refused whole is split until the bad members are isolated."""
        self.requests += 1
        try:
            response = self.client.request_json(
                "POST",
                f"lists/{list_id}",
                json_body={"members": [member_body(w) for w in batch], "update_existing": True},
            )
        except EspApiError as error:
            if error.retryable:
                return [WriteOutcome(w.action_id, "failed", "transient", str(error)) for w in batch]
            if error.status == 400 and len(batch) > 1:
                middle = len(batch) // 2
                return self._send_batch(list_id, batch[:middle]) + self._send_batch(list_id, batch[middle:])
            code = (error.title or f"http_{error.status}").lower().replace(" ", "_")
            return [WriteOutcome(w.action_id, "rejected", code, error.detail or str(error)) for w in batch]
        errors = {
            str(item.get("email_address", "")).strip().lower(): item for item in (response or {}).get("errors") or []
        }
        outcomes = []
        for write in batch:
            error_item = errors.get(write.email_address.strip().lower())
            if error_item is None:
                outcomes.append(WriteOutcome(write.action_id, "sent"))
            else:
                # per-member errors are about the data (compliance state, forgotten, invalid): permanent
                outcomes.append(
                    WriteOutcome(
                        write.action_id,
                        "rejected",
                        str(error_item.get("error_code") or "error"),
                        str(error_item.get("error") or ""),
                    )
                )
        return outcomes

    def _delete(self, list_id: str, write: EspWrite) -> WriteOutcome:
        member = subscriber_hash(write.email_address)
        if write.action == "delete_permanent" and not self.allow_permanent_delete:
            return WriteOutcome(
                write.action_id,
                "rejected",
                "refused_permanent_delete",
                "permanent delete erases the member irreversibly; it needs the explicit permanent-delete flag",
            )
        self.requests += 1
        try:
            if write.action == "delete_permanent":
                LOG.warning(
                    "irreversible: erasing %s from list %s of %s", write.email_address, list_id, self.account.name
                )
                self.client.request_json("POST", f"lists/{list_id}/members/{member}/actions/delete-permanent")
            else:
                self.client.request_json("DELETE", f"lists/{list_id}/members/{member}")
        except EspApiError as error:
            code = (error.title or "error").lower().replace(" ", "_")
            if error.retryable:
                return WriteOutcome(write.action_id, "failed", code, str(error))
            return WriteOutcome(write.action_id, "rejected", code, str(error))
        return WriteOutcome(write.action_id, "sent")

    # -- campaigns --------------------------------------------------------------

    def campaign_list_id(self, campaign_id: str) -> str:
        """The list a campaign goes to."""
        campaign = self.client.get(f"campaigns/{campaign_id}", {"fields": "id,status,recipients.list_id"})
        return str(campaign["recipients"]["list_id"])

    def send_campaign(self, campaign_id: str) -> None:
        """Send the campaign now (Mailchimp answers 204 No Content)."""
        self.requests += 1
        self.client.request_json("POST", f"campaigns/{campaign_id}/actions/send")
