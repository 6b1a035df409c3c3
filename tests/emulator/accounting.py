"""Request accounting for one node: every request with its route, status and the body bytes it
moved, so tests can say "two recovers were sent" or "the snapshot was downloaded once, whole".

Routes are the emulator's templates, e.g. `/collections/{collection}/snapshots/{snapshot}`
(ROUTE_* below); `kind` marks snapshot downloads ("download") and uploads ("upload").
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field

ROUTE_COLLECTION_SNAPSHOTS = "/collections/{collection}/snapshots"
ROUTE_COLLECTION_SNAPSHOT = "/collections/{collection}/snapshots/{snapshot}"
ROUTE_COLLECTION_RECOVER = "/collections/{collection}/snapshots/recover"
ROUTE_COLLECTION_UPLOAD = "/collections/{collection}/snapshots/upload"
ROUTE_SHARD_SNAPSHOTS = "/collections/{collection}/shards/{shard_id}/snapshots"
ROUTE_SHARD_SNAPSHOT = "/collections/{collection}/shards/{shard_id}/snapshots/{snapshot}"
ROUTE_SHARD_RECOVER = "/collections/{collection}/shards/{shard_id}/snapshots/recover"
ROUTE_SHARD_UPLOAD = "/collections/{collection}/shards/{shard_id}/snapshots/upload"
ROUTE_SHARD_STREAM = "/collections/{collection}/shards/{shard_id}/snapshot"
ROUTE_FULL_SNAPSHOTS = "/snapshots"
ROUTE_FULL_SNAPSHOT = "/snapshots/{snapshot}"


@dataclass
class Traffic:
    """One request as the node saw it. `sent` grows while a body streams out."""

    method: str
    path: str
    query: dict[str, str]
    route: str | None = None  # None: no such route (404)
    kind: str | None = None  # "download", "upload" or None
    status: int | None = None  # None: no status line was sent (reset, or still running)
    received: int = 0  # request body bytes read (multipart framing included)
    sent: int = 0  # response body bytes written (chunk framing excluded)
    fault: str | None = None  # the fault that applied: "status", "reset", "latency", "after_work:<how>", ...
    done: bool = False


@dataclass
class TrafficLog:
    records: list[Traffic] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: Traffic) -> Traffic:
        with self._lock:
            self.records.append(record)
        return record

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def select(self, method: str | None = None, route: str | None = None, path: str | None = None,
               kind: str | None = None) -> list[Traffic]:
        """Records matching every given filter: method, exact route template, path regex, kind."""
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            records = list(self.records)
        return [r for r in records
                if (method is None or r.method == method.upper())
                and (route is None or r.route == route)
                and (pattern is None or pattern.search(r.path))
                and (kind is None or r.kind == kind)]

    def count(self, method: str | None = None, route: str | None = None, path: str | None = None) -> int:
        return len(self.select(method, route, path))

    def by_route(self) -> Counter:
        """{(method, route template): requests}; unknown routes count under (method, None)."""
        return Counter((r.method, r.route) for r in self.select())

    def downloaded(self, **filters) -> int:
        """Snapshot bytes this node served (collection, shard, streamed and full downloads)."""
        return sum(r.sent for r in self.select(kind="download", **filters) if r.status == 200)

    def uploaded(self, **filters) -> int:
        """Upload request bytes this node received, whatever the answer."""
        return sum(r.received for r in self.select(kind="upload", **filters))
