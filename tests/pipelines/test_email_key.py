"""The email key: one normalisation everywhere (DESIGN.md, 'Email address keys')."""

from __future__ import annotations

import string

import email_validator
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge.email_key import (
    InvalidEmail,
    _fast_email_key,
    _slow_email_key,
    email_key,
    email_keys,
    try_email_key,
)

LOCAL = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=12)
LABEL = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)
DOMAIN = st.builds(lambda a, b: f"{a}.{b}", LABEL, st.sampled_from(["de", "com", "at", "ch", "org"]))
ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)


@given(ADDRESS)
def test_key_is_idempotent(address: str) -> None:
    key = email_key(address)
    assert email_key(key) == key


@given(ADDRESS, st.sampled_from([str.upper, str.lower, str.title, str.swapcase]))
def test_case_variants_share_one_key(address: str, variant: object) -> None:
    assert email_key(variant(address)) == email_key(address)  # type: ignore[operator]


@given(ADDRESS, st.sampled_from([" ", "\t", "  \n"]))
def test_surrounding_whitespace_is_ignored(address: str, space: str) -> None:
    assert email_key(f"{space}{address}{space}") == email_key(address)


@given(LOCAL, LOCAL, DOMAIN)
def test_dots_and_plus_tags_are_never_folded(first: str, second: str, domain: str) -> None:
    dotted = f"{first}.{second}@{domain}"
    joined = f"{first}{second}@{domain}"
    tagged = f"{first}+{second}@{domain}"
    assert len({email_key(dotted), email_key(joined), email_key(tagged), email_key(f"{first}@{domain}")}) == 4


def test_max_and_m_mustermann_are_different_people() -> None:
    assert email_key("max.mustermann@x.de") != email_key("m.mustermann@x.de")


@pytest.mark.parametrize(
    ("unicode_form", "ascii_form"),
    [
        ("dieter@müller.de", "dieter@xn--mller-kva.de"),
        ("Jörg@BÄCKEREI-KÖHLER.de", "jörg@xn--bckerei-khler-bfb2z.de"),
    ],
)
def test_idn_domains_fold_to_punycode(unicode_form: str, ascii_form: str) -> None:
    assert email_key(unicode_form) == email_key(ascii_form) == ascii_form


def test_unicode_normal_forms_share_one_key() -> None:
    composed = "j\u00f6rg@beispiel.de"
    decomposed = "jo\u0308rg@beispiel.de"
    assert email_key(composed) == email_key(decomposed)


@pytest.mark.parametrize(
    ("address", "reason_part"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("no-at-sign.de", "@-sign"),
        ("a@@beispiel.de", "invalid characters"),
        ("a..b@beispiel.de", "two periods"),
        ("@beispiel.de", "before the @-sign"),
        ("anna@beispiel.de.", "period"),
        ("anna@localhost", "period"),
    ],
)
def test_invalid_addresses_are_rejected_with_a_reason(address: str, reason_part: str) -> None:
    with pytest.raises(InvalidEmail) as caught:
        email_key(address)
    assert reason_part in caught.value.reason
    result = try_email_key(address)
    assert result.key is None and result.error is not None and reason_part in result.error


@given(st.text(max_size=30))
def test_any_text_gives_a_key_or_a_reason(text: str) -> None:
    result = try_email_key(text)
    assert (result.key is None) != (result.error is None)
    if result.key is not None:
        assert result.key == result.key.lower() or not result.key.isascii()
        assert email_key(result.key) == result.key


def test_column_of_addresses_keeps_order_and_nulls() -> None:
    keys, errors = email_keys(["A@B.de", None, "bad", "A@B.de"])
    assert keys.to_pylist() == ["a@b.de", None, None, "a@b.de"]
    assert errors.to_pylist()[0] is None and errors.to_pylist()[1] == "the address is missing"
    assert "@-sign" in errors.to_pylist()[2]


