"""The Mailchimp writer: status writes as batches (POST /lists/{id}), field updates as PATCH,
archive and erase.

A batch member always carries an explicit `status` (a batch has no status_if_new), and
`update_existing` holds for the whole request, so each kind of status write has batches of
its own:
- transmit: `subscribed`, update_existing false. A new address is created subscribed; an
  existing member (archived ones included) is left alone and comes back "already a list
  member": rejected `member_exists`, for the next sync to reconcile. When the batch was sent
  again after an attempt whose answer was lost, a member that is subscribed now was added by
  that attempt: sent.
- start_doi: `pending`, update_existing true: the double opt-in mail goes to new members and
  to opted-out or archived ones, for whom it is the one way back. Mailchimp also demotes a
  subscribed member to pending; start_doi is only planned for addresses the last sync saw
  not subscribed, so only a member who subscribed since then meets that.
- unsubscribe: `unsubscribed`, update_existing true.
update_fields is a PATCH with merge_fields only: a field update never carries a status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from functools import partial
from typing import Any

from mailbridge.config import EspAccount
from pipelines.http import EspApiError, EspHttpClient, RetryPolicy
from pipelines.mailchimp import settings
from pipelines.mailchimp.helpers import mailchimp_client, subscriber_hash
from pipelines.writers import BatchCallback, EspAccountError, EspWrite, WriteOutcome, compliance_refusals

MAX_BATCH_MEMBERS = 500
LOG = logging.getLogger(__name__)

# per batched action: the status each member is given, and the request's update_existing
BATCH_PAYLOADS: dict[str, tuple[str, bool]] = {
    "transmit": ("subscribed", False),
    "start_doi": ("pending", True),
    "unsubscribe": ("unsubscribed", True),
}
MEMBER_REQUEST_ACTIONS = ("update_fields", "delete", "delete_permanent")
AUTH_STATUSES = frozenset({401, 403})

Request = Callable[[], list[WriteOutcome]]


def member_body(write: EspWrite) -> dict[str, Any]:
    """The batch entry for one write, with its action's explicit status."""
    status, _ = BATCH_PAYLOADS[write.action]
    body: dict[str, Any] = {"email_address": write.email_address, "status": status}
    if write.fields:
        body["merge_fields"] = dict(write.fields)
    return body


