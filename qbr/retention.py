"""Retention policy (restic semantics). Pure: no I/O, no clock.

(The decision function is being written; the policy dataclass is shared with the manifest.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetentionPolicy:
    """How many sets to keep per rule; None means the rule is not set."""

    keep_last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    within: timedelta | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in ("keep_last", "hourly", "daily", "weekly", "monthly", "yearly", "within"))
