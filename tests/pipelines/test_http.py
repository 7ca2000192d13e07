"""The ESP HTTP client's JSON decoding: fast, and accepting exactly what the standard library does."""

from __future__ import annotations

import json

import pytest

from pipelines.http import decode_json

BODIES = [
    b'{"members": [{"id": "a", "email_address": "a@x.de"}], "total_items": 1}',
    '{"name": "Jürgen Groß"}'.encode(),
    b'{"rating": NaN}',  # the standard library reads NaN; orjson refuses it
    b'{"id": 123456789012345678901234567890}',  # beyond 64 bits
    b'{"email_address": "\\ud800@x.de"}',  # a lone surrogate: the address is refused later, not the page
    b'{"a": 1, "a": 2}',
]


@pytest.mark.parametrize("body", BODIES)
def test_a_body_decodes_as_the_standard_library_decodes_it(body: bytes) -> None:
    decoded = decode_json(body)
    expected = json.loads(body)
    assert json.dumps(decoded, sort_keys=True) == json.dumps(expected, sort_keys=True)


@pytest.mark.parametrize("body", [b'{"members": [', b"\xff\xfe", b"", b"<html>busy</html>"])
def test_an_unreadable_body_is_refused_as_before(body: bytes) -> None:
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        decode_json(body)
