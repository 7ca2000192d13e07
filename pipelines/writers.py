"""ESP writers: the one interface every ESP implements to apply planned push-back actions.

A writer receives actions for one list and returns one outcome per action. It never breaks
the compliance rules, whoever asks: a blocklisted or invalid address is refused before any
request, and an existing member is never sent a subscribed status. Refused credentials
stop the writer with EspAccountError: they belong to the account, not to an action.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mailbridge.email_key import try_email_key

EspAction = Literal["transmit", "start_doi", "unsubscribe", "update_fields", "delete", "delete_permanent"]
OutcomeStatus = Literal["sent", "rejected", "failed", "stale"]

# actions that would put an address on a list: never for a blocklisted or invalid one
ADDING_ACTIONS = frozenset({"transmit", "start_doi", "update_fields"})


@dataclass(frozen=True)
class EspWrite:
    """One planned action for one address on one ESP list."""

    action_id: str
    action: EspAction
    email_address: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteOutcome:
    """What became of one action: sent (the target accepted it; the next sync confirms),
    rejected (permanent: never retried), failed (transient: retried in the run and on the
    next) or stale (a CRM row changed since the sync: skipped until the next sync)."""

    action_id: str
    status: OutcomeStatus
    error_code: str | None = None
    error_message: str | None = None

    @property
    def retryable(self) -> bool:
        return self.status == "failed"


BatchCallback = Callable[[list[WriteOutcome]], None]


class EspAccountError(Exception):
    """The ESP refused an account's credentials (HTTP 401 or 403). That is the account's
    fault, not any action's: no write of the account can succeed until someone fixes it, so
    the writer stops instead of rejecting every action. The message names the account and
    the fix, never the key."""

    def __init__(self, account: str, status: int, message: str) -> None:
        super().__init__(message)
        self.account = account
        self.status = status


class EspWriter(Protocol):
    """Applies actions to one ESP account. `on_batch` hears each batch's outcomes as soon as
    the ESP answered it, so a push that dies midway has recorded what was written."""

    def write(
        self, list_id: str, writes: Sequence[EspWrite], on_batch: BatchCallback | None = None
    ) -> list[WriteOutcome]: ...


class CampaignSender(Protocol):
    """Triggers an ESP's campaign send; the send gate decides whether it may."""

    def campaign_list_id(self, campaign_id: str) -> str: ...

    def send_campaign(self, campaign_id: str) -> None: ...


def compliance_refusals(
    writes: Sequence[EspWrite], is_blocked: Callable[[str], bool]
) -> tuple[list[EspWrite], list[WriteOutcome]]:
    """Split actions into those that may be sent and refusals made before any request."""
    allowed: list[EspWrite] = []
    refused: list[WriteOutcome] = []
    for write in writes:
        key = try_email_key(write.email_address)
        if key.key is None:
            refused.append(
                WriteOutcome(
                    write.action_id, "rejected", "refused_invalid_address", f"not a valid address: {key.error}"
                )
            )
        elif write.action in ADDING_ACTIONS and is_blocked(key.key):
            refused.append(
                WriteOutcome(
                    write.action_id,
                    "rejected",
                    "refused_blocklisted",
                    f"{write.action} refused: the address is on the CRM blocklist",
                )
            )
        else:
            allowed.append(write)
    return allowed, refused
