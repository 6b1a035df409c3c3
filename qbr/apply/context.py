"""What an action handler may use of the run it belongs to: a small context, not the applier.

Handlers receive an `ActionContext`. The applier is one implementation (it journals into the
state file); `verify --restore-test` passes a scratch one that records nothing. Keeping this
surface small is what lets a handler be read, and tested, on its own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from qbr.connections import Connections
from qbr.transfer import Progress


class ActionContext(Protocol):
    connections: Connections
    progress: Progress

    def now(self) -> datetime:
        """The run's clock."""

    def output_of(self, action_id: str) -> dict[str, Any]:
        """What an earlier action of this run returned (a commit reads its copies' archives)."""

    def snapshot_slot(self, node: str) -> AbstractContextManager[Any]:
        """Held while a node makes a snapshot: bounds concurrent creations per node."""

    def snapshot_lock(self, node: str, collection: str, shard_id: int | None) -> AbstractContextManager[Any]:
        """Held from create to delete of one (node, collection, shard) snapshot: Qdrant names
        snapshots to the second, and a second create in the same second overwrites the first."""

    def remember_node_snapshot(self, entry: dict[str, Any], replacing: dict[str, Any] | None = None) -> None:
        """Record, durably, a snapshot qbr is making or made on a node (so a killed run's is found)."""

    def forget_node_snapshot(self, entry: dict[str, Any]) -> None:
        """Drop that record once the snapshot is deleted."""

    def restore_started(self, restore: str, target: str, mark: dict[str, Any]) -> None:
        """Record, durably, that a restore into `target` is under way (it may be left incomplete)."""

    def restore_finished(self, restore: str, target: str, provenance: dict[str, Any] | None) -> None:
        """Record where `target`'s data came from; None forgets the under-way mark."""

    def restore_mark(self, restore: str, target: str) -> dict[str, Any] | None:
        """What the state says about `target` of `restore` now."""

    def archive_references(self, repository: str) -> dict[str, str]:
        """Archive key -> the set naming it, read once per run (and again after a set is deleted):
        garbage collection checks every archive against it instead of reading every set each time."""

    def forget_archive_references(self, repository: str) -> None:
        """A set was deleted: the next check reads the set records again."""
