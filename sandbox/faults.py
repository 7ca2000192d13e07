"""Seeded fault injection and the request log, shared by every ESP emulator."""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FaultSettings:
    """Rates are probabilities per request; the seed makes a run repeatable."""

    seed: int = 0
    rate_429: float = 0.0
    rate_429_retry_after: float = 0.0
    retry_after_seconds: float = 0.05
    rate_5xx: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 0.2
    rate_truncated: float = 0.0
    # only requests whose path contains this are faulted (None: every request)
    path_contains: str | None = None
    # a batch write holding any of these addresses is refused whole with 400
    poison_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fault:
    kind: str  # "429", "429_retry_after", "5xx", "slow", "truncated"


class FaultInjector:
    """Decides, per request, which fault (if any) to inject; thread-safe and seeded."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(settings or FaultSettings())

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self.settings = settings
            self._random = random.Random(settings.seed)
            self.injected: dict[str, int] = {}

    def draw(self, path: str = "") -> list[Fault]:
        """Faults for one request: at most one failure, optionally preceded by slowness."""
        with self._lock:
            s = self.settings
            if s.path_contains is not None and s.path_contains not in path:
                return []
            faults: list[Fault] = []
            if s.rate_slow and self._random.random() < s.rate_slow:
                faults.append(Fault("slow"))
            roll = self._random.random()
            threshold = 0.0
            for kind, rate in (
                ("429", s.rate_429),
                ("429_retry_after", s.rate_429_retry_after),
                ("5xx", s.rate_5xx),
                ("truncated", s.rate_truncated),
            ):
                threshold += rate
                if roll < threshold:
                    faults.append(Fault(kind))
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