# Near-valid ASCII addresses for the fast path: the shapes it accepts and their neighbours just
# over each line the validator draws (characters, dots, hyphens, `--`, special-use and numeric
# top-level names, label, local-part, domain and address lengths), plus a few non-ASCII ones.
ATOM = st.text(alphabet=string.ascii_letters + string.digits + "_+-'", min_size=1, max_size=10)
NEAR_LOCAL = st.builds(
    lambda atoms, dot, lead, trail: lead + dot.join(atoms) + trail,
    st.lists(ATOM, min_size=1, max_size=4),
    st.sampled_from([".", ".", ".", ".", ".", ".."]),
    st.sampled_from(["", "", "", "", "", "."]),
    st.sampled_from(["", "", "", "", "", "."]),
)
# local parts of exactly 63, 64 and 65 characters
LONG_LOCAL = st.builds(
    lambda atom, size: (atom * 65)[: size - 2] + ".x",
    st.text(alphabet=string.ascii_letters + string.digits + ".+-", min_size=1, max_size=5),
    st.sampled_from([63, 64, 65]),
)
LABEL_CHARS = string.ascii_letters + string.digits + "-"
NEAR_LABEL = st.one_of(
    st.text(alphabet=LABEL_CHARS, min_size=1, max_size=12),
    st.text(alphabet=string.ascii_lowercase + string.digits, min_size=61, max_size=64),
    # Punycode (valid or not), R-LDH labels (`ab--`), hyphens and characters out of place
    st.sampled_from(
        ["xn--mller-kva", "XN--MLLER-KVA", "xn--zz", "ab--cd", "12--34", "a--b", "a-b", "-ab", "ab-", "0", "é", "a_b"]
    ),
    st.builds(lambda left, right: f"{left}--{right}", st.text(alphabet=LABEL_CHARS, max_size=3), LABEL),
)
TLD = st.sampled_from(
    [
        "de",
        "com",
        "DE",
        "Com",
        "io",
        "c",
        "museum",
        "local",
        "LOCAL",
        "localhost",
        "test",
        "invalid",
        "onion",
        "arpa",
        "in-addr.arpa",
        "123",
        "1a",
        "a1",
        "co-uk",
        "xn--p1ai",
        "example",
    ]
) | st.text(alphabet=LABEL_CHARS, min_size=1, max_size=64)
NEAR_DOMAIN = st.builds(
    lambda labels, tld, lead, trail: lead + ".".join([*labels, tld]) + trail,
    st.lists(NEAR_LABEL, min_size=1, max_size=3),
    TLD,
    st.sampled_from(["", "", "", "", "", "", ".", "-"]),
    st.sampled_from(["", "", "", "", "", "", ".", "-"]),
)


def padded_address(local: str, total: int, tld: str) -> str:
    """`local@...tld` exactly `total` characters long, with 60-character filler labels."""
    room = total - len(local) - 2 - len(tld)
    labels = []
    while room > 0:
        size = min(60, room) if room != 61 else 59  # never leave a label of 0 characters
        labels.append("a" * size)
        room -= size + 1
    return f"{local}@{'.'.join([*labels, tld])}" if room == -1 else f"{local}@{tld}"


# addresses of 250 to 257 characters: the validator's limit is 254 for the address, 253 for the domain
LONG_ADDRESS = st.builds(
    padded_address,
    st.sampled_from(["a", "Ab", "x.y", "first.last+tag"]),
    st.integers(min_value=250, max_value=257),
    st.sampled_from(["de", "com", "test", "123"]),
)
NEAR_ADDRESS = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", NEAR_LOCAL, NEAR_DOMAIN),
    st.builds(lambda local, domain: f"{local}@{domain}", LONG_LOCAL, NEAR_DOMAIN),
    ADDRESS,
    LONG_ADDRESS,
)
# the validator's other atom characters, characters it refuses anywhere or after the @-sign,
# other @-signs, and characters beyond ASCII it takes or refuses
ODD_CHARACTER = st.sampled_from(list('!#$%&*/=?^`{|}~_ "(),:;<>[]\\@＠äßÄ\u00a0\u200b\x00'))
NEAR_VALID = st.builds(
    lambda address, odd, space: f"{space}{address[: odd[0]]}{odd[1]}{address[odd[0] :]}{space}",
    NEAR_ADDRESS,
    st.tuples(st.integers(min_value=0, max_value=80), ODD_CHARACTER) | st.just((0, "")),
    st.sampled_from(["", " ", "\t", " \n", "\u00a0", "\x0b"]) | st.just(""),
)


def slow_answer(address: str) -> tuple[str | None, str | None]:
    """The validator path's key, or its reason for refusing."""
    try:
        return _slow_email_key(address), None
    except InvalidEmail as error:
        return None, error.reason


def assert_validators_answer(address: str) -> None:
    """The fast path accepts only what the validator path accepts, with its key; and email_key,
    the cached try_email_key and the Arrow kernels of email_keys answer as the validator does."""
    key, reason = slow_answer(address)
    fast = _fast_email_key(address)
    if fast is not None:
        assert (fast, None) == (key, reason)
    try:
        assert (email_key(address), None) == (key, reason)
    except InvalidEmail as error:
        assert (None, error.reason) == (key, reason)
    assert (try_email_key(address).key, try_email_key(address).error) == (key, reason)
    keys, errors = email_keys([address])
    assert (keys.to_pylist(), errors.to_pylist()) == ([key], [reason])


@settings(max_examples=1000, deadline=None)
@given(NEAR_ADDRESS)
def test_fast_path_gives_the_validators_answer(address: str) -> None:
    assert_validators_answer(address)


