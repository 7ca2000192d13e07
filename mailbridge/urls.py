"""Credentials in URLs: masked wherever a URL is printed or logged, never stored.

One rule everywhere: a URL's password (`scheme://user:PASSWORD@host`), the whole userinfo of
an http(s) URL (`https://TOKEN@host`: there the user part is the credential) and the values
of query parameters that carry secrets (`?password=…`, `?apikey=…`) are credentials.
"""

from __future__ import annotations

import re

MASK = "***"

# query parameters whose value is a secret (database drivers and HTTP APIs)
SECRET_QUERY_PARAMETERS = (
    "password",
    "passwd",
    "pwd",
    "pass",
    "sslpassword",
    "secret",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "odbc_connect",
)

# scheme://user[:password]@host ; an unencoded password may hold anything but white space:
# the userinfo ends at the last '@' before the host's end
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:/?#@\[\]]*)(?::(?P<password>\S*?))?"
    r"@(?=[^\s@/?#]*(?:[/?#\s]|$))"
)
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;](?:" + "|".join(SECRET_QUERY_PARAMETERS) + r")=)(?P<value>[^&;#\s]*)", re.IGNORECASE
)


def _is_http(scheme: str) -> bool:
    return scheme.lower().rstrip(":/") in ("http", "https")


def masked_url(text: str) -> str:
    """`text` (one URL, or a message with URLs in it) with every credential replaced by ***;
    the user of a database URL stays, so the message still says who connects."""

    def userinfo(match: re.Match[str]) -> str:
        scheme, user, password = match["scheme"], match["user"], match["password"]
        if password is not None:
            return f"{scheme}{user}:{MASK}@"
        return f"{scheme}{MASK}@" if _is_http(scheme) and user else match[0]

    masked = _USERINFO.sub(userinfo, text)
    return _SECRET_QUERY.sub(lambda match: match["name"] + (MASK if match["value"] else ""), masked)


def url_without_userinfo(url: str) -> str:
    """The URL as it may be stored: no userinfo at all, secret query values masked."""
    return masked_url(_USERINFO.sub(lambda match: match["scheme"], url))


def url_has_password(url: str) -> bool:
    """True when the URL carries a password, in its userinfo or a query parameter."""
    match = _USERINFO.search(url)
    return (match is not None and match["password"] is not None) or _has_secret_query(url)


def url_has_userinfo(url: str) -> bool:
    """True when the URL has `user@` or `user:password@` before its host, or a secret query value."""
    return _USERINFO.search(url) is not None or _has_secret_query(url)


def _has_secret_query(url: str) -> bool:
    return any(match["value"] for match in _SECRET_QUERY.finditer(url))
