"""Credentials in URLs are masked wherever a URL is shown and never stored."""

from __future__ import annotations

import pytest

from mailbridge.urls import masked_url, url_has_password, url_has_userinfo, url_without_userinfo


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg://crm:Geheim-42@db.example.com:5432/crm",
            "postgresql+psycopg://crm:***@db.example.com:5432/crm",
        ),
        ("mysql+pymysql://crm:Ge@heim-42@db.example.com/crm", "mysql+pymysql://crm:***@db.example.com/crm"),
        ("postgresql://:Geheim-42@db/crm", "postgresql://:***@db/crm"),
        ("https://Geheim-42@us1.api.mailchimp.com/3.0", "https://***@us1.api.mailchimp.com/3.0"),
        ("https://api.example.com/v1?apikey=Geheim-42&fields=a", "https://api.example.com/v1?apikey=***&fields=a"),
        ("postgresql+psycopg://crm@db/crm?password=Geheim-42", "postgresql+psycopg://crm@db/crm?password=***"),
        # nothing secret: unchanged (a database user without a password is no secret)
        (
            "postgresql+psycopg://crm@db/crm?options=-csearch_path%3Dx",
            "postgresql+psycopg://crm@db/crm?options=-csearch_path%3Dx",
        ),
        ("sqlite:////srv/crm.sqlite", "sqlite:////srv/crm.sqlite"),
        ("http://[::1]:8421/3.0/lists/a1/members", "http://[::1]:8421/3.0/lists/a1/members"),
    ],
)
def test_masked_url_hides_every_credential(url: str, masked: str) -> None:
    assert masked_url(url) == masked


def test_urls_in_a_message_are_masked_and_the_rest_kept() -> None:
    message = "GET http://127.0.0.1:8421/3.0/lists still failing; the CRM at mysql://root:Geheim-42@db/crm is down."
    assert masked_url(message) == (
        "GET http://127.0.0.1:8421/3.0/lists still failing; the CRM at mysql://root:***@db/crm is down."
    )


def test_stored_urls_lose_their_userinfo() -> None:
    assert url_without_userinfo("https://mailbridge:Geheim-42@us1.api.mailchimp.com/3.0") == (
        "https://us1.api.mailchimp.com/3.0"
    )
    assert url_without_userinfo("http://127.0.0.1:8421/3.0") == "http://127.0.0.1:8421/3.0"


def test_what_counts_as_a_credential() -> None:
    assert url_has_password("postgresql://crm:x@db/crm") and url_has_password("postgresql://db/crm?password=x")
    assert not url_has_password("postgresql://crm@db/crm") and not url_has_password("mysql://root@db/crm?password=")
    assert url_has_userinfo("https://token@api.example.com") and not url_has_userinfo("https://api.example.com")
