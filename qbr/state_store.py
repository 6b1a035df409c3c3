"""Where the state file lives, and its lock.

The state is written atomically (local: temp + fsync + rename; S3: conditional PUT on the etag
read), so two writers can never both win. The lock is a second object beside it, created only
if absent, carrying a lease that the running apply renews; a lock whose lease ran out may be
taken over.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from qbr import __version__, faultpoints
from qbr.errors import LockError, NotFoundError, QbrError, StateError
from qbr.manifest import StateLocation
from qbr.records import parse_utc, utc_iso
from qbr.repository import open_local_repository, open_s3_repository
from qbr.repository.base import PreconditionFailed, Repository
from qbr.state import JOURNAL_LIMIT, State


def _store_for(location: StateLocation) -> tuple[Repository, str]:
    if location.kind == "s3":
        repo = open_s3_repository(
            location.bucket or "", prefix="", endpoint_url=location.endpoint_url, region=location.region
        )
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


# ---------------------------------------------------------------- locks


def lease_duration() -> timedelta:
    """How long a lock stays valid without renewal (QBR_LOCK_LEASE seconds, default 60)."""
    try:
        return timedelta(seconds=max(1.0, float(os.environ.get("QBR_LOCK_LEASE", "60"))))
    except ValueError:
        return timedelta(seconds=60)


@dataclass(frozen=True)
class LockInfo:
    id: str
    who: str
    host: str
    pid: int
    operation: str
    created: str
    expires: str
    qbr_version: str = __version__

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @staticmethod
    def from_json(raw: bytes) -> "LockInfo | None":
        try:
            data = json.loads(raw)
            return LockInfo(**{k: data[k] for k in ("id", "who", "host", "pid", "operation", "created", "expires")})
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return None

    def holder(self) -> str:
        return f"{self.who}@{self.host} (pid {self.pid}, qbr {self.operation}, since {self.created}, lock ID {self.id})"


def _precise(moment: datetime) -> str:
    """Lease times keep milliseconds: a lease of a second must not expire the moment it is written."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


class StateLock:
    """One apply at a time per state: acquire, renew the lease in the background, release."""

    def __init__(
        self,
        store: StateStore,
        operation: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.store = store
        self.operation = operation
        self.clock = clock
        self.warn = warn
        self.lease = lease_duration()
        self.info: LockInfo | None = None
        self._etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = threading.Event()

    def _new_info(self, lock_id: str | None = None) -> LockInfo:
        now = self.clock()
        return LockInfo(
            id=lock_id or str(uuid.uuid4()),
            who=_whoami(),
            host=socket.gethostname(),
            pid=os.getpid(),
            operation=self.operation,
            created=utc_iso(now) if lock_id is None or self.info is None else self.info.created,
            expires=_precise(now + self.lease),
        )

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to `timeout` seconds; a lock past its lease is taken over."""
        deadline = time.monotonic() + max(0.0, timeout)
        repo, key = self.store.repo, self.store.lock_key
        while True:
            info = self._new_info()
            try:
                written = repo.put_bytes(key, info.to_json(), if_none_match=True)
                self.info, self._etag = info, written.etag
                break
            except PreconditionFailed:
                pass
            held = self._read_current()
            if held is not None and held[0] is not None and held[0].id == info.id:
                # Our write landed but its answer was lost and the retry lost to ourselves.
                self.info, self._etag = info, held[1]
                break
            if held is not None:
                holder, etag = held
                if holder is None or parse_utc(holder.expires) <= self.clock():
                    try:
                        written = repo.put_bytes(key, info.to_json(), if_match=etag)
                    except PreconditionFailed:
                        continue  # somebody else took it over first; look again
                    self.info, self._etag = info, written.etag
                    self.warn(
                        "took over the state lock "
                        + (f"held by {holder.holder()}, whose lease expired at {holder.expires}" if holder else "whose content was unreadable")
                    )
                    break
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"the state {self.store.describe()} is locked by {holder.holder()}; wait for it to finish, "
                        f"or if it is dead run `qbr force-unlock {holder.id}` (or wait until its lease expires at {holder.expires})"
                    )
            elif time.monotonic() >= deadline:
                raise LockError(f"could not take the state lock of {self.store.describe()}; try again")
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())) or 0.05)
        self._start_renewing()

    def _read_current(self) -> tuple[LockInfo | None, str | None] | None:
        return read_lock_object(self.store)

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="qbr-lock-lease", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        interval = max(0.2, self.lease.total_seconds() / 3)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except QbrError as error:
                self.lost.set()
                self.warn(f"could not renew the state lock: {error}")
                return

    def renew(self) -> None:
        assert self.info is not None
        info = self._new_info(self.info.id)
        try:
            written = self.store.repo.put_bytes(self.store.lock_key, info.to_json(), if_match=self._etag)
        except PreconditionFailed:
            raise LockError("the state lock was taken by someone else (its lease had expired); this run stops") from None
        self.info, self._etag = info, written.etag

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self.info is None or self.lost.is_set():
            return
        current = self._read_current()
        if current is not None and current[0] is not None and current[0].id == self.info.id:
            self.store.repo.delete(self.store.lock_key)
        self.info = None

    def __enter__(self) -> "StateLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_lock_object(store: StateStore) -> tuple[LockInfo | None, str | None] | None:
    """The lock as stored, with its etag (LockInfo None: unreadable), or None when unlocked."""
    head = store.repo.head(store.lock_key)
    if head is None:
        return None
    try:
        raw = store.repo.get_bytes(store.lock_key)
    except NotFoundError:
        return None
    return LockInfo.from_json(raw), head.etag


def read_lock(store: StateStore) -> LockInfo | None:
    current = read_lock_object(store)
    return current[0] if current is not None else None


def force_unlock(store: StateStore, lock_id: str) -> LockInfo:
    """Remove the lock if its ID matches (so a stale ID cannot break a newer holder's lock)."""
    current = read_lock(store)
    if current is None:
        raise LockError(f"the state {store.describe()} is not locked; nothing to unlock")
    if current.id != lock_id:
        raise LockError(
            f"the lock on {store.describe()} has ID {current.id}, not {lock_id}; it is held by {current.holder()}"
        )
    store.repo.delete(store.lock_key)
    return current
