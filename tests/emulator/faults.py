"""Fault injection rules for one emulator node: match requests by method and path, then misbehave."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """One rule. `times` counts the matching calls it still applies to (None: forever)."""

    method: str | None
    path: re.Pattern
    status: int | None = None
    times: int | None = 1
    body: Any = None
    latency: float = 0.0
    cut_after: int | None = None
    corrupt: bool = False
    reset: bool = False
    retry_after: int | float | str | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path.search(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass
class Faults:
    """The node's active rules, first match wins; thread-safe."""

    rules: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, method: str | None = None, path: str = r".*", status: int | None = None, times: int | None = 1,
            body: Any = None, latency: float = 0.0, cut_after: int | None = None, corrupt: bool = False,
            reset: bool = False, retry_after: int | float | str | None = None) -> Fault:
        """Add a rule for the next `times` requests matching `method` (None: any) and the `path` regex.

        status: answer this code with Qdrant's error JSON (or `body`: dict -> JSON, str/bytes -> as is);
        latency: sleep this many seconds first; cut_after: send the full Content-Length but close after
        this many body bytes; corrupt: flip bytes of the body, size unchanged; reset: close the
        connection without any response; retry_after: the Retry-After header of the answer.
        """
        fault = Fault(method, re.compile(path), status, times, body, latency, cut_after, corrupt, reset, retry_after)
        with self._lock:
            self.rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first live rule matching this request, counted as used."""
        with self._lock:
            for fault in self.rules:
                if not fault.exhausted and fault.matches(method, path):
                    fault.hits += 1
                    if fault.exhausted:
                        self.rules.remove(fault)
                    return fault
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self.rules)
