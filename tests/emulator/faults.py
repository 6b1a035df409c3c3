"""Fault injection rules for one emulator node: match requests by method and path, then misbehave.

Most faults strike before the work (the call has no effect). `after_work` faults let the handler
run to the end, so its effect happens, and then lose the answer: what a client sees when a live
server finishes the job but the connection drops, or answers after the client gave up.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

AFTER_WORK = ("reset", "hang", "cut")


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
    after_work: str | None = None  # "reset", "hang" or "cut": the work is done, the answer is lost
    hold: float = 10.0  # seconds a "hang" keeps the answer back
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
            reset: bool = False, retry_after: int | float | str | None = None, after_work: str | None = None,
            hold: float = 10.0) -> Fault:
        """Add a rule for the next `times` requests matching `method` (None: any) and the `path` regex.

        status: answer this code with Qdrant's error JSON (or `body`: dict -> JSON, str/bytes -> as is);
        latency: sleep this many seconds first; cut_after: send the full Content-Length but close after
        this many body bytes; corrupt: flip bytes of the body, size unchanged; reset: close the
        connection without any response; retry_after: the Retry-After header of the answer.

        after_work: run the handler completely (snapshot made, collection created, upload received
        and recovered...), then "reset": close with RST, no response; "hang": keep the answer back
        `hold` seconds (until the client has timed out), then send it; "cut": send the status line
        and headers (with the full Content-Length) and close before the body.
        """
        if after_work not in (None, *AFTER_WORK):
            raise ValueError(f"after_work must be one of {', '.join(AFTER_WORK)}")
        if after_work is not None and (status is not None or reset):
            raise ValueError("after_work faults let the work run; they cannot answer a status or reset before it")
        fault = Fault(method, re.compile(path), status, times, body, latency, cut_after, corrupt, reset, retry_after,
                      after_work, hold)
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
