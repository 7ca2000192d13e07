"""The normalised email key that every system is matched on (DESIGN.md, ESP_APIS.md)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
from email_validator import EmailNotValidError, validate_email

# only ASCII white space is trimmed: anything else around an address (a no-break space, a
# control character) is refused, never silently dropped into another address's key
TRIMMED = " \t\r\n"
LOCAL_PART_MAX_OCTETS = 64  # RFC 5321 4.5.3.1.1, counted in UTF-8 for SMTPUTF8 (RFC 6531)
# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt) and the braille
# blank: characters that render as nothing. IDNA silently drops some of them from a domain,
# which would give the address the key of the clean one; a local part would get a key that
# looks like another's. Either way the address is refused.
INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# scripts that may share one domain label or local-part atom (UTS #39 "highly restrictive"):
# Japanese, Chinese and Korean writing mix scripts, and each may mix with Latin; any other
# mix (Latin with Cyrillic or Greek look-alikes) is refused
SCRIPT_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


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
    candidate = unicodedata.normalize("NFC", address.strip(TRIMMED))
    if not candidate:
        raise InvalidEmail(address, "the address is empty")
    hidden = _hidden_character(candidate)
    if hidden is not None:
        raise InvalidEmail(address, hidden)
    try:
        # strict: the local part's RFC 5321 length limit too; quoted local parts, comments and
        # IP-literal domains stay refused (email_validator's defaults): no ESP takes them
        validated = validate_email(candidate, check_deliverability=False, allow_smtputf8=True, strict=True)
    except EmailNotValidError as error:
        raise InvalidEmail(address, str(error)) from None
    octets = len(validated.local_part.encode("utf-8"))
    if octets > LOCAL_PART_MAX_OCTETS:
        raise InvalidEmail(
            address,
            f"The email address is too long before the @-sign ({octets} bytes, at most {LOCAL_PART_MAX_OCTETS}).",
        )
    for kind, parts in (
        ("part before the @-sign", validated.local_part.split(".")),
        ("domain label", validated.domain.split(".")),
    ):
        for part in parts:
            mixed = _mixed_scripts(part)
            if mixed is not None:
                raise InvalidEmail(
                    address, f"The {kind} {part!r} mixes {mixed} letters, a look-alike of another address."
                )
    local_part = unicodedata.normalize("NFC", validated.local_part).lower()
    return f"{local_part}@{validated.ascii_domain.lower()}"


def _hidden_character(text: str) -> str | None:
    """Why `text` holds a character no reader can see (invisible, or a control), or None."""
    if text.isascii() and text.isprintable():
        return None
    for char in text:
        code = ord(char)
        category = unicodedata.category(char)
        if category == "Cc":
            return f"The email address contains a control character: U+{code:04X}."
        if category in ("Cf", "Zl", "Zp") or any(low <= code <= high for low, high in INVISIBLE_RANGES):
            name = unicodedata.name(char, "unnamed")
            return f"The email address contains an invisible character: U+{code:04X} {name}."
    return None


def _script(char: str) -> str | None:
    """The script of a letter, from its Unicode name; None for what every script uses
    (digits, hyphens, combining marks, length marks)."""
    if not char.isalpha():
        return None
    words = unicodedata.name(char, "").split()
    while words and words[0] in ("FULLWIDTH", "HALFWIDTH"):
        words = words[1:]
    if not words or words[0] == "MODIFIER" or "-" in words[0]:
        return None
    return "HAN" if words[0] in ("CJK", "IDEOGRAPHIC") else words[0]


def _mixed_scripts(part: str) -> str | None:
    """'Latin and Cyrillic' when one label or atom mixes scripts no language mixes, else None."""
    if part.isascii():
        return None
    scripts = {script for script in map(_script, part) if script is not None}
    if len(scripts) <= 1 or any(scripts <= allowed for allowed in SCRIPT_MIXES):
        return None
    return " and ".join(sorted(script.title() for script in scripts))


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
