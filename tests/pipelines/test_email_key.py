"""The email key: one normalisation everywhere (DESIGN.md, 'Email address keys')."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbridge.email_key import InvalidEmail, email_key, email_keys, try_email_key

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
