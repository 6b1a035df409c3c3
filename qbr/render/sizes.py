"""The one human-size formatter: 1536 -> '1.5 KiB'."""

from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(size: float | None, *, unknown: str = "size known after the backup runs") -> str:
    """Whole bytes below 1 KiB, one decimal above; `unknown` for None."""
    if size is None:
        return unknown
    value = float(size)
    for unit in UNITS:
        if value < 1024 or unit == UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
