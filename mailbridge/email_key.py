"""The normalised email key that every system is matched on (DESIGN.md, ESP_APIS.md).

Every address is judged by email_validator plus the checks below (`_slow_email_key`). That
costs some 40 microseconds an address, over a quarter of a sync's extraction CPU, while almost
every real address is plain ASCII of a shape the validator certainly accepts. `_fast_email_key` recognises
only those shapes and gives the very key the validator path gives; whatever it is not certain
of (anything non-ASCII, unusual characters, special-use or Punycode domains, sizes near a limit)
it leaves to the validator, so the fast path can never accept what the slow one refuses and
never decides a refusal or its reason. tests/pipelines/test_email_key.py checks the two agree.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import email_validator
import pyarrow as pa
import pyarrow.compute as pc
from email_validator import EmailNotValidError, validate_email

# only ASCII white space is trimmed: anything else around an address (a no-break space, a
# control character) is refused, never silently dropped into another address's key
TRIMMED = " \t\r\n"
LOCAL_PART_MAX_OCTETS = 64  # RFC 5321 4.5.3.1.1, counted in UTF-8 for SMTPUTF8 (RFC 6531)
ADDRESS_MAX_OCTETS = 254  # RFC 3696 errata 1690; email_validator refuses longer addresses
# how many addresses' results try_email_key keeps: some 220 bytes each besides the address, so
# about 60 MB when full. A repeat within a sync is answered from memory; a miss costs a few
# microseconds for the common ASCII address since the fast path (email_keys does not even ask
# the cache for those), so the slow path's addresses are what the cache is for, and a bigger
# one buys little
KEY_CACHE_SIZE = 262_144
# The ASCII shapes the fast path accepts, each a subset of what email_validator 2.x accepts with
# strict=True and its defaults. Local part: dot-separated atoms of letters, digits and `_+-'`
# (the validator's dot-atom allows more punctuation; rarer characters take the slow path).
# Domain: two labels or more of letters, digits and inner hyphens, at most 63 long, under a
# top-level label of letters only (the validator wants the last character a letter and at least
# one dot). Sizes, `--` and special-use names are checked in `_fast_email_key`. The classes are
# explicit ASCII ranges, so Python's re and Arrow's RE2 (`email_keys`) read the pattern alike.
_FAST_PATTERN = (
    r"[A-Za-z0-9_+'-]+(?:\.[A-Za-z0-9_+'-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_FAST_ADDRESS = re.compile(_FAST_PATTERN, re.ASCII)
_FAST_ADDRESS_RE2 = f"^(?:{_FAST_PATTERN})$"  # RE2's `$` is the end of the text only
# email_validator.SPECIAL_USE_DOMAIN_NAMES as last read, and as `.name` suffixes
_special_use: tuple[list[str], tuple[str, ...]] = ([], ())
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
    key = _fast_email_key(address)
    return key if key is not None else _slow_email_key(address)


def _fast_email_key(address: str) -> str | None:
    """The key of a plain ASCII address `_slow_email_key` certainly accepts, else None.

    None means only "not certain": the caller then asks the slow path, which accepts or refuses.
    For an accepted shape the slow path's key is the stripped address lower-cased: NFC and IDNA
    leave ASCII as it is, and the validator lower-cases an ASCII domain.
    """
    candidate = address.strip(TRIMMED)
    # the validator's limit on the whole address; it also keeps the domain under its 253
    if len(candidate) > ADDRESS_MAX_OCTETS or _FAST_ADDRESS.fullmatch(candidate) is None:
        return None
    at = candidate.index("@")  # the pattern allows exactly one @-sign
    if at > LOCAL_PART_MAX_OCTETS:
        return None
    key = candidate.lower()
    domain = key[at + 1 :]
    # `--` in a label is Punycode (`xn--`) or an RFC 5890 reserved label: the validator decodes
    # or refuses those, so they are its to judge
    if "--" in domain:
        return None
    return None if _is_special_use(domain) else key


def _is_special_use(domain: str) -> bool:
    """Whether the validator refuses `domain` as one of its special-use names or under one."""
    global _special_use
    # its list is part of its API, which users may change, so it is read at each call as the
    # validator does; the suffixes for one str.endswith are rebuilt only when it has changed
    names = email_validator.SPECIAL_USE_DOMAIN_NAMES
    copy, suffixes = _special_use
    if names != copy:
        copy, suffixes = list(names), tuple(f".{name}" for name in names)
        _special_use = (copy, suffixes)
    return f".{domain}".endswith(suffixes)


def _slow_email_key(address: str) -> str:
    """email_key for any string, by email_validator and the checks it lacks; raises InvalidEmail."""
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


class KeptResults(Protocol):
    """Results kept from earlier syncs (`mailbridge.key_store.KeyStore`)."""

    def get(self, address: str) -> EmailKeyResult | None: ...

    def __setitem__(self, address: str, result: EmailKeyResult) -> None: ...


# the results of earlier syncs, while a sync's extraction keeps them (`key_store.kept_keys`)
_kept: KeptResults | None = None


def _judged(address: str | None) -> EmailKeyResult:
    """try_email_key for an address the fast path left, first asking the kept results."""
    kept = _kept
    if kept is None or not isinstance(address, str):
        return try_email_key(address)
    result = kept.get(address)
    if result is None:
        result = try_email_key(address)
        kept[address] = result
    return result


@lru_cache(maxsize=KEY_CACHE_SIZE)
def try_email_key(address: str | None) -> EmailKeyResult:
    """Like email_key, but returns the reason instead of raising.

    Cached (KEY_CACHE_SIZE addresses, least recently used dropped): one sync sees the same
    address in members, sent-to, activity and the CRM.
    """
    if address is None:
        return EmailKeyResult(None, "the address is missing")
    try:
        return EmailKeyResult(email_key(address), None)
    except InvalidEmail as error:
        return EmailKeyResult(None, error.reason)


def email_keys(addresses: Iterable[str | None] | pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """Keys and validation errors for a column of addresses, as two Arrow string arrays.

    `addresses` may be an Arrow string column. A column of strings and nulls is judged by Arrow
    kernels doing what `_fast_email_key` does, a few hundred nanoseconds an address; the
    addresses they are not certain of, and any column holding something else, go through
    try_email_key one by one.
    """
    if isinstance(addresses, pa.ChunkedArray):
        addresses = addresses.combine_chunks()
    if isinstance(addresses, pa.Array):
        if addresses.type in (pa.string(), pa.large_string()):
            return _email_keys_arrow(addresses.cast(pa.string()))
        addresses = addresses.to_pylist()
    items = addresses if isinstance(addresses, list) else list(addresses)
    # pa.array would turn bytes into a string, which try_email_key refuses: such items go one by one
    if all(item is None or type(item) is str for item in items):
        try:
            column = pa.array(items, type=pa.string())
        except (pa.ArrowException, ValueError, TypeError):  # a lone surrogate: not UTF-8
            pass
        else:
            if isinstance(column, pa.Array):  # not the chunks of a column past 2 GiB
                return _email_keys_arrow(column, items)
    return _email_keys_one_by_one(items)


def _email_keys_one_by_one(items: Iterable[object]) -> tuple[pa.Array, pa.Array]:
    keys: list[str | None] = []
    errors: list[str | None] = []
    for item in items:
        result = _judged(item)  # type: ignore[arg-type]  # a non-string gets its reason
        keys.append(result.key)
        errors.append(result.error)
    return pa.array(keys, type=pa.string()), pa.array(errors, type=pa.string())


def _email_keys_arrow(column: pa.Array, items: list[str | None] | None = None) -> tuple[pa.Array, pa.Array]:
    """email_keys of a string array: `_fast_email_key`'s conditions as Arrow kernels, the rest
    by try_email_key. `items` are the column's values when the caller has them as a list."""
    trimmed = pc.utf8_trim(column, characters=TRIMMED)
    lowered = pc.utf8_lower(trimmed)
    conditions = [
        pc.match_substring_regex(trimmed, _FAST_ADDRESS_RE2),
        pc.less_equal(pc.utf8_length(trimmed), ADDRESS_MAX_OCTETS),
        # the pattern allows one @-sign, so its offset is the local part's length in ASCII
        pc.less_equal(pc.find_substring(trimmed, "@"), LOCAL_PART_MAX_OCTETS),
        pc.invert(pc.match_substring_regex(trimmed, "@.*--")),
    ]
    # the domain is the address's end: the domain is a special-use name (`@name`) or under one
    # (`.name`) exactly when the address ends so; one pattern for every name (RE2's `$` is the
    # end of the text only)
    names = email_validator.SPECIAL_USE_DOMAIN_NAMES
    if names:
        special = "[@.](?:" + "|".join(re.escape(name) for name in names) + ")$"
        conditions.append(pc.invert(pc.match_substring_regex(lowered, special)))
    fast = conditions[0]
    for condition in conditions[1:]:
        fast = pc.and_(fast, condition)
    fast = pc.fill_null(fast, False)  # a missing address: try_email_key says so
    slow_indices = pc.indices_nonzero(pc.invert(fast))
    slow_rows = slow_indices.to_pylist()
    slow_values = [items[row] for row in slow_rows] if items is not None else column.take(slow_indices).to_pylist()
    keys: list[str | None] = [None] * len(column)
    errors: list[str | None] = [None] * len(column)
    for row, value in zip(slow_rows, slow_values, strict=True):
        result = _judged(value)
        keys[row] = result.key
        errors[row] = result.error
    return pc.if_else(fast, lowered, pa.array(keys, type=pa.string())), pa.array(errors, type=pa.string())


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
    result = _judged(entry)
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
    keys, errors = email_keys(table.column(address_column))
    return table.append_column("email_key", keys).append_column("email_error", errors)
