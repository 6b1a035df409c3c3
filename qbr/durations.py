"""Durations as people write them in manifests and flags: 15m, 4h, 30d, 1h30m, 2w.

Kept apart from the manifest so the CLI (`--lock-timeout 30s`) and the planner read
durations the same way.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"^(?:\d+[smhdw])+$")

# Anything longer than this is a typo, not a policy (and would overflow timedelta).
MAX_DURATION = timedelta(days=365 * 200)


def parse_duration(text: str) -> timedelta:
    """Parse '15m', '4h', '30d', '1h30m'; raise ValueError with a plain reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 15m, 4h or 30d, got {text!r}")
    cleaned = text.strip().lower()
    if not _WHOLE.match(cleaned):
        raise ValueError(
            f"{text!r} is not a duration: use a number and a unit (s, m, h, d, w), such as 15m, 4h or 30d"
        )
    seconds = 0
    for number, unit in _PART.findall(cleaned):
        if len(number) > 12:
            raise ValueError(f"{text!r} is too long a duration")
        seconds += int(number) * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():  # checked before timedelta(), which overflows first
        raise ValueError(f"{text!r} is too long a duration (the limit is 200 years)")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta compactly: 1d2h, 15m, 0s. Inverse of parse_duration for whole seconds."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
