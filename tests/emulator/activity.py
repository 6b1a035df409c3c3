"""What a node is busy with: snapshot creations and recoveries as `/telemetry` counts them, and the
hooks and latencies tests use to act in the middle of one (a write landing while a snapshot is
made, a look at the cluster while a recover runs)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

Hook = Callable[..., Any]


@dataclass
class Hooks:
    """Callbacks run at one moment of the work; each for its next `times` occasions (None: always)."""

    entries: list[list] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, callback: Hook, times: int | None = 1) -> None:
        with self._lock:
            self.entries.append([callback, times])

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def fire(self, *args: Any) -> None:
        """Run the due callbacks outside any lock, so they may call the node over HTTP."""
        with self._lock:
            due = []
            for entry in list(self.entries):
                due.append(entry[0])
                if entry[1] is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self.entries.remove(entry)
        for callback in due:
            callback(*args)


@dataclass
class SnapshotCounters:
    """CollectionSnapshotTelemetry of one collection (toc/telemetry.rs)."""

    running_snapshots: int = 0
    running_snapshot_recovery: int = 0
    total_snapshot_creations: int = 0


class Activity:
    """Per-node telemetry counters, hooks and latencies around snapshot creation and recovery."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshots: dict[str, SnapshotCounters] = {}
        self.during_snapshot = Hooks()
        self.during_recover = Hooks()
        self.snapshot_latency: float = 0.0
        self.recover_latency: float | list[float] = 0.0

    def _counters(self, collection: str) -> SnapshotCounters:
        return self.snapshots.setdefault(collection, SnapshotCounters())

    @contextmanager
    def creating(self, collection: str) -> Iterator[None]:
        """A collection snapshot creation: counted in total when it starts, running while it runs."""
        with self.lock:
            counters = self._counters(collection)
            counters.total_snapshot_creations += 1
            counters.running_snapshots += 1
        try:
            yield
        finally:
            with self.lock:
                counters.running_snapshots -= 1

    @contextmanager
    def recovering(self, collection: str) -> Iterator[None]:
        with self.lock:
            counters = self._counters(collection)
            counters.running_snapshot_recovery += 1
        try:
            yield
        finally:
            with self.lock:
                counters.running_snapshot_recovery -= 1

    def telemetry(self) -> list[dict]:
        with self.lock:
            return [{"id": name, "running_snapshots": c.running_snapshots,
                     "running_snapshot_recovery": c.running_snapshot_recovery,
                     "total_snapshot_creations": c.total_snapshot_creations}
                    for name, c in self.snapshots.items()]

    def next_recover_latency(self) -> float:
        """A float applies to every recover; a list gives one value per recover, in order."""
        with self.lock:
            latency = self.recover_latency
            if isinstance(latency, list):
                return float(latency.pop(0)) if latency else 0.0
            return float(latency or 0.0)

    def after_snapshot_view(self, node: Any, collection: str, shard_id: int | None) -> None:
        """The point-in-time view is taken; what happens now is not in the snapshot."""
        self.during_snapshot.fire(node, collection, shard_id)
        if self.snapshot_latency:
            time.sleep(self.snapshot_latency)

    def while_recovering(self, node: Any, collection: str, shard_id: int | None) -> None:
        """Replicas are in their recovering state and the old data is still there."""
        latency = self.next_recover_latency()  # taken first: a hook may start the next recover
        self.during_recover.fire(node, collection, shard_id)
        if latency:
            time.sleep(latency)
