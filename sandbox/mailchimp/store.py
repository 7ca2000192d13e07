"""A list's members, held as compact rows until one is read as an object or written.

A world of a million contacts holds well over a million members. As dataclasses with their
own dicts, merge fields and tags each took about 1 KB; a loaded member now is one tuple of
shared and atomic values (its id is the mapping's key; `unique_email_id` and `contact_id`
follow from the id, as `MailchimpState.new_member` makes them). Reading a page writes rows
to JSON without making objects; `members[key]` (every write, every test that looks inside)
turns the row into the `Member` it stands for, kept from then on, so changes to it stay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from sandbox.mailchimp.state import Member

ZERO = timedelta(0)

# a loaded member's row: what differs from one member to the next, in this order
EMAIL: Final = 0
STATUS: Final = 1
LAST_CHANGED: Final = 2
FNAME: Final = 3
LNAME: Final = 4
SALUTATION: Final = 5
SIGNUP: Final = 6
OPT: Final = 7
IP_OPT: Final = 8
REASON: Final = 9
Row = tuple[str, str, datetime, str, str, str, "datetime | None", "datetime | None", str, str]


def iso(value: datetime | None) -> str:
    """The API's time format: UTC, whole seconds, `+00:00`."""
    if value is None:
        return ""
    if value.tzinfo is not UTC and value.utcoffset() != ZERO:  # naive or another offset
        value = value.astimezone(UTC)
    if value.year < 1000:  # strftime writes such years without leading zeros
        return value.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    # the offset is zero, so orjson writes it as +00:00; it is four times faster than isoformat
    return orjson.dumps(value, option=orjson.OPT_OMIT_MICROSECONDS)[1:-1].decode()


def contact_id_of(member_id: str) -> str:
    """The contact id a member gets when nothing else at its list holds that id."""
    return hashlib.md5(("contact:" + member_id).encode()).hexdigest()


def unique_email_id_of(member_id: str) -> str:
    return member_id[:10]


# the rating (of five stars) a member starts with; a loaded member keeps it
MEMBER_RATING: Final = 2


def member_json(
    member_id: str,
    email_address: str,
    unique_email_id: str,
    contact_id: str,
    merge_fields: dict[str, Any],
    status: str,
    unsubscribe_reason: str,
    ip_signup: str,
    timestamp_signup: datetime | None,
    ip_opt: str,
    timestamp_opt: datetime | None,
    member_rating: int,
    last_changed: datetime,
    language: str,
    tags: list[str],
    list_id: str,
) -> dict[str, Any]:
    """A member as the API answers it (`merge_fields` is the caller's own copy)."""
    return {
        "id": member_id,
        "email_address": email_address,
        "unique_email_id": unique_email_id,
        "contact_id": contact_id,
        "full_name": " ".join(part for part in (merge_fields.get("FNAME"), merge_fields.get("LNAME")) if part),
        "email_type": "html",
        "status": status,
        "unsubscribe_reason": unsubscribe_reason,
        "merge_fields": merge_fields,
        "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
        "ip_signup": ip_signup,
        "timestamp_signup": iso(timestamp_signup),
        "ip_opt": ip_opt,
        "timestamp_opt": iso(timestamp_opt),
        "member_rating": member_rating,
        "last_changed": iso(last_changed),
        "language": language,
        "vip": False,
        "email_client": "",
        "location": {"latitude": 0, "longitude": 0},
        "source": "API - Generic",
        "tags_count": len(tags),
        "tags": [{"id": index + 1, "name": name} for index, name in enumerate(tags)],
        "list_id": list_id,
        "_links": [],
    }


def _merge_fields(row: Row) -> dict[str, Any]:
    fields: dict[str, Any] = {"FNAME": row[FNAME], "LNAME": row[LNAME]}
    if row[SALUTATION]:
        fields["SALUTATION"] = row[SALUTATION]
    return fields


class MemberStore(MutableMapping[str, "Member"]):
    """The members of one list by id, in the order they joined (as a dict keeps them)."""

    __slots__ = ("_entries", "list_id")

    def __init__(self, list_id: str) -> None:
        self.list_id = list_id
        self._entries: dict[str, Row | Member] = {}

    def add_row(self, member_id: str, row: Row) -> None:
        """A member as loaded from a scenario, held as its row."""
        self._entries[member_id] = row

    def __getitem__(self, member_id: str) -> Member:
        entry = self._entries[member_id]
        if isinstance(entry, tuple):
            entry = self._entries[member_id] = self._materialise(member_id, entry)
        return entry

    def __setitem__(self, member_id: str, member: Member) -> None:
        self._entries[member_id] = member

    def __delitem__(self, member_id: str) -> None:
        del self._entries[member_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._entries

    def clear(self) -> None:
        self._entries.clear()

    def _materialise(self, member_id: str, row: Row) -> Member:
        from sandbox.mailchimp.state import Member

        return Member(
            id=member_id,
            email_address=row[EMAIL],
            status=row[STATUS],
            list_id=self.list_id,
            unique_email_id=unique_email_id_of(member_id),
            contact_id=contact_id_of(member_id),
            merge_fields=_merge_fields(row),
            timestamp_signup=row[SIGNUP],
            ip_opt=row[IP_OPT],
            timestamp_opt=row[OPT],
            last_changed=row[LAST_CHANGED],
            unsubscribe_reason=row[REASON],
        )

    # -- reads that make no objects ---------------------------------------------

    def as_json(self, member_id: str) -> dict[str, Any]:
        """The member as the API answers it, whether held as a row or as an object."""
        row = self._entries[member_id]
        if not isinstance(row, tuple):
            return row.as_json()
        return member_json(
            member_id,
            row[EMAIL],
            unique_email_id_of(member_id),
            contact_id_of(member_id),
            _merge_fields(row),
            row[STATUS],
            row[REASON],
            "",
            row[SIGNUP],
            row[IP_OPT],
            row[OPT],
            MEMBER_RATING,
            row[LAST_CHANGED],
            "",
            [],
            self.list_id,
        )

    def statuses(self) -> Iterator[str]:
        for entry in self._entries.values():
            yield entry[STATUS] if isinstance(entry, tuple) else entry.status

    def select(self, status: str | None, since: datetime | None, before: datetime | None) -> list[str]:
        """The ids of the members with this status, changed in [since, before], in order."""
        chosen = []
        for member_id, entry in self._entries.items():
            if isinstance(entry, tuple):
                member_status, last_changed = entry[STATUS], entry[LAST_CHANGED]
            else:
                member_status, last_changed = entry.status, entry.last_changed
            if (
                (status is None or member_status == status)
                and (since is None or last_changed >= since)
                and (before is None or last_changed <= before)
            ):
                chosen.append(member_id)
        return chosen

    def addresses(self, status: str) -> Iterator[tuple[str, str]]:
        """(id, email_address) of the members with this status, in order."""
        for member_id, entry in self._entries.items():
            if isinstance(entry, tuple):
                if entry[STATUS] == status:
                    yield member_id, entry[EMAIL]
            elif entry.status == status:
                yield member_id, entry.email_address

    def move_to_front(self, member_ids: Iterable[str]) -> None:
        """Put these members first, the others after them in their order (in place)."""
        first = {member_id: self._entries[member_id] for member_id in member_ids}
        others = [(key, value) for key, value in self._entries.items() if key not in first]
        self._entries.clear()
        self._entries.update(first)
        self._entries.update(others)
