"""The Mailchimp emulator's state: accounts, lists, members, campaigns and their reports."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.mailchimp.helpers import subscriber_hash
from sandbox.mailchimp import store
from sandbox.mailchimp.store import MEMBER_RATING, MemberStore, contact_id_of, iso, unique_email_id_of

MEMBER_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
WRITABLE_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
COMPLIANCE_STATES = ("unsubscribed", "cleaned")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class MailchimpError(Exception):
    """An API error, rendered as application/problem+json."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors


@dataclass(slots=True)
class Member:
    id: str
    email_address: str
    status: str
    list_id: str
    unique_email_id: str
    contact_id: str
    merge_fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    language: str = ""
    ip_signup: str = ""
    timestamp_signup: datetime | None = None
    ip_opt: str = ""
    timestamp_opt: datetime | None = None
    last_changed: datetime = field(default_factory=utcnow)
    unsubscribe_reason: str = ""
    member_rating: int = MEMBER_RATING
    # the status an archived member had before it was archived (None when unknown, e.g. loaded
    # archived): an opt-out stays an opt-out through archiving. Never in the API's answers.
    archived_from: str | None = None

    def as_json(self) -> dict[str, Any]:
        return store.member_json(
            self.id,
            self.email_address,
            self.unique_email_id,
            self.contact_id,
            dict(self.merge_fields),
            self.status,
            self.unsubscribe_reason,
            self.ip_signup,
            self.timestamp_signup,
            self.ip_opt,
            self.timestamp_opt,
            self.member_rating,
            self.last_changed,
            self.language,
            self.tags,
            self.list_id,
        )


@dataclass
class MailchimpList:
    id: str
    name: str
    date_created: datetime
    members: MemberStore = field(init=False)
    forgotten: set[str] = field(default_factory=set)
    # contact ids in use by members that moved to another address: a new member at the former
    # address is another contact, with an id of its own
    moved_contact_ids: set[str] = field(default_factory=set)
    version: int = 0
    _views: dict[tuple[Any, ...], list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.members = MemberStore(self.id)

    def touch(self) -> None:
        self.version += 1
        self._views.clear()

    def view(self, status: str | None, since: datetime | None, before: datetime | None) -> list[str]:
        """Member ids matching the filters, in a stable order (cached until the list changes)."""
        key = (status, since, before)
        ids = self._views.get(key)
        if ids is None:
            ids = self._views[key] = self.members.select(status, since, before)
        return ids

    def as_json(self) -> dict[str, Any]:
        counts = {status: 0 for status in MEMBER_STATUSES}
        for status in self.members.statuses():
            counts[status] += 1
        return {
            "id": self.id,
            "web_id": abs(hash(self.id)) % 100000,
            "name": self.name,
            "date_created": iso(self.date_created),
            "list_rating": 0,
            "subscribe_url_short": "",
            "double_optin": True,
            "stats": {
                "member_count": counts["subscribed"],
                "unsubscribe_count": counts["unsubscribed"],
                "cleaned_count": counts["cleaned"],
                "member_count_since_send": 0,
                "unsubscribe_count_since_send": 0,
                "cleaned_count_since_send": 0,
                "campaign_count": 0,
            },
            "_links": [],
        }


@dataclass(slots=True)
class Activity:
    action: str  # open | click | bounce
    timestamp: datetime
    ip: str = ""
    url: str = ""
    type: str = ""  # hard | soft for bounces


@dataclass(slots=True)
class Recipient:
    email_address: str
    email_id: str
    list_id: str
    status: str = "sent"  # sent | hard | soft
    # None until the recipient's first open, click or bounce: most recipients of a large world
    # have none, and an empty list takes 56 bytes
    logged: list[Activity] | None = None
    unsubscribed_at: datetime | None = None
    complained_at: datetime | None = None  # an abuse report: the recipient marked the mail as spam
    unsubscribe_reason: str = ""

    @property
    def activity(self) -> list[Activity]:
        """The recipient's opens, clicks and bounces, to read or to add to."""
        if self.logged is None:
            self.logged = []
        return self.logged

    @activity.setter
    def activity(self, value: list[Activity]) -> None:
        self.logged = value

    def actions(self) -> Sequence[Activity]:
        """The recipient's opens, clicks and bounces, to read."""
        return self.logged or ()


@dataclass
class Campaign:
    id: str
    list_id: str
    title: str
    subject_line: str
    create_time: datetime
    status: str = "save"  # save | sending | sent
    send_time: datetime | None = None
    recipients: dict[str, Recipient] = field(default_factory=dict)
    _listed: list[Recipient] | None = field(default=None, init=False, repr=False, compare=False)

    def recipient_list(self) -> list[Recipient]:
        """The recipients in order, for paging: kept between pages until their number changes
        or `recipients_changed()` says they did."""
        listed = self._listed
        if listed is None or len(listed) != len(self.recipients):
            listed = self._listed = list(self.recipients.values())
        return listed

    def recipients_changed(self) -> None:
        self._listed = None

    def opens(self) -> list[tuple[Recipient, Activity]]:
        return [(r, a) for r in self.recipients.values() for a in r.actions() if a.action == "open"]

    def clicks(self) -> list[tuple[Recipient, Activity]]:
        return [(r, a) for r in self.recipients.values() for a in r.actions() if a.action == "click"]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "web_id": abs(hash(self.id)) % 100000,
            "type": "regular",
            "create_time": iso(self.create_time),
            "status": self.status,
            "emails_sent": len(self.recipients),
            "send_time": iso(self.send_time),
            "content_type": "template",
            "recipients": {"list_id": self.list_id, "list_is_active": True, "recipient_count": len(self.recipients)},
            "settings": {"subject_line": self.subject_line, "title": self.title},
            "_links": [],
        }

    def report(self) -> dict[str, Any]:
        sent = len(self.recipients)
        hard = sum(1 for r in self.recipients.values() if r.status == "hard")
        soft = sum(1 for r in self.recipients.values() if r.status == "soft")
        opens, clicks = self.opens(), self.clicks()
        unique_openers = {r.email_id for r, _ in opens}
        unique_clickers = {r.email_id for r, _ in clicks}
        unique_clicks = {(r.email_id, a.url) for r, a in clicks}
        delivered = max(sent - hard - soft, 0)
        return {
            "id": self.id,
            "campaign_title": self.title,
            "type": "regular",
            "list_id": self.list_id,
            "subject_line": self.subject_line,
            "emails_sent": sent,
            "abuse_reports": sum(1 for r in self.recipients.values() if r.complained_at is not None),
            "unsubscribed": sum(1 for r in self.recipients.values() if r.unsubscribed_at is not None),
            "send_time": iso(self.send_time),
            "bounces": {"hard_bounces": hard, "soft_bounces": soft, "syntax_errors": 0},
            "opens": {
                "opens_total": len(opens),
                "unique_opens": len(unique_openers),
                "open_rate": round(len(unique_openers) / delivered, 4) if delivered else 0,
                "last_open": iso(max((a.timestamp for _, a in opens), default=None)),
            },
            "clicks": {
                "clicks_total": len(clicks),
                "unique_clicks": len(unique_clicks),
                "unique_subscriber_clicks": len(unique_clickers),
                "click_rate": round(len(unique_clickers) / delivered, 4) if delivered else 0,
                "last_click": iso(max((a.timestamp for _, a in clicks), default=None)),
            },
            "_links": [],
        }


