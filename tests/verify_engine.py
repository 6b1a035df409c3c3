"""A PointCounter (qbr.verify.engine) for the emulator's snapshot archives.

The emulator keeps a shard's points in `segments/points.jsonl`, one JSON point a line (see
tests/emulator/archive.py), a format that is its own: Qdrant's engine cannot open it and qbr does
not know it. Tests that want verify --deep to count an emulator archive's points select this
counter as a user would select any other:

    QBR_DEEP_ENGINE=tests.verify_engine:EmulatorPointCounter
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import IO

SELECT = "tests.verify_engine:EmulatorPointCounter"  # the QBR_DEEP_ENGINE value
POINTS_MEMBER = "segments/points.jsonl"
LINE_CHUNK = 1 << 16


class EmulatorPointCounter:
    """Counts the non-blank lines of a shard's segments/points.jsonl (the emulator skips blank lines too)."""

    name = "the emulator's point counter"
    method = "lines of segments/points.jsonl"

    def count(self, shard_snapshot: Path, scratch: Path) -> int:
        with tarfile.open(shard_snapshot, "r:") as tar:
            for member in tar:
                if member.name.removeprefix("./") == POINTS_MEMBER and member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    return _count_lines(handle)
        raise ValueError(f"the shard holds no {POINTS_MEMBER}: not an emulator shard")


def _count_lines(handle: IO[bytes]) -> int:
    """Non-blank lines of a member, read in pieces."""
    count = 0
    carry = b""
    while True:
        piece = handle.read(LINE_CHUNK)
        if not piece:
            break
        lines = (carry + piece).split(b"\n")
        carry = lines.pop()
        count += sum(1 for line in lines if line.strip())
    return count + (1 if carry.strip() else 0)