def error_code(error: EspApiError) -> str:
    """Mailchimp's problem title as an outcome code ("Resource Not Found" → resource_not_found)."""
    return (error.title or f"http_{error.status}").lower().replace(" ", "_")


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
        self._requests_lock = threading.Lock()
        self._refused: EspAccountError | None = None

    def write(
        self, list_id: str, writes: Sequence[EspWrite], on_batch: BatchCallback | None = None
    ) -> list[WriteOutcome]:
        """One outcome per write; `on_batch` hears each request's outcomes as it is answered.

        Raises EspAccountError when Mailchimp refuses the credentials: nothing more is sent,
        and the outcomes reported until then stay reported."""
        allowed, outcomes = compliance_refusals(writes, self.is_blocked)
        report = on_batch or (lambda batch_outcomes: None)
        unsupported = [
            WriteOutcome(w.action_id, "rejected", "unsupported_action", f"the Mailchimp writer cannot {w.action}")
            for w in allowed
            if w.action not in BATCH_PAYLOADS and w.action not in MEMBER_REQUEST_ACTIONS
        ]
        outcomes += unsupported
        report(list(outcomes))
        batches: list[Request] = []
        for action in BATCH_PAYLOADS:
            same_kind = [w for w in allowed if w.action == action]
            for start in range(0, len(same_kind), self.batch_size):
                batches.append(partial(self._send_batch, list_id, same_kind[start : start + self.batch_size]))
        members: list[Request] = [
            partial(self._send_member_request, list_id, w) for w in allowed if w.action in MEMBER_REQUEST_ACTIONS
        ]
        # the batches first, as a whole; then the per-member requests
        outcomes += self._run(batches, report)
        outcomes += self._run(members, report)
        return outcomes

    def _run(self, requests: list[Request], report: BatchCallback) -> list[WriteOutcome]:
        """Run the requests, at most max_connections at once, and report each one's outcomes in
        this thread as it is answered. Refused credentials cancel what has not started; what
        was answered meanwhile is still reported before EspAccountError is raised."""
        if not requests:
            return []
        answered: list[list[WriteOutcome] | None] = [None] * len(requests)
        refused: EspAccountError | None = None
        workers = max(1, min(self.account.max_connections, settings.MAX_CONNECTIONS, len(requests)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(request): index for index, request in enumerate(requests)}
            try:
                for future in as_completed(futures):
                    if future.cancelled():
                        continue
                    try:
                        outcomes = future.result()
                    except EspAccountError as error:
                        if refused is None:
                            refused = error
                            for waiting in futures:
                                waiting.cancel()
                        continue
                    answered[futures[future]] = outcomes
                    report(outcomes)
            finally:
                for waiting in futures:  # whatever went wrong here, send nothing more
                    waiting.cancel()
        if refused is not None:
            raise refused
        return [outcome for outcomes in answered if outcomes is not None for outcome in outcomes]

    def _request(self, method: str, path: str, json_body: Any = None) -> Any:
        """One request. Refused credentials (401/403) are the account's problem, not the
        action's: they become EspAccountError instead of an outcome, and once the account
        was refused no other request of this writer is sent."""
        with self._requests_lock:
            if self._refused is not None:
                raise self._refused
            self.requests += 1
        try:
            return self.client.request_json(method, path, json_body=json_body)
        except EspApiError as error:
            if error.status in AUTH_STATUSES:
                refused = self._account_error(error)
                with self._requests_lock:
                    self._refused = self._refused or refused
                raise refused from error
            raise

    def changed_since(self, list_id: str, since: datetime) -> set[str]:
        """The addresses (lower-case) of the list's members that changed since `since`: a CRM
        write that takes a member's subscribe from the sync is checked against it, as the
        CRM's own rows are. last_changed also moves on field edits: a false alarm costs only
        a write deferred to the next sync."""
        changed: set[str] = set()
        offset = 0
        while True:
            try:
                page = self.client.get(
                    f"lists/{list_id}/members",
                    {
                        "since_last_changed": since.astimezone(UTC).isoformat(timespec="seconds"),
                        "fields": "members.email_address,total_items",
                        "count": settings.MAX_PAGE_SIZE,
                        "offset": offset,
                    },
                )
            except EspApiError as error:
                if error.status in AUTH_STATUSES:
                    raise self._account_error(error) from error
                raise
            members = page.get("members") or []
            changed.update(str(m.get("email_address", "")).strip().lower() for m in members)
            offset += len(members)
            if not members or offset >= int(page.get("total_items") or 0):
                return changed

    def _account_error(self, error: EspApiError) -> EspAccountError:
        status = int(error.status or 0)
        answer = f"HTTP {status} {error.title}" if error.title else f"HTTP {status}"
        return EspAccountError(
            self.account.name,
            status,
            f"Mailchimp refused the credentials of ESP account {self.account.name!r} ({answer}). "
            f"Check the API key in the environment variable {self.account.api_key_env} "
            "(Mailchimp: Account > Extras > API keys), that the account's base_url matches the key's "
            "data centre, and (for a 403) that the key's user may write to the audience.",
        )

    def _send_batch(self, list_id: str, batch: list[EspWrite]) -> list[WriteOutcome]:
        """One batch of one action; a batch refused whole is split until the bad members are isolated."""
        _, update_existing = BATCH_PAYLOADS[batch[0].action]
        try:
            response = self._request(
                "POST",
                f"lists/{list_id}",
                json_body={"members": [member_body(w) for w in batch], "update_existing": update_existing},
            )
        except EspApiError as error:
            if error.retryable:
                return [WriteOutcome(w.action_id, "failed", "transient", str(error)) for w in batch]
            if error.status == 400 and len(batch) > 1:
                middle = len(batch) // 2
                return self._send_batch(list_id, batch[:middle]) + self._send_batch(list_id, batch[middle:])
            return [WriteOutcome(w.action_id, "rejected", error_code(error), error.detail or str(error)) for w in batch]
        resent = self.client.resent_after_uncertain()
        errors = {
            str(item.get("email_address", "")).strip().lower(): item for item in (response or {}).get("errors") or []
        }
        outcomes = []
        for write in batch:
            error_item = errors.get(write.email_address.strip().lower())
            if error_item is None:
                outcomes.append(WriteOutcome(write.action_id, "sent"))
                continue
            if resent and error_item.get("error_code") == "ERROR_CONTACT_EXISTS" and self._subscribed(list_id, write):
                # an earlier attempt of this batch took effect unanswered: the member it added
                outcomes.append(WriteOutcome(write.action_id, "sent", "applied_before_resend", None))
                continue
            # per-member errors are about the data (member exists, compliance state, forgotten,
            # invalid): permanent; a transmit's existing member is the next sync's to reconcile
            code = str(error_item.get("error_code") or "error")
            outcomes.append(
                WriteOutcome(
                    write.action_id,
                    "rejected",
                    "member_exists" if code == "ERROR_CONTACT_EXISTS" else code,
                    str(error_item.get("error") or ""),
                )
            )
        return outcomes

    def _subscribed(self, list_id: str, write: EspWrite) -> bool:
        """Is the member subscribed now? A transmit asks for nothing else; any other status
        (an opt-out above all) is not its doing and stays the next sync's to reconcile."""
        try:
            member = self._request("GET", f"lists/{list_id}/members/{subscriber_hash(write.email_address)}")
        except EspApiError:
            return False
        return isinstance(member, dict) and member.get("status") == "subscribed"

    def _send_member_request(self, list_id: str, write: EspWrite) -> list[WriteOutcome]:
        if write.action == "update_fields":
            return [self._update_fields(list_id, write)]
        return [self._delete(list_id, write)]

    def _update_fields(self, list_id: str, write: EspWrite) -> WriteOutcome:
        """PATCH merge_fields alone: without a status it can neither subscribe nor revive anyone."""
        member = subscriber_hash(write.email_address)
        try:
            self._request("PATCH", f"lists/{list_id}/members/{member}", json_body={"merge_fields": dict(write.fields)})
        except EspApiError as error:
            if error.retryable:
                return WriteOutcome(write.action_id, "failed", "transient", str(error))
            if error.status == 404:
                return WriteOutcome(
                    write.action_id, "rejected", "member_not_found", f"{write.email_address} is not on list {list_id}"
                )
            return WriteOutcome(write.action_id, "rejected", error_code(error), error.detail or str(error))
        return WriteOutcome(write.action_id, "sent")

    def _delete(self, list_id: str, write: EspWrite) -> WriteOutcome:
        member = subscriber_hash(write.email_address)
        if write.action == "delete_permanent" and not self.allow_permanent_delete:
            return WriteOutcome(
                write.action_id,
                "rejected",
                "refused_permanent_delete",
                "permanent delete erases the member irreversibly; it needs the explicit permanent-delete flag",
            )
        try:
            if write.action == "delete_permanent":
                LOG.warning(
                    "irreversible: erasing %s from list %s of %s", write.email_address, list_id, self.account.name
                )
                self._request("POST", f"lists/{list_id}/members/{member}/actions/delete-permanent")
            else:
                self._request("DELETE", f"lists/{list_id}/members/{member}")
        except EspApiError as error:
            if error.retryable:
                return WriteOutcome(write.action_id, "failed", "transient", str(error))
            if error.status == 404 and write.action == "delete":
                # archived already (or never there): what the delete asks for holds
                return WriteOutcome(write.action_id, "sent", "already_archived", None)
            if error.status == 404:
                # erased already, by an earlier attempt whose answer was lost or by someone else
                return WriteOutcome(write.action_id, "sent", "already_erased", None)
            return WriteOutcome(write.action_id, "rejected", error_code(error), str(error))
        return WriteOutcome(write.action_id, "sent")

    # -- campaigns --------------------------------------------------------------

    def campaign_list_id(self, campaign_id: str) -> str:
        """The list a campaign goes to."""
        campaign = self.client.get(f"campaigns/{campaign_id}", {"fields": "id,status,recipients.list_id"})
        return str(campaign["recipients"]["list_id"])

    def send_campaign(self, campaign_id: str) -> None:
        """Send the campaign now (Mailchimp answers 204 No Content)."""
        self.requests += 1
        try:
            self.client.request_json("POST", f"campaigns/{campaign_id}/actions/send")
        except EspApiError as error:
            # "already sent" after an attempt whose answer was lost: that attempt sent it
            if error.status != 400 or not self.client.resent_after_uncertain():
                raise
            campaign = self.client.get(f"campaigns/{campaign_id}", {"fields": "id,status"})
            if campaign.get("status") not in ("sending", "sent"):
                raise
