"""A ShardReader (qbr.apply.archive_reader) for the emulator's snapshot archives.

The emulator keeps a shard's points in `segments/points.jsonl`, one JSON point a line (see
tests/emulator/archive.py), a format of its own that Qdrant's engine cannot open. Tests that copy
from an emulator archive select this reader as a user would select any other:

    QBR_COPY_ENGINE=tests.copy_engine:EmulatorShardReader
"""

from __future__ import annotations

import bisect
import json
import tarfile
from pathlib import Path
from typing import Any

from qbr.apply.copy_streams import id_key

SELECT = "tests.copy_engine:EmulatorShardReader"  # the QBR_COPY_ENGINE value
POINTS_MEMBER = "segments/points.jsonl"


class EmulatorShardReader:
    name = "the emulator's shard reader"

    def open(self, shard_snapshot: Path, scratch: Path) -> _Pages:
        with tarfile.open(shard_snapshot, "r:") as tar:
            for member in tar:
                if member.name.removeprefix("./") == POINTS_MEMBER and member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    points = [json.loads(line) for line in handle.read().splitlines() if line.strip()]
                    return _Pages(sorted(points, key=lambda p: id_key(p["id"])))
        raise ValueError(f"the shard holds no {POINTS_MEMBER}: not an emulator shard")


class _Pages:
    def __init__(self, points: list[dict]) -> None:
        self.points = points
        self.keys = [id_key(p["id"]) for p in points]

    def scroll(self, offset: Any, limit: int) -> tuple[list[dict], Any]:
        start = 0 if offset is None else bisect.bisect_left(self.keys, id_key(offset))
        page = self.points[start:start + limit]
        after = self.points[start + limit]["id"] if start + limit < len(self.points) else None
        return [{"id": p["id"], "vector": p["vector"], "payload": p.get("payload") or {}} for p in page], after

    def close(self) -> None:
        return None
