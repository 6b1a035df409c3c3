"""Where a logical copy reads its points: the live source collection (scrolled over REST on the
backup's cluster), or a set's archives (read offline, shard by shard, with Qdrant's engine).

Both say the same things to qbr.apply.logical_copy: the config and payload indexes the target is
created from, its shard keys (custom sharding), the streams to copy (name, shard key), how many
points the source holds, and one page of a stream from an offset.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from qbr.actions import CopyCollection
from qbr.apply.archive_reader import ArchiveShards, ShardPages, choose_reader
from qbr.apply.at_rest import read_collection
from qbr.apply.copy_streams import Stream
from qbr.apply.target_shape import live_shard_keys
from qbr.records import CollectionRecord

WHOLE = "*"  # the stream of a live collection without custom sharding


class LiveSource:
    """The live collection on the backup's cluster: one stream, or one per shard key."""

    kind = "live"

    def __init__(self, conn: Any, p: CopyCollection) -> None:
        self.client, self.collection = conn.seed(p.source_cluster), p.source_collection
        info = self.client.collection_info(p.source_collection)
        self.config: dict[str, Any] = info.get("config") or {}
        self.payload_schema: dict[str, Any] = info.get("payload_schema") or {}
        custom = (self.config.get("params") or {}).get("sharding_method") == "custom"
        self.keys = live_shard_keys(conn, p.source_cluster, p.source_collection) if custom else []
        self.streams = [(json.dumps(k, sort_keys=True), k) for k in self.keys] if custom else [(WHOLE, None)]

    def count(self) -> int:
        return self.client.count_points(self.collection, exact=True)

    def read(self, stream: Stream, offset: Any, limit: int) -> tuple[list[dict], Any]:
        points, after = self.client.scroll_page(self.collection, offset=offset, limit=limit, shard_key=stream.shard_key)
        return [{k: point[k] for k in ("id", "vector", "payload") if k in point} for point in points], after

    def close(self) -> None:
        return None


class ArchiveSource:
    """A set's archives of the collection: one stream per shard, read offline in `scratch`."""

    kind = "archive"

    def __init__(self, conn: Any, p: CopyCollection, scratch: Path) -> None:
        self.record = read_record(conn, p)
        self.config, self.payload_schema = self.record.config, dict(self.record.payload_schema)
        self.keys = [entry["key"] for entry in self.record.shard_keys]
        key_of = {sid: entry["key"] for entry in self.record.shard_keys for sid in entry["shard_ids"]}
        self.reader = choose_reader()  # before anything is touched: without an engine, nothing can be read
        self.shards = ArchiveShards(conn.repository(p.repository), self.record, scratch)
        self.scratch = scratch
        self.streams = [(f"shard {sid}", key_of.get(sid)) for sid in self.shards.shard_ids()]
        self._lock = threading.Lock()
        self._open: dict[str, ShardPages] = {}

    def count(self) -> int:
        return self.record.points_count

    def read(self, stream: Stream, offset: Any, limit: int) -> tuple[list[dict], Any]:
        return self._pages(stream.name).scroll(offset, limit)

    def _pages(self, name: str) -> ShardPages:
        with self._lock:
            if name in self._open:
                return self._open[name]
        shard_id = int(name.split(" ", 1)[1])
        pages = self.reader.open(self.shards.snapshot(shard_id), self.scratch / f"open-{shard_id}")
        with self._lock:
            self._open[name] = pages
        return pages

    def close(self) -> None:
        for pages in self._open.values():
            pages.close()


def read_record(conn: Any, p: CopyCollection) -> CollectionRecord:
    repo = conn.repository(p.repository)
    return read_collection(repo, p.backup, p.set_id, p.source_collection, "copy from", "copying from")
