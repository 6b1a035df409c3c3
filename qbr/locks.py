"""Locks: one apply at a time per state and per repository.

A lock is one small JSON object, created only if absent (a local file linked into place, an S3
PutObject with If-None-Match: *). Its holder renews it in the background (a replace conditional
on the etag it holds) and removes it at the end with a delete conditional on that etag, so it
never removes a lock that someone else took over. Where the locks live:

    the state's lock        <state key>.lock, beside the state
    a repository's lock     <prefix>/locks/exclusive.json, in the repository itself

so two hosts with different state files still meet at the repository they both write. A store
that ignores conditional writes (probed once per process) cannot hold a lock: taking one there is
refused, unless the manifest says `locking: unsafe-single-writer` (then read, then write: best
effort, for a store only one qbr ever runs against). An apply
takes the state's lock, then the lock of every repository it writes, in one fixed order (state
first, then repositories sorted by where they are), so two applies never wait for each other in
a cycle; all of an apply's locks carry one ID, and all are released, in reverse, however the run
ends. `qbr plan` takes none.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from qbr import __version__
from qbr.errors import LockError, NotFoundError, QbrError, RepositoryError
from qbr.manifest import Manifest, RepositoryConfig
from qbr.records import parse_utc, utc_iso
from qbr.repository import conditional_writes_gap, open_s3_repository
from qbr.repository.base import PreconditionFailed, Repository

REPOSITORY_LOCK_KEY = "locks/exclusive.json"
POLL_SECONDS = 0.25


def lease_duration() -> timedelta:
    """How long a lock stays valid without renewal (QBR_LOCK_LEASE seconds, default 60)."""
    try:
        return timedelta(seconds=max(1.0, float(os.environ.get("QBR_LOCK_LEASE", "60"))))
    except ValueError:
        return timedelta(seconds=60)


@dataclass(frozen=True)
class LockInfo:
    """What a lock says: who holds it, since when, and how long its lease lasts (a duration)."""

    id: str
    who: str
    host: str
    pid: int
    operation: str
    created: str
    expires: str  # the holder's own clock: a hint for people and for when to watch, never a verdict
    qbr_version: str = __version__
    lease_seconds: float = 0.0  # 0: written by a qbr that did not say; the reader's own lease applies
    renewal: int = 0  # bumped on every renewal, so a renewed lock never has the same bytes twice

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @staticmethod
    def from_json(raw: bytes) -> "LockInfo | None":
        try:
            data = json.loads(raw)
            info = LockInfo(**{k: data[k] for k in ("id", "who", "host", "pid", "operation", "created", "expires")})
            extra = {"lease_seconds": float(data.get("lease_seconds") or 0), "renewal": int(data.get("renewal") or 0)}
            return LockInfo(**{**asdict(info), **extra})
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return None

    def holder(self) -> str:
        return f"{self.who}@{self.host} (pid {self.pid}, qbr {self.operation}, since {self.created}, lock ID {self.id})"


@dataclass(frozen=True)
class LockTarget:
    """Where one lock lives, and how to name it to people."""

    repo: Repository
    key: str
    name: str  # "the state lock", "the lock of repository s3main"
    where: str  # "the state /srv/qbr/state.json", "the repository s3main (s3://bucket/prod)"
    order: tuple[int, str]  # its place among an apply's locks; equal orders are one lock
    locking: str = "conditional"  # the manifest's s3.locking: or "unsafe-single-writer"
    setting: str = "its s3 block"  # where the manifest sets it, for messages
    repository: str | None = None  # the manifest's name of the repository it lives in (None: the state's)

    def read(self) -> tuple[LockInfo | None, str | None, bytes] | None:
        """(holder, etag, bytes) of exactly one stored version (holder None: unreadable), or None."""
        try:
            raw, info = self.repo.get_with_info(self.key)
        except NotFoundError:
            return None
        return LockInfo.from_json(raw), info.etag, raw


def repository_target(config: RepositoryConfig) -> LockTarget:
    """The lock of a manifest repository, ordered by where the repository is (not by its name,
    which another manifest may spell differently)."""
    from qbr.repository.protection import open_folder, protect

    if config.kind == "s3":
        repo = protect(open_s3_repository(
            config.bucket or "", prefix=config.prefix, endpoint_url=config.endpoint_url, region=config.region, name=config.name,
            **config.s3.client_settings(),
        ), config)
        identity = f"s3 {config.endpoint_url or ''} {config.bucket}/{config.prefix}"
    else:
        assert config.path is not None
        repo = open_folder(config)
        identity = f"path {os.path.realpath(config.path)}"
    where = f"the repository {config.name} ({repo.describe()})"
    return LockTarget(repo, REPOSITORY_LOCK_KEY, f"the lock of repository {config.name}", where, (1, identity),
                      locking=config.s3.locking, setting=f"repositories.{config.name}.s3", repository=config.name)


def lock_targets(manifest: Manifest, state: LockTarget, *, every_repository: bool = False) -> list[LockTarget]:
    """An apply's locks: the state's, and those of the repositories it writes (its backups'; a
    restore reads one of those). force-unlock looks in every repository the manifest names."""
    names = set(manifest.repositories) if every_repository else {b.repository for b in manifest.backups.values()}
    return [state, *(repository_target(manifest.repositories[name]) for name in sorted(names))]


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def _precise(moment: datetime) -> str:
    """Lease times keep milliseconds: a lease of a second must not expire the moment it is written."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Lock:
    """One lock: acquire (waiting, or taking over a dead holder's), renew in the background, release.

    When is a lock dead? When this process has watched it stay byte-for-byte the same (same etag,
    same bytes) for longer than its holder's lease, on this process's monotonic clock. A live
    holder rewrites it every third of a lease, so a live lock never looks unchanged that long,
    whatever anyone's clock says. No two clocks are ever compared: not the holder's wall clock
    against ours (a minute of skew would steal a live lock, or keep a dead one forever), and not
    the store's either, because S3's Date and Last-Modified are whole seconds (with a 1 s lease
    the verdict would be rounding), S3-compatible stores and proxies set Date loosely, and a
    folder on NFS is stamped by the file server's clock while we read ours. Watching needs only
    the etag, which every store already gives for compare-and-swap. The price: a dead holder's
    lock is taken over one lease after this process first saw it (an apply watches all its locks
    from the start, so several dead locks cost one lease, not one each). The holder's `expires`
    is a hint only: when it says the lease ran out, a run whose --lock-timeout is shorter keeps
    watching for up to one lease instead of giving up at once, and stops as soon as it sees the
    lock change.
    """

    def __init__(
        self,
        target: LockTarget,
        operation: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        warn: Callable[[str], None] = lambda message: None,
        lock_id: str | None = None,
        lost: threading.Event | None = None,
    ) -> None:
        self.target = target
        self.operation = operation
        self.clock = clock
        self.warn = warn
        self.lease = lease_duration()
        self.lock_id = lock_id or str(uuid.uuid4())
        self.info: LockInfo | None = None
        self._etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = lost if lost is not None else threading.Event()
        self._lost_here = False
        self._seen: tuple[str | None, bytes] | None = None  # what we watched: (etag, bytes)
        self._seen_since = 0.0  # monotonic time we first saw it so
        self._seen_change = False  # we watched it change: someone is alive
        self._unprotected = False  # the store ignores conditional writes: read, then write
        self._said_watching = False

    # -- watching ---------------------------------------------------------------------------

    def observe(self) -> tuple[LockInfo | None, str | None, bytes] | None:
        """Read the lock; note when its current version was first seen by this process."""
        current = self.target.read()
        seen = (current[1], current[2]) if current is not None else None
        if seen != self._seen:
            self._seen_change = self._seen_change or self._seen_since > 0
            self._seen, self._seen_since = seen, time.monotonic()
        return current

    def _unchanged_for(self) -> float:
        return time.monotonic() - self._seen_since

    def _lease_of(self, holder: LockInfo | None) -> float:
        return holder.lease_seconds if holder is not None and holder.lease_seconds > 0 else self.lease.total_seconds()

    def _worth_watching(self, holder: LockInfo, lease: float) -> bool:
        """Past our timeout: watch on only if its holder's own clock says the lease ran out and
        we have not yet seen anyone renew it (see the class docstring)."""
        if self._seen_change or self._unchanged_for() > lease:
            return False
        try:
            expired = parse_utc(holder.expires) <= self.clock()
        except ValueError:
            expired = True
        if expired and not self._said_watching:
            self._said_watching = True
            self.warn(
                f"{self.target.name} held by {holder.holder()} was not renewed before its lease expired "
                f"(by its holder's clock); watching it for up to {lease:g}s to see whether anyone still renews it"
            )
        return expired

    # -- taking -----------------------------------------------------------------------------

    def _new_info(self) -> LockInfo:
        now = self.clock()
        held = self.info
        return LockInfo(
            id=held.id if held else self.lock_id,
            who=_whoami(),
            host=socket.gethostname(),
            pid=os.getpid(),
            operation=self.operation,
            created=held.created if held else utc_iso(now),
            expires=_precise(now + self.lease),
            lease_seconds=self.lease.total_seconds(),
            renewal=held.renewal + 1 if held else 0,
        )

    def check_store(self) -> None:
        """Refuse a store that ignores conditional writes (probed once per process), unless the
        manifest opts into `locking: unsafe-single-writer`: then the lock is read, then written."""
        gap = conditional_writes_gap(self.target.repo, self.target.key)
        if gap is None or self._unprotected:
            return
        if self.target.locking != "unsafe-single-writer":
            raise RepositoryError(
                f"{self.target.where} {gap}, so qbr cannot lock it; use a store that honours them, or set "
                f"`locking: unsafe-single-writer` in {self.target.setting} if only one qbr ever runs against it"
            )
        self._unprotected = True
        self.warn(
            f"{self.target.where} {gap}: {self.target.name} is taken best effort (locking: unsafe-single-writer), "
            "so two qbr runs against it at once could both take it"
        )

    def _put(self, data: bytes, **condition: Any) -> str | None:
        """A conditional write; one whose answer was lost is retried by the client and then
        'fails' against itself: if the stored bytes are exactly ours, it landed. On a store that
        ignores the condition (unsafe-single-writer), it is checked by a read just before."""
        if self._unprotected:
            current = self.target.read()
            if condition.get("if_none_match") and current is not None:
                raise PreconditionFailed(f"{self.target.key} exists")
            if condition.get("if_match") is not None and (current is None or current[1] != condition["if_match"]):
                raise PreconditionFailed(f"{self.target.key} changed")
            condition = {}  # checked here: a store may reject what it does not honour
        try:
            return self.target.repo.put_bytes(self.target.key, data, **condition).etag
        except PreconditionFailed:
            current = self.target.read()
            if current is not None and current[2] == data:
                return current[1]
            raise

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to `timeout` seconds; a dead holder's lock is taken over."""
        deadline = time.monotonic() + max(0.0, timeout)
        vanished = 0
        self.check_store()
        while True:
            info = self._new_info()
            data = info.to_json()
            try:
                self.info, self._etag = info, self._put(data, if_none_match=True)
                break
            except PreconditionFailed:
                pass
            current = self.observe()
            if current is None:  # released between our create and our read: try again
                vanished += 1
                if vanished > 3 and time.monotonic() >= deadline:
                    raise LockError(f"could not take {self.target.name} of {self.target.where}; try again")
                continue
            holder, etag, _ = current
            lease = self._lease_of(holder)
            if etag is not None and (holder is None or self._unchanged_for() > lease):
                try:
                    self.info, self._etag = info, self._put(data, if_match=etag)
                except PreconditionFailed:
                    continue  # renewed, or somebody else took it first: look again
                self.warn(
                    f"took over {self.target.name} held by {holder.holder()}: its lease expired "
                    f"(nobody renewed it for {self._unchanged_for():.1f}s; its lease is {lease:g}s)"
                    if holder is not None
                    else f"took over {self.target.name} of {self.target.where}, whose content was unreadable"
                )
                break
            if time.monotonic() >= deadline and (holder is None or not self._worth_watching(holder, lease)):
                raise LockError(self._held_message(holder))
            pause, left = min(POLL_SECONDS, lease / 4), deadline - time.monotonic()
            time.sleep(min(pause, left) if left > 0 else pause)
        self._start_renewing()

    def _held_message(self, holder: LockInfo | None) -> str:
        if holder is None:
            return f"{self.target.where} holds a lock qbr cannot read or replace; remove {self.target.key} there by hand"
        return (
            f"{self.target.where} is locked by {holder.holder()}; wait for it to finish (--lock-timeout waits), "
            f"or if it is dead run `qbr force-unlock {holder.id}`"
        )

    # -- holding ----------------------------------------------------------------------------

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
                self._lost_here = True
                self.lost.set()
                self.warn(f"could not renew {self.target.name}: {error}")
                return

    def renew(self) -> None:
        assert self.info is not None
        info = self._new_info()
        try:
            etag = self._put(info.to_json(), if_match=self._etag)
        except PreconditionFailed:
            raise LockError(f"{self.target.name} was taken by someone else (its lease had expired); this run stops") from None
        self.info, self._etag = info, etag

    def release(self) -> None:
        """Remove the lock if it is still the one we hold (a delete conditional on our etag)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self.info is None or self._lost_here:
            return
        held, self.info = self.info, None
        try:
            if self._unprotected and (self.target.read() or (None, None))[1] != self._etag:
                raise PreconditionFailed("taken over")  # the store would ignore If-Match: look first
            self.target.repo.delete(self.target.key, if_match=self._etag)
        except PreconditionFailed:
            pass  # not ours any more: someone took it over or removed it; theirs stays
        except QbrError as error:
            self.warn(
                f"could not remove {self.target.name} ({error}); the next apply takes it over once its lease "
                f"has passed, or run `qbr force-unlock {held.id}`"
            )

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class LockSet:
    """All the locks one run needs, under one ID, taken in a fixed order, released in reverse."""

    def __init__(self, targets: Iterable[LockTarget], operation: str, *, warn: Callable[[str], None] = lambda m: None) -> None:
        unique = {target.order: target for target in targets}
        self.id = str(uuid.uuid4())
        self.lost = threading.Event()  # set when any of them is lost: the run stops
        self.failed: LockTarget | None = None  # after acquire() raised: the target whose store or lock refused
        self.locks = [
            Lock(unique[order], operation, warn=warn, lock_id=self.id, lost=self.lost) for order in sorted(unique)
        ]

    def acquire(self, timeout: float) -> None:
        """Take them all or none."""
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            for lock in self.locks:  # a store that cannot hold a lock is refused before any is taken
                self.failed = lock.target
                lock.check_store()
            for lock in self.locks:  # start watching every lock now: dead ones cost one lease in all
                self.failed = lock.target
                lock.observe()
            for lock in self.locks:
                self.failed = lock.target
                lock.acquire(max(0.0, deadline - time.monotonic()))
            self.failed = None
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()

    def __enter__(self) -> "LockSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def force_unlock(targets: Iterable[LockTarget], lock_id: str) -> list[tuple[LockTarget, LockInfo]]:
    """Remove every lock among `targets` whose ID is `lock_id` (a stale ID cannot break a newer
    holder's lock: each is removed only if it is still the version read)."""
    removed: list[tuple[LockTarget, LockInfo]] = []
    others: list[str] = []
    free: list[str] = []
    failed: QbrError | None = None
    for target in targets:
        try:
            current = target.read()
        except QbrError as error:
            failed = failed or error
            continue
        if current is None:
            free.append(target.where)
            continue
        holder, etag, _ = current
        if holder is None or holder.id != lock_id:
            others.append(f"{target.where} has ID {holder.id}, held by {holder.holder()}" if holder else f"{target.where} holds a lock qbr cannot read")
            continue
        try:
            target.repo.delete(target.key, if_match=etag)
        except PreconditionFailed:
            if target.read() is None:  # gone all the same (our delete landed and its answer was lost)
                removed.append((target, holder))
                continue
            raise LockError(
                f"{target.name} changed while it was being removed (renewed, or taken by another run); "
                "nothing was removed there: run qbr force-unlock again with the ID its error names"
            ) from None
        removed.append((target, holder))
    if removed:
        return removed
    if others:
        raise LockError(f"no lock has ID {lock_id}: " + "; ".join(others))
    if failed is not None:
        raise failed
    raise LockError(f"{' and '.join(free)} {'is' if len(free) == 1 else 'are'} not locked; nothing to unlock")