@dataclass
class Account:
    name: str
    api_key: str
    lists: dict[str, MailchimpList] = field(default_factory=dict)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get_list(self, list_id: str) -> MailchimpList:
        try:
            return self.lists[list_id]
        except KeyError:
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.") from None

    def get_campaign(self, campaign_id: str) -> Campaign:
        try:
            return self.campaigns[campaign_id]
        except KeyError:
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.") from None


class MailchimpState:
    """Every emulated account, keyed by API key. One lock serialises writes."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.lock = threading.RLock()
        self._ids = itertools.count(1)

    def add_account(self, name: str, api_key: str) -> Account:
        account = Account(name=name, api_key=api_key)
        self.accounts[api_key] = account
        return account

    def account_named(self, name: str) -> Account:
        for account in self.accounts.values():
            if account.name == name:
                return account
        raise KeyError(name)

    def next_id(self, prefix: str = "") -> str:
        return f"{prefix}{next(self._ids):010x}"

    def new_member(self, mailchimp_list: MailchimpList, email_address: str, status: str, **fields: Any) -> Member:
        member_id = subscriber_hash(email_address)
        contact_id = contact_id_of(member_id)
        suffix = 0
        while contact_id in mailchimp_list.moved_contact_ids:
            suffix += 1
            contact_id = hashlib.md5(f"contact:{member_id}:{suffix}".encode()).hexdigest()
        member = Member(
            id=member_id,
            email_address=email_address.strip(),
            status=status,
            list_id=mailchimp_list.id,
            unique_email_id=unique_email_id_of(member_id),
            contact_id=contact_id,
            **fields,
        )
        mailchimp_list.members[member_id] = member
        mailchimp_list.forgotten.discard(member_id)
        mailchimp_list.touch()
        return member