@settings(max_examples=1000, deadline=None)
@given(NEAR_VALID)
def test_fast_path_gives_the_validators_answer_around_odd_characters(address: str) -> None:
    assert_validators_answer(address)


@settings(max_examples=200, deadline=None)
@given(st.lists(NEAR_VALID | st.none(), max_size=20))
def test_column_keys_are_the_validators_row_by_row(addresses: list[str | None]) -> None:
    expected = [
        slow_answer(address) if address is not None else (None, "the address is missing") for address in addresses
    ]
    column = pa.array(addresses, type=pa.string())
    halves = pa.chunked_array([column[: len(addresses) // 2], column[len(addresses) // 2 :]])
    for given_as in (addresses, iter(addresses), column, column.cast(pa.large_string()), halves):
        keys, errors = email_keys(given_as)
        assert isinstance(keys, pa.Array) and isinstance(errors, pa.Array)
        assert keys.type == errors.type == pa.string()
        assert list(zip(keys.to_pylist(), errors.to_pylist(), strict=True)) == expected


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("Vorname.Nachname.42@Firma-42.de", "vorname.nachname.42@firma-42.de"),
        ("  Max.Mustermann+Newsletter@Beispiel.DE\n", "max.mustermann+newsletter@beispiel.de"),
        ("o'brien@mail.example.co.uk", "o'brien@mail.example.co.uk"),
        ("a_b-c@123.456.com", "a_b-c@123.456.com"),
        ("x" * 64 + "@beispiel.de", "x" * 64 + "@beispiel.de"),
        ("info@localhost.de", "info@localhost.de"),  # special-use only as the last labels
        ("anna@test.de", "anna@test.de"),
        ("a@" + "b" * 63 + ".de", "a@" + "b" * 63 + ".de"),
        (padded_address("a", 254, "de"), padded_address("a", 254, "de")),
    ],
)
def test_fast_path_takes_plain_addresses(address: str, key: str) -> None:
    assert _fast_email_key(address) == key
    assert _slow_email_key(address) == key


@pytest.mark.parametrize(
    "address",
    [
        # the validator refuses these
        "x" * 65 + "@beispiel.de",  # local part too long
        padded_address("a", 255, "de"),  # address too long
        "a@" + "b" * 64 + ".de",  # label too long
        "anna@beispiel.local",  # special-use names
        "anna@mail.LOCALHOST",
        "anna@x.test",
        "anna@b.invalid",
        "anna@b.onion",
        "anna@1.0.0.127.in-addr.arpa",
        "anna@beispiel.123",  # no letter at the end
        "anna@ab--cd.de",  # an R-LDH label
        "anna@-beispiel.de",  # dots and hyphens out of place
        "anna@beispiel-.de",
        "anna@beispiel.de.",
        ".anna@beispiel.de",
        "anna.@beispiel.de",
        "an..na@beispiel.de",
        "anna@beispiel..de",
        "anna@beispiel.de\u00a0",  # a no-break space is not trimmed
        # the validator accepts these, but the fast path leaves them to it
        "anna@xn--mller-kva.de",  # Punycode, for the validator to decode
        "anna@beispiel.c",  # a top-level name of one letter
        "anna@beispiel.a1",  # a digit in the top-level name
        "anna!x@beispiel.de",  # punctuation beyond `_+-'`
        "jörg@beispiel.de",  # beyond ASCII
    ],
)
def test_fast_path_leaves_the_rest_to_the_validator(address: str) -> None:
    assert _fast_email_key(address) is None
    key, reason = slow_answer(address)
    assert (try_email_key(address).key, try_email_key(address).error) == (key, reason)
    keys, errors = email_keys([address])
    assert (keys.to_pylist(), errors.to_pylist()) == ([key], [reason])


def test_special_use_names_are_read_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validator reads its special-use list at each call; so do both fast paths."""
    special_use = [*email_validator.SPECIAL_USE_DOMAIN_NAMES, "firma.de"]
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", special_use)
    try_email_key.cache_clear()  # the cache knows nothing of the change: no answers from before or after it
    try:
        for address in ("anna@firma.de", "anna@post.firma.de"):
            assert _fast_email_key(address) is None
            assert "special-use" in (slow_answer(address)[1] or "")
            assert "special-use" in (email_keys([address])[1].to_pylist()[0] or "")
        assert _fast_email_key("anna@notfirma.de") == "anna@notfirma.de"
    finally:
        try_email_key.cache_clear()


def test_items_that_are_not_strings_keep_their_reason() -> None:
    keys, errors = email_keys([b"anna@beispiel.de", "anna@beispiel.de", 7, "\ud800@beispiel.de"])  # type: ignore[list-item]
    assert keys.to_pylist() == [None, "anna@beispiel.de", None, None]
    assert errors.to_pylist()[:3] == ["not a string", None, "not a string"]
    assert errors.to_pylist()[3] is not None
