"""The normalised email key that every system is matched on (DESIGN.md, ESP_APIS.md)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
from email_validator import EmailNotValidError, validate_email


class InvalidEmail(ValueError):
    """An address that is not valid syntax; `reason` says why."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"invalid email address {address!r}: {reason}")
        self.address = address
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EmailKeyResult:
    key: str | None
    error: str | None


def email_key(address: str) -> str:
    """Return the match key of `address`: stripped, NFC, punycode domain, lower-cased.

    Dots and `+tags` are never folded: they can name different people.
    Raises InvalidEmail with the validator's reason when the syntax is not valid.
    """
    if not isinstance(address, str):
        raise InvalidEmail(repr(address), "not a string")
    candidate = unicodedata.normalize("NFC", address.strip())
    if not candidate:
        raise InvalidEmail(address, "the address is empty")
    try:
        validated = validate_email(candidate, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as error:
        raise InvalidEmail(address, str(error)) from None
    local_part = unicodedata.normalize("NFC", validated.local_part).lower()
    return f"{local_part}@{validated.ascii_domain.lower()}"


@lru_cache(maxsize=2_000_000)
def try_email_key(address: str | None) -> EmailKeyResult:
    """Like email_key, but returns the reason instead of raising.

    Cached: one sync sees the same address in members, sent-to, activity and the CRM.
    """
    if address is None:
        return EmailKeyResult(None, "the address is missing")
    try:
        return EmailKeyResult(email_key(address), None)
    except InvalidEmail as error:
        return EmailKeyResult(None, error.reason)


def email_keys(addresses: Iterable[str | None]) -> tuple[pa.Array, pa.Array]:
    """Keys and validation errors for a column of addresses, as two Arrow string arrays."""
    keys: list[str | None] = []
    errors: list[str | None] = []
    for address in addresses:
        result = try_email_key(address)
        keys.append(result.key)
        errors.append(result.error)
    return pa.array(keys, type=pa.string()), pa.array(errors, type=pa.string())


def domain_key(domain: str) -> str:
    """The match form of a domain: NFC, punycode, lower-cased; raises InvalidEmail."""
    key = email_key(f"x@{domain.strip()}")
    return key.partition("@")[2]


@dataclass(frozen=True, slots=True)
class BlocklistKey:
    key: str | None  # an address entry's email key
    domain: str | None  # a `*@domain` entry's domain key
    error: str | None  # why the entry is neither


def blocklist_key(entry: str | None) -> BlocklistKey:
    """The key of one blocklist entry: an address gets an email key, `*@domain` a domain key."""
    text = (entry or "").strip()
    if text.startswith("*@"):
        try:
            return BlocklistKey(None, domain_key(text[2:]), None)
        except InvalidEmail as error:
            return BlocklistKey(None, None, error.reason)
    result = try_email_key(entry)
    return BlocklistKey(result.key, None, result.error)


def blocklist_keys(entries: Iterable[str | None]) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Keys of blocklist entries (see `blocklist_key`), as three Arrow string arrays."""
    results = [blocklist_key(entry) for entry in entries]
    return (
        pa.array([result.key for result in results], type=pa.string()),
        pa.array([result.domain for result in results], type=pa.string()),
        pa.array([result.error for result in results], type=pa.string()),
    )


def with_email_key(table: pa.Table, address_column: str) -> pa.Table:
    """Append `email_key` and `email_error` columns computed from `address_column`."""
    keys, errors = email_keys(table.column(address_column).to_pylist())
    return table.append_column("email_key", keys).append_column("email_error", errors)
