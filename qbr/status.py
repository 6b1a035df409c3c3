"""`qbr status`: is every backup within its rpo, what is stored, where restores came from.

Pure: built from observed repositories, the state and `now`; drawing it is `qbr.render.status`. Exit 0
when every backup is within its rpo, 3 when any is late (or has no set), so cron and CI can
alert on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from qbr.durations import format_duration
from qbr.manifest import Manifest
from qbr.records import parse_utc, utc_iso
from qbr.state import State
from qbr.world import ObservedRepository

EXIT_LATE = 3
#: More unfinished multipart uploads than this, older than UPLOAD_AGE, and status recommends
#: letting the store remove them itself (an AbortIncompleteMultipartUpload lifecycle rule).
UPLOADS_PILING_UP = 3
UPLOAD_AGE = timedelta(days=1)


@dataclass(frozen=True)
class BackupStatus:
    backup: str
    repository: str
    rpo: str
    newest_set: str | None
    age: str | None
    late: bool
    sets: int
    total_bytes: int
    unique_bytes: int
    collections: tuple[str, ...]
    # A dedup repository: what the distinct chunks (and any archives stored whole) of these sets
    # take in the repository, and unique_bytes / that (dedup and compression together).
    stored_bytes: int | None = None
    dedup_ratio: float | None = None
    # S3 Object Lock: (set id, retained until, for how long yet) of each set still protected.
    protected: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class RestoreTarget:
    collection: str
    cluster: str
    backup: str
    set_id: str
    source_collection: str
    restored_at: str | None
    points_count: int | None
    incomplete: bool = False
    points_check_failed: str | None = None  # the restore's count did not match its set (qbr does not retry it)


@dataclass(frozen=True)
class StatusReport:
    now: str
    backups: tuple[BackupStatus, ...] = ()
    restores: dict[str, tuple[RestoreTarget, ...]] = field(default_factory=dict)
    recommendations: tuple[str, ...] = ()  # things to set up, one sentence each (never affect the exit code)

    @property
    def exit_code(self) -> int:
        return EXIT_LATE if any(b.late for b in self.backups) else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def build_status(manifest: Manifest, repositories: dict[str, ObservedRepository], state: State, now: datetime) -> StatusReport:
    backups = []
    for backup in manifest.backups.values():
        repo = repositories[backup.repository]
        sets = repo.sets_of(backup.name)
        newest = sets[0] if sets else None
        age = now - newest.created_at if newest else None
        sizes: dict[str, int] = {}
        total = 0
        for record in sets:
            for collection in record.collections.values():
                for archive in collection.archives:
                    total += archive.size
                    sizes[archive.key] = archive.size
        backups.append(
            BackupStatus(
                backup=backup.name,
                repository=backup.repository,
                rpo=format_duration(backup.rpo),
                newest_set=newest.set_id if newest else None,
                age=format_duration(age) if age is not None else None,
                late=age is None or age >= backup.rpo,
                sets=len(sets),
                total_bytes=total,
                unique_bytes=sum(sizes.values()),
                collections=tuple(sorted(newest.collections)) if newest else (),
                **dedup_sizes(repo, sizes),
                protected=protection(repo, backup.name, now),
            )
        )
    restores = {}
    for restore in manifest.restores.values():
        targets = state.restores.get(restore.name, {})
        restores[restore.name] = tuple(
            RestoreTarget(
                collection=name,
                cluster=str(entry.get("cluster", restore.to)),
                backup=str(entry.get("backup", restore.from_backup)),
                set_id=str(entry.get("set_id")),
                source_collection=str(entry.get("source_collection")),
                restored_at=entry.get("restored_at"),
                points_count=entry.get("points_count"),
                incomplete=bool(entry.get("incomplete")),
                points_check_failed=entry.get("points_check_failed"),
            )
            for name, entry in sorted(targets.items())
        )
    return StatusReport(now=utc_iso(now), backups=tuple(backups), restores=restores,
                        recommendations=lifecycle_recommendations(repositories, now))


def protection(repo: ObservedRepository, backup: str, now: datetime) -> tuple[tuple[str, str, str], ...]:
    """The sets of `backup` whose record S3 Object Lock still retains: (set id, until, time left)."""
    from qbr.records import set_key

    found = []
    for record in repo.sets_of(backup):
        until = repo.locked_until.get(set_key(backup, record.set_id))
        if until is not None and parse_utc(until) > now:
            found.append((record.set_id, until, format_duration(parse_utc(until) - now)))
    return tuple(found)


def dedup_sizes(repo: ObservedRepository, sizes: dict[str, int]) -> dict[str, Any]:
    """stored_bytes and dedup_ratio of archives `sizes` (key -> logical size) in a dedup repository."""
    census = repo.chunks
    if census is None:
        return {}
    chunk_sizes = {c: n for o in census.index for c, n in o.chunks.items()}
    chunk_sizes.update({c: n for c, (n, _) in census.unindexed.items()})
    ids: set[str] = set()
    whole = 0
    for key, size in sizes.items():
        if key in census.lists:
            ids.update(census.lists[key])
        else:
            whole += size
    stored = whole + sum(chunk_sizes.get(c, 0) for c in ids)
    logical = sum(sizes.values())
    return {"stored_bytes": stored, "dedup_ratio": round(logical / stored, 2) if stored else None}


def lifecycle_recommendations(repositories: dict[str, ObservedRepository], now: datetime) -> tuple[str, ...]:
    """An AbortIncompleteMultipartUpload lifecycle rule, for each S3 repository whose store cannot
    list or abort unfinished uploads, or where more than UPLOADS_PILING_UP are older than a day
    (qbr apply aborts them past its grace period, but not when it does not run)."""
    found = []
    for name, repo in sorted(repositories.items()):
        if not repo.description.startswith("s3://"):
            continue  # a folder's unfinished writes are temp files apply removes
        found += [f"repository {name}: {gap}" for gap in repo.store_gaps]
        old = [p for p in repo.pending_uploads if now - parse_utc(p.initiated) > UPLOAD_AGE]
        if len(old) > UPLOADS_PILING_UP:
            bucket = repo.description.removeprefix("s3://").split("/")[0]
            found.append(
                f"repository {name}: {len(old)} unfinished multipart uploads are older than a day (qbr apply aborts "
                f"them, but they pile up while it does not run); add an AbortIncompleteMultipartUpload lifecycle rule "
                f"to bucket {bucket} (e.g. after 1 day) so the store removes them itself"
            )
    return tuple(found)
