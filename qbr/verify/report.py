"""What verify read and what it found: plain, frozen data, no I/O.

The scan of an archive (ArchiveScan, ShardScan) is a fact before any judgement; the checks
(Finding, SetCheck, RestoreCheck) and the VerifyReport are what the judging and the run make of
those facts, and what qbr.render.verify renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ShardScan:
    """What one shard folder of an archive held (the archive root, for a shard snapshot)."""

    segments: bool = False  # the shard holds segments/ (where Qdrant keeps its points)
    points: int | None = None  # points counted by the point counter
    count_error: str | None = None  # why the point counter could not count them


@dataclass(frozen=True)
class ArchiveScan:
    """Facts about one stored archive as read, before any judgement against a set record."""

    key: str
    found: bool = True
    size: int = 0
    sha256: str = ""
    read_error: str | None = None
    deep: bool = False
    tar_error: str | None = None
    entries: frozenset[str] = frozenset()  # member paths up to two levels deep, parents implied
    unsafe: tuple[str, ...] = ()  # member names that would escape a folder when unpacked
    shards: dict[int | None, ShardScan] = field(default_factory=dict)  # None: the archive root
    counter: str | None = None  # who counted the points ("Qdrant's engine"); None: nobody could
    method: str = ""  # how they were counted, as a finding says it ("counted by Qdrant's engine")
    # An encrypted archive read deep: size and sha256 above are the stored object's, these the
    # decrypted snapshot's.
    plain_size: int | None = None
    plain_sha256: str | None = None
    stored_blake3: str | None = None  # an encrypted archive: the stored object's BLAKE3


@dataclass(frozen=True)
class Finding:
    """One problem, naming everything needed to find it: backup, set, collection, archive."""

    repository: str
    backup: str
    set_id: str
    collection: str | None
    archive: str | None
    problem: str

    def line(self) -> str:
        where = f"backup {self.backup}, set {self.set_id}"
        if self.collection is not None:
            where += f", collection {self.collection}"
        if self.archive is not None:
            where += f", archive {self.archive}"
        return f"{where}: {self.problem}"


@dataclass(frozen=True)
class SetCheck:
    repository: str
    backup: str
    set_id: str
    archives: int
    findings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class RestoreCheck:
    """One collection of a backup's newest set, restored into a temporary collection and counted."""

    backup: str
    set_id: str
    collection: str
    cluster: str
    temporary: str
    expected: int
    points: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.points == self.expected


@dataclass(frozen=True)
class VerifyReport:
    deep: bool
    sets: tuple[SetCheck, ...] = ()
    archives: int = 0
    bytes_read: int = 0
    uncounted: int = 0  # archives holding segments whose points were not counted (no point counter)
    restore_cluster: str | None = None
    restores: tuple[RestoreCheck, ...] = ()
    notes: tuple[str, ...] = ()
    # Who can read the repositories: a folder or file loosened beyond what qbr gives it (each a
    # problem), and S3 buckets open to the public where qbr may read their settings (warnings).
    exposures: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def problems(self) -> int:
        return sum(len(s.findings) for s in self.sets) + sum(1 for r in self.restores if not r.ok) + len(self.exposures)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0
