"""Seeded fault injection and the request log, shared by every ESP emulator."""

from __future__ import annotations

import hashlib
import random
import re
import threading
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

# what a request can meet instead of a plain answer, in the order one roll picks among them
FAILURE_KINDS = (
    "429",  # Too Many Requests without Retry-After
    "429_retry_after",  # Too Many Requests with Retry-After
    "5xx",  # 500, 502, 503 or 504
    "reset",  # the connection is reset: no answer at all
    "timeout",  # no answer for hang_seconds, then the connection is closed; nothing applied
    "applied_timeout",  # writes: applied, then no answer for hang_seconds and the connection closed
    "truncated",  # 200 with the first half of the JSON body
    "malformed",  # 200 with a full-length body that is not valid JSON
    "offset_drift",  # paged member reads: members inserted or removed before the page's offset first
)


@dataclass
class FaultRates:
    """Probabilities per request. Slowness comes on top of at most one of the other kinds."""

    rate_429: float = 0.0
    rate_429_retry_after: float = 0.0
    rate_5xx: float = 0.0
    rate_reset: float = 0.0
    rate_timeout: float = 0.0
    rate_applied_timeout: float = 0.0
    rate_truncated: float = 0.0
    rate_malformed: float = 0.0
    rate_offset_drift: float = 0.0
    rate_slow: float = 0.0

    def rate_of(self, kind: str) -> float:
        rate: float = getattr(self, f"rate_{kind}")
        return rate


@dataclass
class FaultRule(FaultRates):
    """The rates for one kind of request: those matching every filter given."""

    method: str | None = None
    path_contains: str | None = None
    path_regex: str | None = None  # matched against the whole path
    # at most this many failures under these rates, then none (a single blip: limit 1)
    limit: int | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        return self.path_regex is None or re.fullmatch(self.path_regex, path) is not None


@dataclass
class FaultSettings(FaultRule):
    """The top-level rates and filters hold for requests that no rule in `rules` matches; the
    first matching rule's rates hold for the others. The seed makes a run repeatable: each
    request's draw depends only on the seed, the request (method, path, query, body) and how
    often that same request came before, not on the order concurrent requests arrive in."""

    seed: int = 0
    retry_after_seconds: float = 0.05
    slow_seconds: float = 0.2
    # how long a timeout holds the request before the connection is closed
    hang_seconds: float = 2.0
    # how many members an offset drift inserts or removes ahead of the page
    drift_members: int = 2
    rules: list[FaultRule] = field(default_factory=list)
    # a batch write holding any of these addresses is refused whole with 400
    poison_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.rules = [rule if isinstance(rule, FaultRule) else FaultRule(**rule) for rule in self.rules]
        self.poison_addresses = tuple(self.poison_addresses)
        for rates in (self, *self.rules):
            outside = [kind for kind in (*FAILURE_KINDS, "slow") if not 0.0 <= rates.rate_of(kind) <= 1.0]
            if outside:
                raise ValueError(f"fault rates must be between 0 and 1: {', '.join(outside)}")

    def rates_for(self, method: str, path: str) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(method, path):
                return rule
        return self if self.matches(method, path) else None


@dataclass(frozen=True)
class Fault:
    kind: str  # "slow" or one of FAILURE_KINDS
    # decides the fault's details (which 5xx, which members drift), repeatably
    seed: int = 0


class FaultInjector:
    """Decides, per request, which fault (if any) to inject; thread-safe and seeded."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(settings or FaultSettings())

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self.settings = settings
            self._seen: dict[str, int] = {}
            self._failures: dict[int, int] = {}  # per rule (by id): failures injected under it
            self.injected: dict[str, int] = {}

    def draw(
        self,
        path: str = "",
        method: str = "GET",
        *,
        signature: str = "",
        applicable: Collection[str] = FAILURE_KINDS,
    ) -> list[Fault]:
        """Faults for one request: at most one of the kinds `applicable` to it, optionally
        preceded by slowness. `signature` tells requests to the same path apart (query, body)."""
        with self._lock:
            s = self.settings
            rates = s.rates_for(method, path)
            if rates is None:
                return []
            request = f"{method.upper()} {path} {signature}"
            occurrence = self._seen.get(request, 0)
            self._seen[request] = occurrence + 1
            digest = hashlib.sha256(f"{s.seed}|{request}|{occurrence}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "big"))
            faults: list[Fault] = []
            if rates.rate_slow and rng.random() < rates.rate_slow:
                faults.append(Fault("slow"))
            roll = rng.random()
            threshold = 0.0
            spent = rates.limit is not None and self._failures.get(id(rates), 0) >= rates.limit
            for kind in () if spent else FAILURE_KINDS:
                if kind not in applicable:
                    continue
                threshold += rates.rate_of(kind)
                if roll < threshold:
                    faults.append(Fault(kind, rng.getrandbits(32)))
                    self._failures[id(rates)] = self._failures.get(id(rates), 0) + 1
                    break
            for fault in faults:
                self.injected[fault.kind] = self.injected.get(fault.kind, 0) + 1
            return faults

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {"settings": asdict(self.settings), "injected": dict(self.injected)}


@dataclass
class LoggedRequest:
    at: float
    account: str | None
    method: str
    path: str
    query: dict[str, str]
    status: int
    items: int | None = None
    fault: str | None = None


@dataclass
class RequestLog:
    """Every request the emulator answered, for tests that count what a connector asked."""

    entries: list[LoggedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.entries.append(entry)

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def snapshot(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self.entries)

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(entry) for entry in self.snapshot()]
