"""Where the state file lives, and its lock.

The state is written atomically (local: temp + fsync + rename; S3: conditional PUT on the etag
read), so two writers can never both win. The lock is a second object beside it (`qbr.locks`
says how locks are taken, renewed, judged dead and released).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from qbr import faultpoints
from qbr.errors import NotFoundError, StateError
from qbr.locks import Lock, LockInfo, LockTarget, lease_duration
from qbr.locks import force_unlock as force_unlock_targets
from qbr.manifest import StateLocation
from qbr.repository import open_local_repository, open_s3_repository
from qbr.repository.base import PreconditionFailed, Repository
from qbr.state import JOURNAL_LIMIT, State

__all__ = ["LockInfo", "StateLock", "StateStore", "force_unlock", "lease_duration", "read_lock", "read_lock_object"]


def _store_for(location: StateLocation) -> tuple[Repository, str]:
    if location.kind == "s3":
        from qbr.repository.protection import protect

        repo = protect(open_s3_repository(
            location.bucket or "", prefix="", endpoint_url=location.endpoint_url, region=location.region,
            **location.s3.client_settings(),
        ), location)
        return repo, location.key or "qbr/state.json"
    assert location.path is not None
    path = Path(location.path)
    return open_local_repository(path.parent, file_mode=0o600), path.name  # state and lock: owner-only


class StateStore:
    """Reads and conditionally writes the state object; also where the lock lives."""

    def __init__(self, location: StateLocation) -> None:
        self.location = location
        self.repo, self.key = _store_for(location)
        self.lock_key = self.key + ".lock"
        self._etag: str | None = None
        self._write_lock = threading.Lock()

    def describe(self) -> str:
        return self.location.describe()

    def read(self) -> State:
        """The current state (empty when there is none yet); remembers its etag for write()."""
        try:
            raw, info = self.repo.get_with_info(self.key)
        except NotFoundError:
            self._etag = None
            return State()
        self._etag = info.etag
        if not raw.strip():
            raise StateError(f"the state file {self.describe()} is empty; restore it from a copy or delete it")
        return State.from_json(raw, self.describe())

    def write(self, state: State) -> None:
        """Persist `state` with serial + 1, only if nobody else wrote since we read."""
        with self._write_lock:
            if state.lineage is None:
                state.lineage = str(uuid.uuid4())
            state.serial += 1
            state.journal = state.journal[-JOURNAL_LIMIT:]
            faultpoints.reached("state.before_write")
            try:
                info = self.repo.put_bytes(
                    self.key,
                    state.to_json(),
                    if_none_match=self._etag is None,
                    if_match=self._etag,
                )
            except PreconditionFailed:
                written = self._landed_anyway(state)
                if written is not None:
                    self._etag = written
                    return
                state.serial -= 1
                raise StateError(
                    f"the state file {self.describe()} was changed by someone else during this run; "
                    "run qbr plan again"
                ) from None
            self._etag = info.etag
            self._restrict_mode()
            faultpoints.reached("state.written")

    def _landed_anyway(self, state: State) -> str | None:
        """A conditional PUT whose answer was lost is retried and then 'fails' against itself;
        if the stored bytes are exactly ours, the write did land: return its etag."""
        try:
            raw, info = self.repo.get_with_info(self.key)
        except NotFoundError:
            return None
        return info.etag if raw == state.to_json() else None

    def discard_unfinished_writes(self) -> None:
        """Remove the temp files a killed run left beside a local state file (a local write dies
        between its temp file and the rename, and nothing else would ever remove them). Call it
        holding the lock: state writes happen only under it, so every state temp file is stale;
        a lock write is a few bytes, so a lock temp file older than the lease is stale too. On S3
        every write is one PUT: nothing half-written stays behind."""
        if self.location.kind != "path" or self.location.path is None:
            return
        from qbr.repository.local import TEMP_PREFIX

        cutoff = time.time() - lease_duration().total_seconds()
        try:
            entries = list(os.scandir(Path(self.location.path).parent))
        except OSError:
            return
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            target = entry.name[len(TEMP_PREFIX) :].partition(".")[2]
            try:
                if target == self.key or (target == self.lock_key and entry.stat().st_mtime < cutoff):
                    os.unlink(entry.path)
            except OSError:
                pass

    def _restrict_mode(self) -> None:
        if self.location.kind == "path" and self.location.path is not None:
            try:
                os.chmod(self.location.path, 0o600)
            except OSError:
                pass


# ---------------------------------------------------------------- the state's lock


def state_lock_target(store: StateStore) -> LockTarget:
    """The state's lock: `<state key>.lock` beside the state; first among an apply's locks."""
    return LockTarget(store.repo, store.lock_key, "the state lock", f"the state {store.describe()}", (0, store.describe()),
                      locking=store.location.s3.locking, setting="state.s3")


class StateLock(Lock):
    """The state's lock alone (an apply takes it together with its repositories' locks, as a LockSet)."""

    def __init__(
        self,
        store: StateStore,
        operation: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        super().__init__(state_lock_target(store), operation, clock=clock, warn=warn)
        self.store = store


def read_lock_object(store: StateStore) -> tuple[LockInfo | None, str | None] | None:
    """The state's lock as stored, with its etag (LockInfo None: unreadable), or None when unlocked."""
    current = state_lock_target(store).read()
    return (current[0], current[1]) if current is not None else None


def read_lock(store: StateStore) -> LockInfo | None:
    current = read_lock_object(store)
    return current[0] if current is not None else None


def force_unlock(store: StateStore, lock_id: str) -> LockInfo:
    """Remove the state's lock if its ID matches (so a stale ID cannot break a newer holder's lock)."""
    return force_unlock_targets([state_lock_target(store)], lock_id)[0][1]
