"""HTTP for the ESP connectors: bounded connections, bounded retries, Retry-After honoured."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from mailbridge.urls import masked_url

# httpx is imported where a request is made: the connectors are imported wherever their sources
# are built (the Dagster code location), and importing httpx takes up to a fifth of a second
if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# answers after which the request may still have taken effect (a gateway gave up waiting)
UNCERTAIN_STATUS = frozenset({408, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_retry_after_seconds: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server sent one (capped), else exponential backoff with jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_seconds)
        base: float = min(self.backoff_seconds * (2**attempt), self.max_backoff_seconds)
        return base * (0.5 + random.random() / 2)


class EspApiError(Exception):
    """An ESP answered with an error that retrying will not fix, or retries ran out."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        detail: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.retryable = retryable


class EspAuthError(EspApiError):
    """The ESP refused the credentials (401/403)."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# a run of 20 digits or more may be an integer beyond 64 bits, which orjson reads as a float
LONG_DIGITS = re.compile(rb"\d{20,}")


def decode_json(body: bytes) -> Any:
    """A JSON body, parsed by orjson (a large page in a fraction of the time). What orjson reads
    otherwise than the standard library (it refuses NaN and lone surrogates, and turns integers
    beyond 64 bits into floats) is read by the standard library, so the same bodies are
    accepted, refused and valued alike."""
    if LONG_DIGITS.search(body):
        return json.loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def problem_details(response: httpx.Response) -> tuple[str | None, str | None]:
    """`title` and `detail` of an application/problem+json body, if it has one."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    return body.get("title"), body.get("detail")


class EspHttpClient:
    """A thread-safe JSON client for one ESP account.

    At most `max_connections` requests are in flight at once (the ESPs count
    simultaneous connections). Transport errors, truncated bodies, 429 and 5xx are
    retried with backoff; Retry-After is honoured up to a cap, and retries are bounded.
    """

    def __init__(
        self,
        *,
        base_url: str,
        account_label: str,
        credential_hint: str,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 10,
        timeout_seconds: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        import httpx

        self.account_label = account_label
        self.credential_hint = credential_hint
        self.retry = retry or RetryPolicy()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            auth=auth,
            headers=dict(headers or {}),
            timeout=timeout_seconds,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self.requests_sent = 0
        self.retries = 0
        self._last = threading.local()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EspHttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Any:
        """Send one request and return its decoded JSON body (None for 204)."""
        import httpx

        # transport errors raised before the request left: it cannot have taken effect
        not_sent_errors = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
        last_problem = "no attempt made"
        uncertain = False  # an attempt may have taken effect without an answer
        for attempt in range(self.retry.max_retries + 1):
            retry_after: float | None = None
            self._last.resent_after_uncertain = uncertain
            try:
                with self._slots:
                    self.requests_sent += 1
                    response = self._client.request(method, path.lstrip("/"), params=params, json=json_body)
                    body = response.content  # read fully inside the slot
            except httpx.TransportError as error:
                last_problem = f"{type(error).__name__}: {error}"
                uncertain = uncertain or not isinstance(error, not_sent_errors)
            else:
                uncertain = uncertain or response.status_code in UNCERTAIN_STATUS
                if response.status_code in (401, 403):
                    title, detail = problem_details(response)
                    raise EspAuthError(
                        f"{self.account_label}: the ESP refused the credentials "
                        f"({response.status_code} {title or response.reason_phrase}). "
                        f"{self.credential_hint}",
                        status=response.status_code,
                        title=title,
                        detail=detail,
                    )
                if response.status_code in RETRYABLE_STATUS:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    last_problem = f"HTTP {response.status_code}"
                elif response.status_code >= 400:
                    title, detail = problem_details(response)
                    raise EspApiError(
                        f"{self.account_label}: {method} {path} failed with {response.status_code} "
                        f"{title or response.reason_phrase}: {detail or ''}".rstrip(": "),
                        status=response.status_code,
                        title=title,
                        detail=detail,
                    )
                elif response.status_code == 204 or not body:
                    return None
                else:
                    try:
                        return decode_json(body)
                    except (json.JSONDecodeError, UnicodeDecodeError) as error:
                        last_problem = f"unreadable body ({error})"
                        uncertain = True  # it was answered, so it took effect: only the answer is lost
            if attempt == self.retry.max_retries:
                break
            self.retries += 1
            pause = self.retry.delay(attempt, retry_after)
            log.info("%s: %s %s: %s, retrying in %.2fs", self.account_label, method, path, last_problem, pause)
            time.sleep(pause)
        url = masked_url(f"{self._client.base_url}{path.lstrip('/')}")
        raise EspApiError(
            f"{self.account_label}: {method} {url} still failing after "
            f"{self.retry.max_retries + 1} attempts ({last_problem})",
            retryable=True,
        )

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request_json("GET", path, params=params)

    def resent_after_uncertain(self) -> bool:
        """Whether this thread's last request was answered only after an earlier attempt that
        may have taken effect unanswered (a timeout, a dropped connection, a gateway error).
        A write's answer then may describe the world after that attempt: "already a member",
        "not found", "already sent" can be its own doing."""
        return bool(getattr(self._last, "resent_after_uncertain", False))
