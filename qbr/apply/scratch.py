"""An ActionContext that records nothing: for running one action outside an apply
(`qbr verify --restore-test` restores into temporary collections that leave no provenance)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Callable

from qbr.apply.applier import NodeSlots
from qbr.apply.cleanup import read_archive_references
from qbr.connections import Connections
from qbr.transfer import Progress


class ScratchContext:
    def __init__(self, connections: Connections, clock: Callable[[], datetime] | None = None) -> None:
        self.connections = connections
        self.progress = Progress(enabled=False)
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._nodes = NodeSlots()
        self._marks: dict[tuple[str, str], dict[str, Any]] = {}
        self._references: dict[str, dict[str, str]] = {}
        self._references_lock = threading.Lock()

    def now(self) -> datetime:
        return self._clock()

    def output_of(self, action_id: str) -> dict[str, Any]:
        raise KeyError(action_id)  # a lone action depends on nothing

    def snapshot_slot(self, node: str) -> threading.BoundedSemaphore:
        return self._nodes.slot(node)

    def snapshot_lock(self, node: str, collection: str, shard_id: int | None) -> threading.Lock:
        return self._nodes.lock(node, collection, shard_id)

    def remember_node_snapshot(self, entry: dict[str, Any], replacing: dict[str, Any] | None = None) -> None:
        return None

    def forget_node_snapshot(self, entry: dict[str, Any]) -> None:
        return None

    def restore_started(self, restore: str, target: str, mark: dict[str, Any]) -> None:
        self._marks[(restore, target)] = mark

    def restore_finished(self, restore: str, target: str, provenance: dict[str, Any] | None) -> None:
        self._marks.pop((restore, target), None)

    def restore_mark(self, restore: str, target: str) -> dict[str, Any] | None:
        return self._marks.get((restore, target))

    def archive_references(self, repository: str) -> dict[str, str]:
        with self._references_lock:
            if repository not in self._references:
                self._references[repository] = read_archive_references(self.connections.repository(repository))
            return self._references[repository]

    def forget_archive_references(self, repository: str) -> None:
        with self._references_lock:
            self._references.pop(repository, None)
